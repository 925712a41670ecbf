"""The runtime API: apply a schedule's growth events inside a plain training loop.

    schedule = sparkling_ir.load_schedule("schedules/tinygpt_2x.grow")
    grower = sparkling_ir.Grower(model, optimizer, schedule, example_inputs=(batch,))
    for step in range(train_steps):
        loss = ...; loss.backward(); optimizer.step(); optimizer.zero_grad()
        grower.step()   # applies the events due after this many completed steps

Step counting: `grower.step()` counts completed optimizer steps. An event `at step 2000`
fires inside the 2000th call, so the model trains 2000 steps narrow and every later step wide.
A fraction `at 50%` of `train 4000 steps` is step 2000; a token count is divided by
`tokens_per_step` and rounded up, so the event fires once that many tokens have been seen.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from sparkling_ir.analysis import ModelAnalysis, analyse_model
from sparkling_ir.compile.emit import apply_plan, count_parameters
from sparkling_ir.compile.plan import (
    GrowthPlan,
    check_events,
    estimate_parameter_count,
    plan_growth,
)
from sparkling_ir.errors import GrowthError
from sparkling_ir.optim.lr import EntryLR
from sparkling_ir.schedule import load_schedule, resolve_event_steps, resolve_train_steps
from sparkling_ir.schedule.ir import RewarmupLR, Schedule

logger = logging.getLogger(__name__)


class GrowthReport(BaseModel):
    """The changes and parameter counts of one applied growth event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_index: int
    step: int
    changes: tuple[str, ...]  # e.g. "hidden 64 -> 128"
    params_before: int
    params_after: int

    def summary(self) -> str:
        changes = ", ".join(self.changes)
        return (
            f"step {self.step}: grew {changes}; parameters "
            f"{self.params_before:,} -> {self.params_after:,}"
        )


