"""Apply a `GrowthPlan` to a live model and optimizer, all or nothing.

`apply_plan` first builds everything off to the side: new Parameters, new optimizer state,
new LR labels and new module attributes. It then commits them in one sweep and checks the
result, because the widened model must run on the example inputs and its re-traced axes must
have the sizes that the plan promised. If any step fails, every committed change is undone and the model,
optimizer and LR labels are exactly as before (the same Parameter and state objects).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from sparkling_ir.compile.init import init_param
from sparkling_ir.compile.plan import AttributeChange, GrowthPlan, OutputScale
from sparkling_ir.compile.remap import ParamRemap
from sparkling_ir.errors import GrowthError
from sparkling_ir.nn import ScaledLinear
from sparkling_ir.optim.lr import EntryLR
from sparkling_ir.optim.state import prepare_state_remap

logger = logging.getLogger(__name__)

Undo = Callable[[], None]


class Transaction:
    """Committed changes with their undo actions, undone in reverse order on failure."""

    def __init__(self) -> None:
        self._undo: list[Undo] = []

    def did(self, undo: Undo) -> None:
        self._undo.append(undo)

    def rollback(self) -> None:
        while self._undo:
            self._undo.pop()()


def apply_plan(
    model: nn.Module,
    plan: GrowthPlan,
    *,
    optimizer: torch.optim.Optimizer | None,
    entry_lr: EntryLR | None,
    verify: Callable[[], None],
    generator: torch.Generator | None = None,
) -> None:
    """Widen `model`, `optimizer` and `entry_lr` in place as `plan` specifies (see module doc)."""
    # Phase 1: build everything without touching the model or optimizer.
    old_params = {c.name: _get_param(model, c.name) for c in plan.params}
    new_params = {
        c.name: nn.Parameter(
            init_param(old_params[c.name].detach(), c, plan.init, generator),
            requires_grad=old_params[c.name].requires_grad,
        )
        for c in plan.params
    }
    remaps: dict[str, ParamRemap] = {c.name: c.remap for c in plan.params}
    state_swap = None
    if optimizer is not None:
        state_swap = prepare_state_remap(optimizer, old_params, new_params, remaps, plan.optimizer)
    label_swap = None
    if entry_lr is not None:
        # Label 0 marks original entries, so event k labels its new entries k + 1.
        label_swap = entry_lr.prepare_growth(plan.event_index + 1, None, plan.lr, remaps)

    # Phase 2: commit, recording how to undo each change.
    transaction = Transaction()
    try:
        for change in plan.params:
            for alias in change.aliases:
                _swap_param(model, alias, new_params[change.name], transaction)
        _sync_module_attributes(model, transaction)
        for output in plan.output_scales:
            _scale_output(model, output, transaction)
        for attribute in plan.attributes:
            _rewrite_attribute(model, attribute, transaction)
        if state_swap is not None:
            state_swap.commit()
            transaction.did(state_swap.rollback)
        if label_swap is not None:
            label_swap.commit()
            transaction.did(label_swap.rollback)
    except BaseException:
        transaction.rollback()
        raise

    # Phase 3: the widened model must run and match the plan.
    try:
        verify()
    except BaseException as error:
        transaction.rollback()
        if not isinstance(error, Exception):
            raise  # KeyboardInterrupt and friends: undone, then passed on unchanged
        raise GrowthError(
            f"growth event {plan.event_index} failed and was undone: the widened model does "
            f"not run or does not match the plan ({type(error).__name__}: {error}). The model "
            "probably stores a grown size where the compiler cannot rewrite it, such as a "
            "literal in a view or an attribute with an unusual name; read sizes from module "
            "attributes named like n_head, head_dim or hidden_size."
        ) from error


def _get_param(model: nn.Module, name: str) -> nn.Parameter:
    module_name, _, local = name.rpartition(".")
    param = model.get_submodule(module_name)._parameters[local]
    assert param is not None, f"{name} is None"
    return param


def _swap_param(model: nn.Module, name: str, new: nn.Parameter, transaction: Transaction) -> None:
    module_name, _, local = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = module._parameters[local]
    module._parameters[local] = new
    transaction.did(lambda: module._parameters.__setitem__(local, old))


def _sync_module_attributes(model: nn.Module, transaction: Transaction) -> None:
    """Make the size attributes of standard layers agree with their new weights."""
    for module in model.modules():
        updates: dict[str, Any] = {}
        if isinstance(module, nn.Linear):
            updates = {"out_features": module.weight.shape[0], "in_features": module.weight.shape[1]}
        elif isinstance(module, nn.Embedding):
            updates = {"num_embeddings": module.weight.shape[0], "embedding_dim": module.weight.shape[1]}
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and module.weight is not None:
            updates = {"normalized_shape": tuple(module.weight.shape)}
        for attribute, value in updates.items():
            _set_attribute(module, attribute, value, transaction)


def _set_attribute(target: Any, attribute: str, value: Any, transaction: Transaction) -> None:
    old = getattr(target, attribute)
    if old == value:
        return
    setattr(target, attribute, value)
    transaction.did(lambda: setattr(target, attribute, old))


def _scale_output(model: nn.Module, output: OutputScale, transaction: Transaction) -> None:
    module = model.get_submodule(output.module)
    if isinstance(module, ScaledLinear):
        # A new buffer tensor, so that undoing restores the very object the module held.
        old_scale = module.logit_scale
        module.logit_scale = old_scale * output.scale
        transaction.did(lambda: setattr(module, "logit_scale", old_scale))
        return
    if type(module) is not nn.Linear:
        raise GrowthError(
            f"{output.module} ({type(module).__name__}) consumes the tied parameter "
            f"{output.param}, whose fan-in scale {output.scale:.6g} must move to this module's "
            "output, but only nn.Linear outputs can be scaled; untie the weights or register "
            "a rule for this module"
        )
    parent_name, _, child = output.module.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, child, ScaledLinear.from_linear(module, output.scale))
    transaction.did(lambda: setattr(parent, child, module))


def _rewrite_attribute(model: nn.Module, change: AttributeChange, transaction: Transaction) -> None:
    module = model.get_submodule(change.module)
    owner_path, _, name = change.path.rpartition(".")
    if not owner_path:
        _set_attribute(module, name, change.new, transaction)
        return
    owner = getattr(module, owner_path)
    if dataclasses.is_dataclass(owner) and getattr(type(owner), "__dataclass_params__").frozen:
        # A frozen config is replaced by an updated copy.
        replaced = dataclasses.replace(owner, **{name: change.new})  # type: ignore[type-var]
        setattr(module, owner_path, replaced)
        transaction.did(lambda: setattr(module, owner_path, owner))
        return
    _set_attribute(owner, name, change.new, transaction)


def count_parameters(model: nn.Module) -> int:
    """Count the scalars in the model's parameters, each tied tensor once."""
    return sum(p.numel() for p in model.parameters())


def run_example(model: nn.Module, example_inputs: Sequence[Any]) -> Any:
    with torch.no_grad():
        return model(*example_inputs)
