"""Per-entry learning rates: new entries of a widened tensor re-warm on their own schedule.

After a growth event, old and new entries share one Parameter, but the new entries follow a
re-warmup (Yu et al., "SPARKLING", arXiv 2602.02472). Their lr rises linearly from `eta_e`,
the group's lr at the first step after growth, to `peak_factor * eta_e` over `warmup_steps`.
Then it follows a half-cosine down to `min_lr` at the end of training. Old entries keep
following the group's lr, which the user's own scheduler keeps driving.

Mechanism: `EntryLR` registers an optimizer step pre-hook and post-hook. Before each step it
saves the values of the entries whose lr differs from their group's lr. After the step it
rescales their update:

    p[new] = before + (p[new] - before) * (lr_new / lr_group)

This equals the update the optimizer would have made with `lr_new`, provided the whole
update of an entry, weight decay included, is proportional to `lr` for fixed gradients and
state. That holds for SGD (with momentum, Nesterov or L2 weight decay), Adam, Adamax, NAdam,
RAdam, RMSprop, Adagrad, Adadelta, torch.optim.Muon, Lion and Muon-like optimizers. It holds
for AdamW too, because its decoupled decay `p *= 1 - lr * wd` is proportional to lr, so new
entries decay at their own lr. The state of these optimizers does not depend on lr, so it is
the same as at the new entries' lr.

Exceptions:
- LBFGS, ASGD and Rprop are not proportional to lr, so `prepare_growth` rejects a re-warmup
  event with them. `InheritLR` events are fine.
- Adafactor caps its relative step at `min(lr, 1/sqrt(step))`. The rescaling is exact while
  both lrs are below the cap, and a warning is logged once when one is above it.
- A group whose lr is 0 at a step gives its new entries no update at that step, because
  there is no update to rescale. A warning is logged once.

Labels: each grown parameter gets an int8 tensor of its shape, 0 for original entries and
`k` for entries added by growth event `k`. A parameter grown twice keeps the labels of the
first event at the entries' new positions. Everything is keyed by fully qualified name, and
`resolve(name)` returns the live Parameter, because growth replaces Parameter objects.

Cost: per grown parameter, 1 byte per entry for labels and 8 bytes per re-warming entry for
its flat index. Per step, two gathers and one scatter over the re-warming entries only. When
no event has a re-warmup, the hooks return at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import TypeAdapter

from sparkling_ir.compile.remap import ParamRemap
from sparkling_ir.errors import GrowthError
from sparkling_ir.schedule.ir import InheritLR, LRPolicy, RewarmupLR

logger = logging.getLogger(__name__)

LABEL_DTYPE = torch.int8
MAX_EVENT_ID = 127  # largest label that fits in an int8

# Optimizers whose update is not proportional to lr, with the reason.
_NOT_PROPORTIONAL: dict[type[torch.optim.Optimizer], str] = {
    torch.optim.LBFGS: "LBFGS runs a line search over all parameters at once",
    torch.optim.ASGD: (
        "ASGD's step size lr / (1 + lambd * lr * step) ** alpha is not proportional to lr, "
        "and it averages the parameters inside the step"
    ),
    torch.optim.Rprop: "Rprop uses lr only as the initial per-entry step size",
}

_LR_POLICY: TypeAdapter[LRPolicy] = TypeAdapter(LRPolicy)


def rewarmup_lr(
    eta_e: float,
    steps_since_growth: int,
    warmup_steps: int,
    peak_factor: float,
    decay_steps: int,
    min_lr: float,
) -> float:
    """Return the lr of new entries `steps_since_growth` optimizer steps after a growth event.

    Linear from `eta_e` (step 0) to `peak_factor * eta_e` at `warmup_steps`, then a
    half-cosine from that peak down to `min_lr` over `decay_steps` more steps, and `min_lr`
    from then on. With `warmup_steps = 0` the curve starts at the peak; with
    `decay_steps = 0` it drops to `min_lr` when the ramp ends.
    """
    _check_rewarmup_args(eta_e, steps_since_growth, warmup_steps, peak_factor, decay_steps, min_lr)
    peak = peak_factor * eta_e
    if steps_since_growth < warmup_steps:
        return eta_e + (peak - eta_e) * steps_since_growth / warmup_steps

    decayed = steps_since_growth - warmup_steps
    if decayed >= decay_steps:
        return min_lr
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * decayed / decay_steps))


def _check_rewarmup_args(
    eta_e: float,
    steps_since_growth: int,
    warmup_steps: int,
    peak_factor: float,
    decay_steps: int,
    min_lr: float,
) -> None:
    for label, value in (
        ("steps_since_growth", steps_since_growth),
        ("warmup_steps", warmup_steps),
        ("decay_steps", decay_steps),
    ):
        if value < 0:
            raise ValueError(f"{label} must be >= 0, got {value}")
    if not (eta_e >= 0 and min_lr >= 0 and peak_factor > 0):
        raise ValueError(
            f"expected eta_e >= 0, min_lr >= 0 and peak_factor > 0, "
            f"got eta_e={eta_e}, min_lr={min_lr}, peak_factor={peak_factor}"
        )


# ---- bookkeeping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    event_id: int
    start_step: int  # optimizer steps completed when the event fired
    policy: LRPolicy
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Tracked:
    """Cache entry of one labelled name, rebuilt when its live Parameter changes."""

    param: torch.nn.Parameter
    group_index: int | None  # None: this optimizer does not train the parameter
    indices: dict[int, torch.Tensor]  # event id -> flat row-major indices of re-warming entries


@dataclass(frozen=True)
class _Snapshot:
    param: torch.nn.Parameter
    indices: torch.Tensor
    before: torch.Tensor
    ratio: float  # lr_new / lr_group


class LabelSwap:
    """The labels of one growth event, computed and not yet installed.

    `commit()` installs them and records the event. `rollback()`, after `commit()`,
    restores the previous labels and removes the event.
    """

    def __init__(self, owner: EntryLR, event: _Event, labels: dict[str, torch.Tensor]) -> None:
        self._owner = owner
        self._event = event
        self._labels = labels
        self._previous: dict[str, torch.Tensor | None] | None = None

    @property
    def committed(self) -> bool:
        return self._previous is not None

    def commit(self) -> None:
        if self._previous is not None:
            raise RuntimeError("LabelSwap.commit() called twice")
        self._previous = self._owner._install(self._event, self._labels)

    def rollback(self) -> None:
        if self._previous is None:
            raise RuntimeError("LabelSwap.rollback() called before commit()")
        self._owner._uninstall(self._event, self._previous)
        self._previous = None


# ---- the hooks ------------------------------------------------------------------------------


class EntryLR:
    """Gives the entries added by growth events their own lr inside shared Parameters.

    `resolve(name)` must return the model's current Parameter under `name`. `total_steps`
    is the length of training in optimizer steps, where every re-warmup reaches `min_lr`
    (one value, or one per param group). `completed_steps` is the number of optimizer steps
    taken before this object was created (non-zero when resuming).

    Steps are counted in the optimizer's step hooks, so a step skipped by a gradient scaler
    does not count. Growth events are added with `prepare_growth(...).commit()`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        resolve: Callable[[str], torch.nn.Parameter],
        *,
        total_steps: int,
        min_lr: float | Sequence[float],
        completed_steps: int = 0,
    ) -> None:
        if total_steps <= 0 or completed_steps < 0:
            raise ValueError(
                f"expected total_steps > 0 and completed_steps >= 0, "
                f"got {total_steps} and {completed_steps}"
            )
        self._optimizer = optimizer
        self._resolve = resolve
        self.total_steps = total_steps
        self._min_lr = _check_min_lr(min_lr, len(optimizer.param_groups))
        self._completed_steps = completed_steps
        self._labels: dict[str, torch.Tensor] = {}
        self._events: list[_Event] = []
        self._eta: dict[tuple[int, int], float] = {}  # (event id, group index) -> eta_e
        self._tracked: dict[str, _Tracked] = {}
        self._pending: list[_Snapshot] = []
        self._warned: set[str] = set()
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    @property
    def completed_steps(self) -> int:
        """Optimizer steps completed so far."""
        return self._completed_steps

    def labels(self, name: str) -> torch.Tensor | None:
        """Return the label tensor of parameter `name` (read-only), or None if never grown."""
        return self._labels.get(name)

    def remove(self) -> None:
        """Unregister the hooks; the optimizer then gives every entry its group's lr."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._pending = []

    # ---- growth events ----------------------------------------------------------------------

    def prepare_growth(
        self,
        event_id: int,
        start_step: int | None,
        policy: LRPolicy,
        remaps: Mapping[str, ParamRemap],
    ) -> LabelSwap:
        """Compute the labels after growth event `event_id`; install them with `commit()`.

        `event_id` is the label of the new entries: 1..127, larger than every committed
        event. `start_step` is the number of optimizer steps completed when the event fires;
        it must equal `completed_steps` (None means exactly that). Raises `GrowthError` for a
        re-warmup with an optimizer whose update is not proportional to lr.
        """
        self._check_event_id(event_id)
        start = self._check_start_step(start_step)
        if isinstance(policy, RewarmupLR):
            self.check_rewarmup_supported()
        labels = {name: self._grown_labels(name, remap, event_id) for name, remap in remaps.items()}
        return LabelSwap(self, _Event(event_id, start, policy, tuple(remaps)), labels)

    def _check_event_id(self, event_id: int) -> None:
        last = self._events[-1].event_id if self._events else 0
        if not last < event_id <= MAX_EVENT_ID:
            raise ValueError(f"event_id must be in {last + 1}..{MAX_EVENT_ID}, got {event_id}")

    def _check_start_step(self, start_step: int | None) -> int:
        if start_step is None:
            return self._completed_steps
        if start_step != self._completed_steps:
            raise ValueError(
                f"start_step {start_step} differs from the {self._completed_steps} optimizer "
                "steps counted by this EntryLR; pass completed_steps= when creating it "
                "mid-training, or pass start_step=None"
            )
        return start_step

    def check_rewarmup_supported(self) -> None:
        """Raise `GrowthError` if this optimizer's update is not proportional to its lr."""
        for optimizer_type, reason in _NOT_PROPORTIONAL.items():
            if isinstance(self._optimizer, optimizer_type):
                raise GrowthError(
                    f"cannot re-warm new entries under {type(self._optimizer).__name__}: "
                    f"{reason}. Use `lr new same` (InheritLR) for this optimizer."
                )

    def _grown_labels(self, name: str, remap: ParamRemap, event_id: int) -> torch.Tensor:
        old = self._labels.get(name)
        if old is None:
            device = self._resolve(name).device
            old = torch.zeros(remap.old_shape, dtype=LABEL_DTYPE, device=device)
        elif tuple(old.shape) != remap.old_shape:
            raise GrowthError(
                f"'{name}': labels have shape {tuple(old.shape)} but the remap starts from "
                f"{remap.old_shape}; was an earlier growth event of it not recorded here?"
            )
        fill = torch.full(remap.new_shape, event_id, dtype=LABEL_DTYPE, device=old.device)
        return remap.place_old(old, fill)

    def _install(
        self, event: _Event, labels: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor | None]:
        previous = {name: self._labels.get(name) for name in labels}
        self._labels.update(labels)
        self._events.append(event)
        self._forget(labels)
        logger.info(
            "entry lr: growth event %d labelled %d parameters (%s)",
            event.event_id, len(labels), _describe_policy(event.policy),
        )
        return previous

    def _uninstall(self, event: _Event, previous: Mapping[str, torch.Tensor | None]) -> None:
        for name, labels in previous.items():
            if labels is None:
                self._labels.pop(name, None)
            else:
                self._labels[name] = labels
        self._events.remove(event)
        self._forget(previous)
        for key in [k for k in self._eta if k[0] == event.event_id]:
            del self._eta[key]

    def _forget(self, names: Iterable[str]) -> None:
        for name in names:
            self._tracked.pop(name, None)

    # ---- learning rates ---------------------------------------------------------------------

    def new_entry_lr(self, group: int = 0) -> float | None:
        """Return the lr that the newest entries of param group `group` get at the next step.

        None while no growth event has added entries to that group.
        """
        for event in reversed(self._events):
            if group in self._groups_of(event):
                return self.entry_lr(event.event_id, group)
        return None

    def entry_lr(self, event_id: int, group: int) -> float:
        """Return the lr of the entries that `event_id` added to param group `group`, next step."""
        event = self._event(event_id)
        group_lr = float(self._optimizer.param_groups[group]["lr"])
        eta_e = self._eta.get((event_id, group), group_lr)  # not yet seen: the next step sets it
        return self._event_lr(event, group, eta_e, group_lr)

    def _event(self, event_id: int) -> _Event:
        for event in self._events:
            if event.event_id == event_id:
                return event
        raise KeyError(f"no committed growth event {event_id}")

    def _event_lr(self, event: _Event, group: int, eta_e: float, group_lr: float) -> float:
        if not isinstance(event.policy, RewarmupLR):
            return group_lr
        warmup = event.policy.warmup_steps
        return rewarmup_lr(
            eta_e,
            steps_since_growth=self._completed_steps - event.start_step,
            warmup_steps=warmup,
            peak_factor=event.policy.peak_factor,
            decay_steps=max(0, self.total_steps - event.start_step - warmup),
            min_lr=self._min_lr_of(group),
        )

    def _min_lr_of(self, group: int) -> float:
        if isinstance(self._min_lr, float):
            return self._min_lr
        if group >= len(self._min_lr):
            raise GrowthError(
                f"param group {group} has no min_lr: EntryLR got {len(self._min_lr)} values; "
                "pass one per param group, including groups added later"
            )
        return self._min_lr[group]

    def _groups_of(self, event: _Event) -> set[int]:
        groups = set()
        for name in event.names:
            tracked = self._track(name, self._resolve(name))
            if tracked.group_index is not None:
                groups.add(tracked.group_index)
        return groups

    # ---- per step ---------------------------------------------------------------------------

    def _before_step(
        self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._pending = []
        if not any(isinstance(e.policy, RewarmupLR) for e in self._events):
            return
        # eta_e of an event and group is the group's lr at the first step after the event.
        with torch.no_grad():
            for tracked in self._live():
                if tracked.group_index is not None:
                    self._snapshot(tracked, tracked.group_index)

    def _snapshot(self, tracked: _Tracked, group: int) -> None:
        group_lr = float(self._optimizer.param_groups[group]["lr"])
        for event_id, indices in tracked.indices.items():
            eta_e = self._eta.setdefault((event_id, group), group_lr)
            lr = self._event_lr(self._event(event_id), group, eta_e, group_lr)
            if lr == group_lr:
                continue
            if group_lr == 0.0:
                self._warn_once(
                    f"zero-lr:{group}",
                    "param group %d has lr 0 at step %d, so its new entries get no update "
                    "although their re-warmup lr is %g",
                    group, self._completed_steps, lr,
                )
                continue
            self._check_adafactor_cap(tracked.param, group, max(lr, group_lr))
            before = tracked.param.take(indices)
            self._pending.append(_Snapshot(tracked.param, indices, before, lr / group_lr))

    def _after_step(
        self, optimizer: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._completed_steps += 1
        with torch.no_grad():
            for snapshot in self._pending:
                _rescale_update(snapshot)
        self._pending = []

    def _live(self) -> Iterator[_Tracked]:
        """Yield each labelled live Parameter once (tied names resolve to one Parameter)."""
        seen: set[int] = set()
        for name in self._labels:
            param = self._resolve(name)
            if id(param) in seen:
                continue
            seen.add(id(param))
            yield self._track(name, param)

    def _track(self, name: str, param: torch.nn.Parameter) -> _Tracked:
        tracked = self._tracked.get(name)
        if tracked is not None and tracked.param is param:
            return tracked
        labels = self._labels[name]
        if labels.shape != param.shape:
            raise GrowthError(
                f"'{name}' is a Parameter of shape {tuple(param.shape)} but its entry labels "
                f"have shape {tuple(labels.shape)}; install the grown Parameters in the model "
                "before the next optimizer step"
            )
        labels = labels.to(param.device)
        self._labels[name] = labels
        tracked = _Tracked(param, self._group_of(param), self._rewarmup_indices(labels))
        self._tracked[name] = tracked
        return tracked

    def _rewarmup_indices(self, labels: torch.Tensor) -> dict[int, torch.Tensor]:
        flat = labels.flatten()
        indices = {}
        for event in self._events:
            if isinstance(event.policy, RewarmupLR):
                found = torch.nonzero(flat == event.event_id).squeeze(1)
                if found.numel():
                    indices[event.event_id] = found
        return indices

    def _group_of(self, param: torch.nn.Parameter) -> int | None:
        for index, group in enumerate(self._optimizer.param_groups):
            if any(p is param for p in group["params"]):
                return index
        return None

    def _check_adafactor_cap(self, param: torch.nn.Parameter, group: int, lr: float) -> None:
        if not isinstance(self._optimizer, torch.optim.Adafactor):
            return
        step = self._optimizer.state.get(param, {}).get("step")
        next_step = float(step) + 1.0 if step is not None else 1.0
        if lr > 1.0 / math.sqrt(next_step):
            self._warn_once(
                f"adafactor:{group}",
                "Adafactor caps its relative step at 1/sqrt(step) = %g, below the lr %g of "
                "param group %d, so the new entries' lr is not applied exactly",
                1.0 / math.sqrt(next_step), lr, group,
            )

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    # ---- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return the counters, events, eta_e values and labels, to save beside the optimizer."""
        return {
            "completed_steps": self._completed_steps,
            "events": [
                {
                    "event_id": e.event_id,
                    "start_step": e.start_step,
                    "policy": e.policy.model_dump(),
                    "names": list(e.names),
                }
                for e in self._events
            ],
            "eta": [[event_id, group, eta] for (event_id, group), eta in self._eta.items()],
            "labels": {name: labels.cpu() for name, labels in self._labels.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict()` returned; labels move to each live Parameter's device."""
        self._completed_steps = int(state["completed_steps"])
        self._events = [
            _Event(
                int(e["event_id"]),
                int(e["start_step"]),
                _LR_POLICY.validate_python(e["policy"]),
                tuple(e["names"]),
            )
            for e in state["events"]
        ]
        self._eta = {(int(e), int(g)): float(eta) for e, g, eta in state["eta"]}
        self._labels = {name: labels.to(LABEL_DTYPE) for name, labels in state["labels"].items()}
        self._tracked = {}
        self._pending = []


def _rescale_update(snapshot: _Snapshot) -> None:
    param = snapshot.param
    after = param.take(snapshot.indices)
    before = snapshot.before
    if param.element_size() < 4:
        # Half-precision parameters: form the rescaled value in float32, round once.
        scaled = torch.add(before.float(), (after.float() - before.float()), alpha=snapshot.ratio)
    else:
        scaled = torch.add(before, after - before, alpha=snapshot.ratio)
    param.put_(snapshot.indices, scaled.to(param.dtype))


def _check_min_lr(min_lr: float | Sequence[float], group_count: int) -> float | list[float]:
    if isinstance(min_lr, (int, float)):
        values = [float(min_lr)]
    else:
        values = [float(v) for v in min_lr]
        if len(values) != group_count:
            raise ValueError(f"min_lr has {len(values)} values for {group_count} param groups")
    if any(v < 0 for v in values):
        raise ValueError(f"min_lr must be >= 0, got {min_lr}")
    return float(min_lr) if isinstance(min_lr, (int, float)) else values


def _describe_policy(policy: LRPolicy) -> str:
    if isinstance(policy, InheritLR):
        return "new entries follow the group lr"
    return (
        f"re-warmup to {policy.peak_factor}x over {policy.warmup_steps} steps, "
        "then cosine to min_lr"
    )