class Grower:
    """Binds a schedule to a model and optimizer and applies its events at their steps.

    `schedule` is a parsed `Schedule` or the path of a `.grow` file. Construction traces the
    model on `example_inputs`, builds its dimension graph and checks every event against the
    model's axes and sizes, so a schedule that cannot apply fails here and not half-way through
    training. `step()` is called once after each `optimizer.step()`.

    `min_lr` is the floor that re-warmed new entries decay to at the end of training. It is one
    value for every param group or one per group, and it defaults to the schedule's
    `lr cosine ... min`. It is required when the schedule re-warms new entries without
    declaring a minimum. Give one value per group when the groups' learning rates differ. `leaf_modules` lists module
    classes that tracing keeps opaque; each needs a registered dimension rule.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None,
        schedule: Schedule | str | os.PathLike[str],
        *,
        example_inputs: Sequence[Any],
        tokens_per_step: int | None = None,
        min_lr: float | Sequence[float] | None = None,
        leaf_modules: tuple[type[torch.nn.Module], ...] = (),
        seed: int = 0,
    ) -> None:
        if isinstance(schedule, (str, os.PathLike)):
            schedule = load_schedule(schedule)
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"Grower expects a Schedule or the path of a .grow file, got "
                f"{type(schedule).__name__}; load one with sparkling_ir.load_schedule(path)"
            )
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.example_inputs = tuple(example_inputs)
        self.train_steps = resolve_train_steps(schedule, tokens_per_step)
        self._event_steps = resolve_event_steps(schedule, tokens_per_step)
        self._completed = 0
        self._generator = torch.Generator().manual_seed(seed)
        self.reports: list[GrowthReport] = []
        self.plans: list[GrowthPlan] = []

        self.leaf_modules = leaf_modules
        self._applied: set[int] = set()

        self.analysis: ModelAnalysis = analyse_model(model, self.example_inputs, leaf_modules)
        final_sizes = check_events(self.analysis.axes, model, schedule.events)
        self._check_memory(estimate_parameter_count(self.analysis.axes, final_sizes))
        self._check_optimizer_holds_grown_params()
        self.entry_lr = self._make_entry_lr(min_lr)
        logger.info(
            "bound schedule %s: %d event(s) at steps %s of %d",
            schedule.name, len(schedule.events), list(self._event_steps), self.train_steps,
        )

    def _check_memory(self, final_params: int) -> None:
        """Reject a schedule whose grown weights alone cannot fit in the device's memory."""
        first = next(self.model.parameters(), None)
        if first is None:
            return
        needed = final_params * first.element_size()
        available = _device_memory(first.device)
        logger.info("after the last event the model has about %s parameters", f"{final_params:,}")
        if available is not None and needed > available:
            raise GrowthError(
                f"schedule {self.schedule.name} grows the model to about {final_params:,} "
                f"parameters, {needed / 2**30:.1f} GiB for the weights alone, more than the "
                f"{available / 2**30:.1f} GiB of memory of device {first.device}; widen less"
            )

    def _check_optimizer_holds_grown_params(self) -> None:
        """Reject a trainable parameter that would grow but that the optimizer does not train."""
        if self.optimizer is None:
            return
        trained = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        roles = {w.axis for event in self.schedule.events for w in event.widens}
        missing = sorted({
            member.param
            for axis in self.analysis.axes.axes if axis.role in roles
            for member in axis.members
            if (param := self.model.get_parameter(member.param)).requires_grad
            and id(param) not in trained
        })
        if missing:
            raise GrowthError(
                f"the optimizer does not hold {len(missing)} trainable parameter(s) that the "
                f"schedule widens, e.g. {missing[0]}; pass an optimizer over all of "
                "model.parameters(), or set requires_grad=False on parameters you freeze"
            )

    def _make_entry_lr(self, min_lr: float | Sequence[float] | None) -> EntryLR | None:
        if self.optimizer is None:
            return None
        if min_lr is None and self.schedule.base_lr is not None:
            min_lr = self.schedule.base_lr.min
        rewarms = any(isinstance(e.lr, RewarmupLR) for e in self.schedule.events)
        if min_lr is None and rewarms:
            raise GrowthError(
                f"schedule {self.schedule.name} re-warms the LR of new entries, which decays to "
                "the base schedule's minimum, but no minimum is known; add `lr cosine peak P "
                "min M` to the schedule or pass Grower(..., min_lr=M)"
            )
        model = self.model
        entry_lr = EntryLR(
            self.optimizer,
            lambda name: model.get_parameter(name),
            total_steps=self.train_steps,
            min_lr=0.0 if min_lr is None else min_lr,
        )
        if rewarms:
            try:
                entry_lr.check_rewarmup_supported()
            except GrowthError:
                entry_lr.remove()
                raise
        return entry_lr

    @property
    def event_steps(self) -> tuple[int, ...]:
        """The completed-step count after which each event fires, in schedule order."""
        return self._event_steps

    @property
    def completed_steps(self) -> int:
        return self._completed

    def step(self) -> list[GrowthReport]:
        """Count one completed optimizer step and apply the events due now."""
        self._completed += 1
        if self._completed == self.train_steps + 1:
            logger.warning(
                "step %d is past the end of schedule %s (%d steps); re-warmed learning rates "
                "stay at their minimum from here on", self._completed, self.schedule.name,
                self.train_steps,
            )
        reports = []
        for index, at in enumerate(self._event_steps):
            if at == self._completed and index not in self._applied:
                reports.append(self.apply_event(index))
        return reports

    def apply_event(self, index: int, step: int | None = None) -> GrowthReport:
        """Apply event `index` now, whatever the step; all or nothing.

        `step` is recorded in the report; it defaults to the completed-step count.
        """
        if not 0 <= index < len(self.schedule.events):
            raise GrowthError(
                f"schedule {self.schedule.name} has {len(self.schedule.events)} event(s), so "
                f"there is no event {index}; events are numbered from 0"
            )
        if index in self._applied:
            raise GrowthError(f"event {index} of schedule {self.schedule.name} was already applied")
        event = self.schedule.events[index]
        params_before = count_parameters(self.model)
        plan = plan_growth(self.analysis.axes, self.model, event, index)
        grown: list[ModelAnalysis] = []

        def verify() -> None:
            grown.append(self._verify(plan))

        apply_plan(
            self.model, plan, optimizer=self.optimizer, entry_lr=self.entry_lr,
            verify=verify, generator=self._generator,
        )
        self.analysis = grown[0]
        self._applied.add(index)
        self.plans.append(plan)
        report = GrowthReport(
            event_index=index,
            step=self._completed if step is None else step,
            changes=_describe_changes(plan),
            params_before=params_before,
            params_after=count_parameters(self.model),
        )
        self.reports.append(report)
        logger.info("%s", report.summary())
        return report

    def _verify(self, plan: GrowthPlan) -> ModelAnalysis:
        """Re-trace the widened model and check that its axes have the planned sizes."""
        analysis = analyse_model(self.model, self.example_inputs, self.leaf_modules)
        sizes = {axis.name: axis.size for axis in analysis.axes.axes}
        for change in plan.axes:
            if sizes.get(change.axis) != change.new_size:
                raise GrowthError(
                    f"after growth, axis {change.axis} has size {sizes.get(change.axis)} but "
                    f"the plan grows it to {change.new_size}; the growth was undone"
                )
        return analysis

    def new_entry_lr(self, group: int = 0) -> float | None:
        """Return the LR that the newest entries of param group `group` get at the next step."""
        if self.entry_lr is None:
            return None
        return self.entry_lr.new_entry_lr(group)


def _device_memory(device: torch.device) -> int | None:
    """Total memory of `device` in bytes, or None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            return None
    return None


def _describe_changes(plan: GrowthPlan) -> tuple[str, ...]:
    """Summarise the axis changes per role, e.g. `ffn 256 -> 512 (in 2 layers)`."""
    by_role: dict[tuple[str, int, int], int] = {}
    for change in plan.axes:
        key = (change.role, change.old_size, change.new_size)
        by_role[key] = by_role.get(key, 0) + 1
    described = []
    for (role, old, new), count in by_role.items():
        suffix = f" (in {count} layers)" if count > 1 else ""
        described.append(f"{role} {old} -> {new}{suffix}")
    return tuple(described)
