"""Optimizer state after growth: point the optimizer at the new Parameters, with state remapped.

A growth event replaces some Parameters by wider ones under the same fully qualified names.
`prepare_state_remap` computes the param groups and per-parameter state that every optimizer
must have afterwards, and changes nothing. `StateSwap.commit()` installs them and
`StateSwap.rollback()` puts back the previous objects, so growth is all-or-nothing.

Layouts, chosen by `OptimizerPolicy.kind`, for a state tensor `S` that has one entry per entry
of the parameter (Adam's `exp_avg`, SGD's `momentum_buffer`, Muon's momentum, ...):

- `reset_new` (default): `[S, 0]`. Old entries keep their state, moved to their new positions
  (`DimRemap.old_position`) and not rescaled, even where the compiler multiplied the weights
  by a fan-in factor. New entries start at the optimizer's fresh value, which is 0 for every
  built-in torch optimizer except Adagrad's `sum` (`initial_accumulator_value`) and Rprop's
  `step_size` (the group's `lr`).
- `reset_all`: every state tensor of a widened parameter starts at its fresh value.
- `copy`: new entries copy the state of their source entry (`DimRemap.source`). Copied units
  then get identical updates forever (symmetry lock); this layout is a negative control.

Step counters and other 0-d or non-tensor values (Adam's `step`, NAdam's `mu_product`,
ASGD's `eta`) are kept as they are. For Adam-like optimizers, keeping `step` mid-training keeps
both bias corrections near 1, so the first update of a new entry is `lr * (1-beta1) /
sqrt(1-beta2)` in magnitude. That is 0.45 lr for betas (0.9, 0.95), smaller than a fresh
Adam's first step of lr, but 3.2 lr for betas (0.9, 0.999).

State tensors whose shape is not the parameter's are related to it by shape: the same rank
with size-1 dims (a statistic reduced with keepdim), or fewer dims that match the parameter's
dims in exactly one way (reduced without keepdim). Only dims carried at full size grow; a
statistic reduced over a widened dim is kept under `reset_new` and `copy`. Any other layout
raises `OptimizerStateError`; `register_state_rule` teaches the remap a new one.

Parameters are found by fully qualified name and matched to the optimizer by object
identity, so nothing depends on attributes set on Parameter objects.

Unsupported: optimizers with state shared by all parameters (LBFGS keeps flattened history
vectors), and state values that are containers of tensors.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sparkling_ir.compile.remap import DimRemap, ParamRemap
from sparkling_ir.errors import GrowthError, OptimizerStateError
from sparkling_ir.schedule.ir import OptimizerPolicy

logger = logging.getLogger(__name__)

Optimizers = torch.optim.Optimizer | Sequence[torch.optim.Optimizer]


# ---- state rules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StateContext:
    """One state tensor of a widened parameter, as a state rule receives it."""

    optimizer: torch.optim.Optimizer
    name: str  # fully qualified parameter name
    key: str  # key in the parameter's state dict
    value: torch.Tensor  # the state tensor before growth
    remap: ParamRemap  # the parameter's widened dims; `remap.old_shape` is the old shape
    policy: OptimizerPolicy
    group: Mapping[str, Any]  # the parameter's param group, read-only


StateRule = Callable[[StateContext], torch.Tensor]
"""Return the state tensor for the grown parameter; must not modify `ctx.value`."""

_RULES: dict[tuple[type[torch.optim.Optimizer], str], StateRule] = {}


def register_state_rule(
    optimizer_type: type[torch.optim.Optimizer], key: str, rule: StateRule
) -> None:
    """Use `rule` for state `key` of `optimizer_type` and its subclasses, replacing any earlier.

    Most rules are one call to `remap_state`, for example a statistic kept per row:

        def row_norm(ctx: StateContext) -> torch.Tensor:
            return remap_state(ctx, reduced_dims=(-1,))

        register_state_rule(MyOptimizer, "row_norm", row_norm)
    """
    if not (isinstance(optimizer_type, type) and issubclass(optimizer_type, torch.optim.Optimizer)):
        raise TypeError(
            f"optimizer_type must be a torch.optim.Optimizer subclass, got {optimizer_type!r}"
        )
    _RULES[(optimizer_type, key)] = rule


def find_state_rule(optimizer_type: type[torch.optim.Optimizer], key: str) -> StateRule | None:
    """Return the rule registered for `key` on `optimizer_type` or its nearest base class."""
    for cls in optimizer_type.__mro__:
        rule = _RULES.get((cls, key))
        if rule is not None:
            return rule
    return None


def remap_state(
    ctx: StateContext, *, reduced_dims: Sequence[int] = (), fill: float = 0.0
) -> torch.Tensor:
    """Remap `ctx.value` by the policy: the default rule, and the building block of custom ones.

    `reduced_dims` names the parameter dims over which the state is reduced with keepdim, so
    they have size 1 in the state. Without it, the layout is inferred from the shapes as the
    module docstring describes. `fill` is the fresh value of a new entry. Returns a new tensor
    with the dtype and device of `ctx.value`.
    """
    carried = _carried_dims(ctx, reduced_dims)
    dims = {
        state_dim: ctx.remap.dims[param_dim]
        for param_dim, state_dim in carried.items()
        if param_dim in ctx.remap.dims
    }
    return _apply_policy(ctx, dims, fill)


def _apply_policy(ctx: StateContext, dims: Mapping[int, DimRemap], fill: float) -> torch.Tensor:
    value = ctx.value
    new_shape = list(value.shape)
    for dim, remap in dims.items():
        new_shape[dim] = remap.new_size

    if ctx.policy.kind == "reset_all":
        return value.new_full(new_shape, fill)
    if not dims:
        return value.clone()  # reduced over every widened dim: nothing to place

    state_remap = ParamRemap(
        name=f"{ctx.name}:{ctx.key}",
        old_shape=tuple(value.shape),
        new_shape=tuple(new_shape),
        dims=dims,
    )
    if ctx.policy.kind == "copy":
        return state_remap.gather_sources(value)
    return state_remap.place_old(value, value.new_full(new_shape, fill))


def _carried_dims(ctx: StateContext, reduced_dims: Sequence[int]) -> dict[int, int]:
    """Map each parameter dim that the state carries at full size to its dim in the state."""
    state_shape = tuple(ctx.value.shape)
    param_shape = ctx.remap.old_shape
    if reduced_dims:
        carried = _carried_with_reduced(state_shape, param_shape, reduced_dims)
    elif state_shape == param_shape:
        carried = {dim: dim for dim in range(len(param_shape))}
    elif len(state_shape) == len(param_shape):
        carried = _carried_keepdim(state_shape, param_shape, ctx.remap)
    elif len(state_shape) < len(param_shape):
        carried = _carried_dropped(state_shape, param_shape)
    else:
        carried = None
    if carried is None:
        raise _unrelated_shape_error(ctx)
    return carried


def _carried_with_reduced(
    state_shape: tuple[int, ...], param_shape: tuple[int, ...], reduced_dims: Sequence[int]
) -> dict[int, int] | None:
    rank = len(param_shape)
    reduced = {dim % rank for dim in reduced_dims}
    if len(state_shape) != rank:
        return None
    for dim in range(rank):
        expected = 1 if dim in reduced else param_shape[dim]
        if state_shape[dim] != expected:
            return None
    return {dim: dim for dim in range(rank) if dim not in reduced}


def _carried_keepdim(
    state_shape: tuple[int, ...], param_shape: tuple[int, ...], remap: ParamRemap
) -> dict[int, int] | None:
    carried: dict[int, int] = {}
    for dim, (state_size, param_size) in enumerate(zip(state_shape, param_shape)):
        # A widened dim of old size 1 is ambiguous in a state whose shape differs from the
        # parameter's, because it may be carried at size 1 or reduced. A rule must decide.
        if state_size == param_size and not (param_size == 1 and dim in remap.dims):
            carried[dim] = dim
        elif state_size != 1:
            return None
    return carried


def _carried_dropped(
    state_shape: tuple[int, ...], param_shape: tuple[int, ...]
) -> dict[int, int] | None:
    # The state kept some of the parameter's dims, in order; accept only a unique match.
    matches = [
        kept_dims
        for kept_dims in itertools.combinations(range(len(param_shape)), len(state_shape))
        if all(param_shape[p] == s for p, s in zip(kept_dims, state_shape))
    ]
    if len(matches) != 1:
        return None
    return {param_dim: state_dim for state_dim, param_dim in enumerate(matches[0])}


def _unrelated_shape_error(ctx: StateContext) -> OptimizerStateError:
    optimizer_type = type(ctx.optimizer).__name__
    return OptimizerStateError(
        f"cannot remap optimizer state '{ctx.key}' of parameter '{ctx.name}' "
        f"({optimizer_type}): state shape {tuple(ctx.value.shape)} is not related to the "
        f"parameter shape {ctx.remap.old_shape} (expected the same shape, that shape with "
        "size-1 reduced dims, or a unique subset of its dims). Register a rule with "
        f"sparkling_ir.optim.register_state_rule({optimizer_type}, '{ctx.key}', rule)."
    )


# Built-in rules for torch optimizers whose state is not plain "zeros of the param's shape".


def _adafactor_row_var(ctx: StateContext) -> torch.Tensor:
    # Adafactor factors the second moment over the last two dims: `row_var` is the mean of
    # grad**2 over dim -1 (keepdim), `col_var` over dim -2. Under `reset_new` the new rows
    # of `row_var` are 0, which lowers the row mean that normalises the estimate, so old
    # entries take somewhat smaller steps until the new rows' statistics fill in.
    return remap_state(ctx, reduced_dims=(-1,))


def _adafactor_col_var(ctx: StateContext) -> torch.Tensor:
    return remap_state(ctx, reduced_dims=(-2,))


def _adagrad_sum(ctx: StateContext) -> torch.Tensor:
    return remap_state(ctx, fill=float(ctx.group["initial_accumulator_value"]))


def _rprop_step_size(ctx: StateContext) -> torch.Tensor:
    # A zero step size would stay zero forever (Rprop only multiplies it), so new entries
    # start where a fresh Rprop starts: at the group's lr.
    return remap_state(ctx, fill=float(ctx.group["lr"]))


register_state_rule(torch.optim.Adafactor, "row_var", _adafactor_row_var)
register_state_rule(torch.optim.Adafactor, "col_var", _adafactor_col_var)
register_state_rule(torch.optim.Adagrad, "sum", _adagrad_sum)
register_state_rule(torch.optim.Rprop, "step_size", _rprop_step_size)


# ---- the swap -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GroupSwap:
    group: dict[str, Any]
    old_params: Any  # the group's "params" list object before growth, restored on rollback
    new_params: list[torch.nn.Parameter]


@dataclass(frozen=True)
class _StateMove:
    state: dict[Any, Any]  # the optimizer's `state`
    old_key: torch.nn.Parameter
    old_entry: dict[str, Any] | None
    new_key: torch.nn.Parameter
    new_entry: dict[str, Any] | None


class StateSwap:
    """The optimizer changes of one growth event, computed and not yet applied.

    `commit()` makes every param group list the new Parameters and installs their state.
    `rollback()`, after `commit()`, restores the previous group lists and state dicts as the
    same objects. Both only assign references, so neither can fail half-way.
    """

    def __init__(
        self, groups: list[_GroupSwap], moves: list[_StateMove], summary: str
    ) -> None:
        self._groups = groups
        self._moves = moves
        self.summary = summary
        self.committed = False

    def commit(self) -> None:
        """Install the new param groups and state; raises if the optimizer changed since."""
        if self.committed:
            raise RuntimeError("StateSwap.commit() called twice")
        self._check_unchanged()
        for swap in self._groups:
            swap.group["params"] = swap.new_params
        for move in self._moves:
            move.state.pop(move.old_key, None)
            if move.new_entry is not None:
                move.state[move.new_key] = move.new_entry
        self.committed = True
        logger.info("optimizer state: %s", self.summary)

    def rollback(self) -> None:
        """Restore the optimizer exactly as it was before `commit()`."""
        if not self.committed:
            raise RuntimeError("StateSwap.rollback() called before commit()")
        for move in reversed(self._moves):
            move.state.pop(move.new_key, None)
            if move.old_entry is not None:
                move.state[move.old_key] = move.old_entry
        for swap in self._groups:
            swap.group["params"] = swap.old_params
        self.committed = False
        logger.info("optimizer state: rolled back (%s)", self.summary)

    def _check_unchanged(self) -> None:
        # An optimizer step or another swap between prepare and commit would make the
        # prepared state stale, so raise before anything is written.
        for swap in self._groups:
            if swap.group["params"] is not swap.old_params:
                raise RuntimeError("a param group changed between prepare_state_remap and commit")
        for move in self._moves:
            if move.state.get(move.old_key) is not move.old_entry:
                raise RuntimeError("optimizer state changed between prepare_state_remap and commit")


# ---- planning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Replacement:
    names: tuple[str, ...]  # more than one name when parameters are tied
    old: torch.nn.Parameter
    new: torch.nn.Parameter
    remap: ParamRemap | None  # None: replaced without widening, state moves unchanged


@dataclass(frozen=True)
class _Slot:
    optimizer: torch.optim.Optimizer
    group_index: int


def prepare_state_remap(
    optimizers: Optimizers,
    old_params: Mapping[str, torch.nn.Parameter],
    new_params: Mapping[str, torch.nn.Parameter],
    remaps: Mapping[str, ParamRemap],
    policy: OptimizerPolicy,
) -> StateSwap:
    """Compute the optimizer changes for replacing `old_params` by `new_params`; change nothing.

    `new_params` names every replaced Parameter. `old_params` maps those names, and possibly
    more, to the Parameters in the optimizers now, and `remaps` describes each widened one.
    A replacement without a remap must keep its shape, and its state moves unchanged. Pass
    every optimizer that trains the model, for example Muon and AdamW side by side.

    A replaced Parameter that is in no param group is accepted when `requires_grad` is False,
    because a frozen parameter has no state to remap. When it requires grad, the optimizers
    would never train its replacement, so `GrowthError` names it. Tied parameters (one
    Parameter under several names) need the same replacement object under every name, and
    one of the names may carry the remap alone. A replacement may be the old object itself
    with its data swapped in place. Its old shape is then `remap.old_shape`.

    Raises `OptimizerStateError` for LBFGS and for a state tensor that cannot be related to
    its parameter's shape, `GrowthError` for inconsistent arguments.
    """
    optimizer_list = _as_list(optimizers)
    for optimizer in optimizer_list:
        _check_supported(optimizer)

    replacements = _pair_replacements(old_params, new_params, remaps)
    slots = _locate(optimizer_list, replacements)
    _check_located(optimizer_list, replacements, slots)

    groups = _plan_groups(optimizer_list, replacements)
    moves = _plan_moves(replacements, slots, policy)
    return StateSwap(groups, moves, _summarize(replacements, moves, policy))


def _as_list(optimizers: Optimizers) -> list[torch.optim.Optimizer]:
    if isinstance(optimizers, torch.optim.Optimizer):
        return [optimizers]
    return list(optimizers)


def _check_supported(optimizer: torch.optim.Optimizer) -> None:
    if isinstance(optimizer, torch.optim.LBFGS):
        raise OptimizerStateError(
            "LBFGS keeps one state for all parameters (flattened gradient and step history), "
            "which cannot follow a change of shapes. Create a new LBFGS over the grown "
            "model's parameters after growth instead."
        )


def _pair_replacements(
    old_params: Mapping[str, torch.nn.Parameter],
    new_params: Mapping[str, torch.nn.Parameter],
    remaps: Mapping[str, ParamRemap],
) -> list[_Replacement]:
    for name in remaps:
        if name not in new_params:
            raise GrowthError(f"'{name}' has a remap but no replacement Parameter in new_params")

    by_old: dict[int, list[str]] = {}
    for name in new_params:
        if name not in old_params:
            raise GrowthError(f"replacement '{name}' has no current Parameter in old_params")
        by_old.setdefault(id(old_params[name]), []).append(name)

    replacements = [_merge_tied(names, old_params, new_params, remaps) for names in by_old.values()]
    for r in replacements:
        _check_shapes(r.names[0], r.old, r.new, r.remap)
    _check_distinct_replacements(replacements)
    return [r for r in replacements if r.new is not r.old or r.remap is not None]


def _check_shapes(
    name: str, old: torch.nn.Parameter, new: torch.nn.Parameter, remap: ParamRemap | None
) -> None:
    if remap is None:
        if new.shape != old.shape:
            raise GrowthError(
                f"'{name}' changes shape {tuple(old.shape)} -> {tuple(new.shape)} "
                "but has no remap describing where its entries come from"
            )
        return
    if new is not old and tuple(old.shape) != remap.old_shape:
        raise GrowthError(
            f"'{name}': the current Parameter has shape {tuple(old.shape)}, "
            f"the remap expects {remap.old_shape}"
        )
    if tuple(new.shape) != remap.new_shape:
        raise GrowthError(
            f"'{name}': the replacement has shape {tuple(new.shape)}, "
            f"the remap expects {remap.new_shape}"
        )


def _merge_tied(
    names: list[str],
    old_params: Mapping[str, torch.nn.Parameter],
    new_params: Mapping[str, torch.nn.Parameter],
    remaps: Mapping[str, ParamRemap],
) -> _Replacement:
    first = names[0]
    remap = remaps.get(first)
    for name in names[1:]:
        if new_params[name] is not new_params[first]:
            raise GrowthError(
                f"'{first}' and '{name}' are tied (one Parameter) but got different "
                "replacements; give both names the same new Parameter"
            )
        other = remaps.get(name)
        if not _same_layout(remap, other):
            raise GrowthError(f"'{first}' and '{name}' are tied but got different remaps")
        remap = remap if remap is not None else other
    return _Replacement(tuple(names), old_params[first], new_params[first], remap)


def _same_layout(a: ParamRemap | None, b: ParamRemap | None) -> bool:
    if a is None or b is None:
        return True  # one name carries the remap, the other only the replacement
    return (a.old_shape, a.new_shape, dict(a.dims)) == (b.old_shape, b.new_shape, dict(b.dims))


def _check_distinct_replacements(replacements: list[_Replacement]) -> None:
    seen: dict[int, str] = {}
    for replacement in replacements:
        other = seen.setdefault(id(replacement.new), replacement.names[0])
        if other != replacement.names[0]:
            raise GrowthError(
                f"'{other}' and '{replacement.names[0]}' are different Parameters now but "
                "got the same replacement object"
            )


def _locate(
    optimizers: list[torch.optim.Optimizer], replacements: list[_Replacement]
) -> dict[int, list[_Slot]]:
    """Return, by id of the old Parameter, every param group that contains it."""
    old_ids = {id(r.old): r for r in replacements}
    new_ids = {id(r.new): r for r in replacements if r.new is not r.old}
    slots: dict[int, list[_Slot]] = {}
    for optimizer in optimizers:
        for group_index, group in enumerate(optimizer.param_groups):
            for param in group["params"]:
                if id(param) in new_ids:
                    name = new_ids[id(param)].names[0]
                    raise GrowthError(
                        f"the optimizer already contains the replacement of '{name}', "
                        "so this growth event was probably committed before"
                    )
                if id(param) in old_ids:
                    slots.setdefault(id(param), []).append(_Slot(optimizer, group_index))
    return slots


def _check_located(
    optimizers: list[torch.optim.Optimizer],
    replacements: list[_Replacement],
    slots: Mapping[int, list[_Slot]],
) -> None:
    for replacement in replacements:
        if id(replacement.old) in slots:
            continue
        names = ", ".join(f"'{n}'" for n in replacement.names)
        if not replacement.old.requires_grad:
            logger.debug("%s is frozen and in no optimizer: nothing to remap", names)
            continue
        held_by = ", ".join(type(o).__name__ for o in optimizers) or "no optimizer"
        raise GrowthError(
            f"parameter {names} requires grad but is in no param group of the optimizers "
            f"passed ({held_by}), so its replacement would never be trained. Pass every "
            "optimizer that trains the model, or set requires_grad=False if it is frozen."
        )


def _plan_groups(
    optimizers: list[torch.optim.Optimizer], replacements: list[_Replacement]
) -> list[_GroupSwap]:
    new_by_old = {id(r.old): r.new for r in replacements}
    swaps = []
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            params = group["params"]
            if not any(id(p) in new_by_old for p in params):
                continue
            new_list = [new_by_old.get(id(p), p) for p in params]
            swaps.append(_GroupSwap(group, params, new_list))
    return swaps


def _plan_moves(
    replacements: list[_Replacement], slots: Mapping[int, list[_Slot]], policy: OptimizerPolicy
) -> list[_StateMove]:
    moves = []
    for replacement in replacements:
        for slot in slots.get(id(replacement.old), []):
            state = slot.optimizer.state
            old_entry = state.get(replacement.old)
            new_entry = None
            if old_entry:
                group = slot.optimizer.param_groups[slot.group_index]
                new_entry = _new_state_entry(slot.optimizer, group, replacement, old_entry, policy)
            moves.append(_StateMove(state, replacement.old, old_entry, replacement.new, new_entry))
    return moves


def _new_state_entry(
    optimizer: torch.optim.Optimizer,
    group: Mapping[str, Any],
    replacement: _Replacement,
    old_entry: dict[str, Any],
    policy: OptimizerPolicy,
) -> dict[str, Any]:
    if replacement.remap is None:
        return old_entry  # same shape: the state dict moves to the new key untouched
    name = replacement.names[0]
    return {
        key: _new_state_value(optimizer, group, name, key, value, replacement.remap, policy)
        for key, value in old_entry.items()
    }


def _new_state_value(
    optimizer: torch.optim.Optimizer,
    group: Mapping[str, Any],
    name: str,
    key: str,
    value: Any,
    remap: ParamRemap,
    policy: OptimizerPolicy,
) -> Any:
    rule = find_state_rule(type(optimizer), key)
    if isinstance(value, torch.Tensor):
        ctx = StateContext(optimizer, name, key, value, remap, policy, group)
        if rule is not None:
            return rule(ctx)
        if value.dim() == 0:
            return value.clone()  # step counters and other scalars are kept
        return remap_state(ctx)
    if isinstance(value, (list, tuple, dict, set)):
        raise OptimizerStateError(
            f"cannot remap optimizer state '{key}' of parameter '{name}' "
            f"({type(optimizer).__name__}): it is a {type(value).__name__}, not a tensor. "
            f"Register a rule with sparkling_ir.optim.register_state_rule("
            f"{type(optimizer).__name__}, '{key}', rule) if it holds per-entry tensors."
        )
    return value  # Python numbers (step counters), None (an unused momentum buffer), flags


def _summarize(
    replacements: list[_Replacement], moves: list[_StateMove], policy: OptimizerPolicy
) -> str:
    remapped = sum(1 for m in moves if m.new_entry is not None and m.new_entry is not m.old_entry)
    moved = sum(1 for m in moves if m.new_entry is not None and m.new_entry is m.old_entry)
    stateless = sum(1 for m in moves if m.new_entry is None)
    return (
        f"policy {policy.kind}: {len(replacements)} parameters replaced; "
        f"state remapped for {remapped}, moved unchanged for {moved}, none yet for {stateless}"
    )
