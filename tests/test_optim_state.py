"""Optimizer state after growth: layouts, swaps and errors, over torch and custom optimizers.

Each test trains a tiny nn.Linear for a few real steps, widens it by hand (new Parameters
copied from their source entries, as the compiler does) and remaps the optimizer state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
import torch
from torch import nn

from sparkling_ir.compile.remap import DimRemap, ParamRemap
from sparkling_ir.errors import GrowthError, OptimizerStateError
from sparkling_ir.optim import (
    StateContext,
    StateSwap,
    prepare_state_remap,
    register_state_rule,
    remap_state,
)
from sparkling_ir.schedule.ir import OptimizerPolicy

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


# ---- custom optimizers ----------------------------------------------------------------------


def orthogonalise(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (as Muon does)."""
    x = matrix / (matrix.norm() + 1e-7)
    for _ in range(steps):
        x = 1.5 * x - 0.5 * (x @ x.T) @ x
    return x


class MuonLike(torch.optim.Optimizer):
    """Momentum, then an orthogonalised update for matrices; a buffer of the param's shape."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 0.02, momentum: float = 0.9):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buffer = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buffer.mul_(group["momentum"]).add_(p.grad)
                update = orthogonalise(buffer) if p.dim() == 2 else buffer
                p.add_(update, alpha=-group["lr"])


class LionLike(torch.optim.Optimizer):
    """Sign of an interpolated momentum, decoupled weight decay (Chen et al. 2023)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, weight_decay: float = 0.1):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": (0.9, 0.99)})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                exp_avg = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                update = (beta1 * exp_avg + (1 - beta1) * p.grad).sign()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)


class OddState(torch.optim.Optimizer):
    """SGD that also stores a state tensor of an unrelated shape (7,) per parameter."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["history"] = torch.arange(7.0)
                    p.add_(p.grad, alpha=-group["lr"])


class RowStats(torch.optim.Optimizer):
    """SGD that stores row statistics of the gradient with and without keepdim."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 0.1):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.dim() == 2:
                    self.state[p]["row_keepdim"] = p.grad.square().mean(dim=1, keepdim=True) + 1
                    self.state[p]["row_dropped"] = p.grad.square().mean(dim=1) + 1
                    self.state[p]["col_dropped"] = p.grad.square().mean(dim=0) + 1
                    p.add_(p.grad, alpha=-group["lr"])


class Parallel(nn.Module):
    """Two bias-free linear maps of the same input, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4, bias=False)
        self.b = nn.Linear(3, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(x)


# ---- growth by hand -------------------------------------------------------------------------


def rows_remap(name: str, old_shape: tuple[int, ...], new_rows: int) -> ParamRemap:
    """Dim 0 grows by appending cyclic copies."""
    return ParamRemap(
        name=name,
        old_shape=old_shape,
        new_shape=(new_rows, *old_shape[1:]),
        dims={0: DimRemap.append_cyclic(old_shape[0], new_rows)},
    )


def head_dim_remap(heads: int, old_head_dim: int, new_head_dim: int) -> DimRemap:
    """A flattened `heads * head_dim` dim whose head dim grows: old entries move inside it.

    Entry d of head h moves from `h * old_head_dim + d` to `h * new_head_dim + d`; the new
    entries of head h copy its entries 0, 1, ... cyclically.
    """
    old_position = tuple(h * new_head_dim + d for h in range(heads) for d in range(old_head_dim))
    source = tuple(
        h * old_head_dim + d % old_head_dim for h in range(heads) for d in range(new_head_dim)
    )
    return DimRemap(
        old_size=heads * old_head_dim,
        new_size=heads * new_head_dim,
        old_position=old_position,
        source=source,
    )


def linear_remaps(layout: str) -> dict[str, ParamRemap]:
    """Remaps for the output dim of `nn.Linear(3, 4)`: appended rows 4 -> 8, or head dim 2 -> 3."""
    if layout == "append":
        dim = DimRemap.append_cyclic(4, 8)
    else:
        dim = head_dim_remap(heads=2, old_head_dim=2, new_head_dim=3)
    return {
        "weight": ParamRemap(
            name="weight", old_shape=(4, 3), new_shape=(dim.new_size, 3), dims={0: dim}
        ),
        "bias": ParamRemap(name="bias", old_shape=(4,), new_shape=(dim.new_size,), dims={0: dim}),
    }


def train(model: nn.Module, optimizers: Iterable[torch.optim.Optimizer], steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(1)
    optimizer_list = list(optimizers)
    for _ in range(steps):
        first = next(model.parameters())
        x = torch.randn(5, 3, generator=generator, dtype=first.dtype)
        loss = (model(x) - 0.5).pow(2).mean()
        loss.backward()
        for optimizer in optimizer_list:
            optimizer.step()
            optimizer.zero_grad()


def replacements(model: nn.Module, remaps: Mapping[str, ParamRemap]) -> dict[str, nn.Parameter]:
    params = dict(model.named_parameters())
    return {
        name: nn.Parameter(remap.gather_sources(params[name].detach()))
        for name, remap in remaps.items()
    }


def install(model: nn.Module, new_params: Mapping[str, nn.Parameter]) -> None:
    for name, param in new_params.items():
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, param)


def grow(
    model: nn.Module,
    optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer],
    remaps: Mapping[str, ParamRemap],
    policy: OptimizerPolicy = OptimizerPolicy(),
) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter], StateSwap]:
    """Widen `model` and remap the optimizer state; returns old params, new params and the swap."""
    old = dict(model.named_parameters())
    new = replacements(model, remaps)
    swap = prepare_state_remap(optimizers, old, new, remaps, policy)
    install(model, new)
    swap.commit()
    return old, new, swap


def snapshot_state(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    """Copies of every state value, keyed by id of the Parameter."""
    return {
        id(p): {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
        for p, state in optimizer.state.items()
    }


def param_ids(optimizer: torch.optim.Optimizer) -> list[int]:
    return [id(p) for group in optimizer.param_groups for p in group["params"]]


# ---- [S, 0] over many optimizers ------------------------------------------------------------

# Optimizer factories with the fresh value of each state key that is not 0.
OPTIMIZERS: dict[str, tuple[OptimizerFactory, dict[str, float]]] = {
    "sgd_momentum": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), {}),
    "sgd_nesterov_wd": (
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
        {},
    ),
    "adam": (lambda ps: torch.optim.Adam(ps, lr=1e-2), {}),
    "adamw_amsgrad": (
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, amsgrad=True),
        {},
    ),
    "rmsprop_centered": (
        lambda ps: torch.optim.RMSprop(ps, lr=1e-2, momentum=0.9, centered=True),
        {},
    ),
    "adagrad": (lambda ps: torch.optim.Adagrad(ps, lr=0.1), {}),
    "adagrad_initial": (
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.25),
        {"sum": 0.25},
    ),
    "adamax": (lambda ps: torch.optim.Adamax(ps, lr=1e-2), {}),
    "nadam": (lambda ps: torch.optim.NAdam(ps, lr=1e-2), {}),
    "radam": (lambda ps: torch.optim.RAdam(ps, lr=1e-2), {}),
    "adadelta": (lambda ps: torch.optim.Adadelta(ps, lr=1.0), {}),
    "asgd": (lambda ps: torch.optim.ASGD(ps, lr=1e-2), {}),
    "rprop": (lambda ps: torch.optim.Rprop(ps, lr=1e-2), {"step_size": 1e-2}),
    "muon_like": (lambda ps: MuonLike(ps), {}),
    "lion_like": (lambda ps: LionLike(ps), {}),
}


def check_reset_new(
    old_state: Mapping[str, Any],
    new_state: Mapping[str, Any],
    remap: ParamRemap,
    fills: Mapping[str, float],
) -> None:
    mask = remap.new_mask()
    assert set(new_state) == set(old_state)
    for key, old in old_state.items():
        new = new_state[key]
        if not isinstance(old, torch.Tensor):
            assert new == old, key
        elif old.dim() == 0:
            assert torch.equal(new, old), key  # step counters kept
        else:
            assert old.shape == remap.old_shape, f"{key} has an unexpected shape {old.shape}"
            assert new.shape == remap.new_shape, key
            assert new.dtype == old.dtype, key
            assert new.device == old.device, key
            # Old positions are increasing in both layouts, so a masked read keeps their order.
            assert torch.equal(new[~mask].view(remap.old_shape), old), key
            assert torch.all(new[mask] == fills.get(key, 0.0)), key


@pytest.mark.parametrize("layout", ["append", "head_dim"])
@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_reset_new_layout(optimizer_name: str, layout: str) -> None:
    factory, fills = OPTIMIZERS[optimizer_name]
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = factory(model.parameters())
    train(model, [optimizer])
    before = snapshot_state(optimizer)
    remaps = linear_remaps(layout)

    old, new, _ = grow(model, optimizer, remaps)

    assert param_ids(optimizer) == [id(new["weight"]), id(new["bias"])]
    for name in ("weight", "bias"):
        assert old[name] not in optimizer.state
        check_reset_new(before[id(old[name])], optimizer.state[new[name]], remaps[name], fills)


def test_grown_model_trains_after_growth() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    _, new, _ = grow(model, optimizer, linear_remaps("append"))
    before = new["weight"].detach().clone()

    train(model, [optimizer], steps=1)

    assert not torch.equal(new["weight"].detach(), before)
    assert float(optimizer.state[new["weight"]]["step"]) == 4.0


def test_reset_all_zeroes_state_keeps_step() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    remaps = linear_remaps("append")

    _, new, _ = grow(model, optimizer, remaps, OptimizerPolicy(kind="reset_all"))

    state = optimizer.state[new["weight"]]
    assert float(state["step"]) == 3.0
    for key in ("exp_avg", "exp_avg_sq"):
        assert state[key].shape == (8, 3)
        assert torch.all(state[key] == 0)


@pytest.mark.parametrize("layout", ["append", "head_dim"])
def test_copy_gathers_source_state(layout: str) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    before = snapshot_state(optimizer)
    remaps = linear_remaps(layout)
    weight = model.weight

    _, new, _ = grow(model, optimizer, remaps, OptimizerPolicy(kind="copy"))

    source = remaps["weight"].dims[0].source_tensor()
    for key in ("exp_avg", "exp_avg_sq"):
        old_value = before[id(weight)][key]
        assert torch.equal(optimizer.state[new["weight"]][key], old_value[source])


def test_adafactor_factored_rows_grow() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adafactor(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    weight = model.weight
    before = snapshot_state(optimizer)[id(weight)]
    assert before["row_var"].shape == (4, 1)
    assert before["col_var"].shape == (1, 3)

    _, new, _ = grow(model, optimizer, linear_remaps("append"))

    state = optimizer.state[new["weight"]]
    assert state["row_var"].shape == (8, 1)
    assert torch.equal(state["row_var"][:4], before["row_var"])
    assert torch.all(state["row_var"][4:] == 0)
    assert torch.equal(state["col_var"], before["col_var"])  # a mean over rows: kept
    assert torch.equal(state["step"], before["step"])
    assert optimizer.state[new["bias"]]["variance"].shape == (8,)


def test_adafactor_factored_columns_grow() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adafactor(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    weight = model.weight
    before = snapshot_state(optimizer)[id(weight)]
    remaps = {
        "weight": ParamRemap(
            name="weight",
            old_shape=(4, 3),
            new_shape=(4, 6),
            dims={1: DimRemap.append_cyclic(3, 6)},
        )
    }

    _, new, _ = grow(model, optimizer, remaps)

    state = optimizer.state[new["weight"]]
    assert torch.equal(state["row_var"], before["row_var"])
    assert state["col_var"].shape == (1, 6)
    assert torch.equal(state["col_var"][:, :3], before["col_var"])
    assert torch.all(state["col_var"][:, 3:] == 0)


def test_adafactor_size_one_dim_follows_rule() -> None:
    # Rows 1 -> 2 on a [1, 3] weight: col_var [1, 3] equals the old weight shape, but it is a
    # mean over rows, so it must not grow.
    param = nn.Parameter(torch.randn(1, 3))
    optimizer = torch.optim.Adafactor([param], lr=1e-2)
    param.grad = torch.randn(1, 3)
    optimizer.step()
    col_var = optimizer.state[param]["col_var"].clone()
    remap = rows_remap("w", (1, 3), 2)
    new = nn.Parameter(remap.gather_sources(param.detach()))

    prepare_state_remap(
        optimizer, {"w": param}, {"w": new}, {"w": remap}, OptimizerPolicy()
    ).commit()

    assert optimizer.state[new]["row_var"].shape == (2, 1)
    assert torch.equal(optimizer.state[new]["col_var"], col_var)


def test_keepdim_and_dropped_dims_inferred() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4, bias=False)
    optimizer = RowStats(model.parameters())
    train(model, [optimizer])
    before = snapshot_state(optimizer)[id(model.weight)]

    _, new, _ = grow(model, optimizer, {"weight": rows_remap("weight", (4, 3), 8)})

    state = optimizer.state[new["weight"]]
    assert state["row_keepdim"].shape == (8, 1)
    assert torch.equal(state["row_keepdim"][:4], before["row_keepdim"])
    assert torch.all(state["row_keepdim"][4:] == 0)
    assert state["row_dropped"].shape == (8,)
    assert torch.equal(state["row_dropped"][:4], before["row_dropped"])
    assert torch.equal(state["col_dropped"], before["col_dropped"])  # reduced over the grown rows


def test_torch_muon_beside_adamw() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    muon = torch.optim.Muon([model.weight], lr=0.02)
    adamw = torch.optim.AdamW([model.bias], lr=1e-2)
    train(model, [muon, adamw])
    before = {**snapshot_state(muon), **snapshot_state(adamw)}
    remaps = linear_remaps("append")
    old_weight, old_bias = model.weight, model.bias

    _, new, _ = grow(model, [muon, adamw], remaps)

    assert param_ids(muon) == [id(new["weight"])]
    assert param_ids(adamw) == [id(new["bias"])]
    check_reset_new(before[id(old_weight)], muon.state[new["weight"]], remaps["weight"], {})
    check_reset_new(before[id(old_bias)], adamw.state[new["bias"]], remaps["bias"], {})


# ---- swap mechanics -------------------------------------------------------------------------


def test_rollback_restores_identical_objects() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    group = optimizer.param_groups[0]
    params_list = group["params"]
    params = list(params_list)
    states = [optimizer.state[p] for p in params]
    values = [dict(s) for s in states]

    _, _, swap = grow(model, optimizer, linear_remaps("append"))
    swap.rollback()

    assert optimizer.param_groups[0] is group
    assert group["params"] is params_list
    assert [id(p) for p in group["params"]] == [id(p) for p in params]
    assert len(optimizer.state) == 2
    for param, state, value in zip(params, states, values):
        assert optimizer.state[param] is state
        assert all(state[k] is v for k, v in value.items())


def test_prepare_changes_nothing() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    params = list(model.parameters())
    before = snapshot_state(optimizer)
    remaps = linear_remaps("append")

    prepare_state_remap(
        optimizer,
        dict(model.named_parameters()),
        replacements(model, remaps),
        remaps,
        OptimizerPolicy(),
    )

    assert param_ids(optimizer) == [id(p) for p in params]
    after = snapshot_state(optimizer)
    for pid, state in before.items():
        for key, value in state.items():
            assert torch.equal(after[pid][key], value)


def test_commit_after_step_raises() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    remaps = linear_remaps("append")
    swap = prepare_state_remap(
        optimizer,
        dict(model.named_parameters()),
        replacements(model, remaps),
        remaps,
        OptimizerPolicy(),
    )
    train(model, [optimizer], steps=1)  # the first step creates state the swap never saw

    with pytest.raises(RuntimeError, match="changed between"):
        swap.commit()


def test_commit_twice_raises() -> None:
    model = nn.Linear(3, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _, _, swap = grow(model, optimizer, linear_remaps("append"))

    with pytest.raises(RuntimeError, match="twice"):
        swap.commit()


def test_growth_before_first_step_swaps_params() -> None:
    model = nn.Linear(3, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    _, new, swap = grow(model, optimizer, linear_remaps("append"))

    assert param_ids(optimizer) == [id(new["weight"]), id(new["bias"])]
    assert len(optimizer.state) == 0
    assert "none yet for 2" in swap.summary
    train(model, [optimizer], steps=1)
    assert optimizer.state[new["weight"]]["exp_avg"].shape == (8, 3)


def test_unwidened_params_keep_state() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    untouched = model[1].bias
    untouched_state = optimizer.state[untouched]
    remaps = {"0.bias": rows_remap("0.bias", (4,), 8)}

    grow(model, optimizer, remaps)

    assert optimizer.state[untouched] is untouched_state
    assert model[1].bias is untouched


def test_same_shape_replacement_moves_state_dict() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    old_bias = model.bias
    state = optimizer.state[old_bias]
    new_bias = nn.Parameter(old_bias.detach().clone())

    prepare_state_remap(
        optimizer, {"bias": old_bias}, {"bias": new_bias}, {}, OptimizerPolicy()
    ).commit()

    assert optimizer.state[new_bias] is state
    assert old_bias not in optimizer.state


def test_in_place_data_swap_remaps_state() -> None:
    # The replacement may be the same Parameter object with its data swapped.
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    weight = model.weight
    exp_avg = optimizer.state[weight]["exp_avg"].clone()
    remap = rows_remap("weight", (4, 3), 8)
    weight.data = remap.gather_sources(weight.detach())

    prepare_state_remap(
        optimizer, {"weight": weight}, {"weight": weight}, {"weight": remap}, OptimizerPolicy()
    ).commit()

    assert torch.equal(optimizer.state[weight]["exp_avg"][:4], exp_avg)
    assert optimizer.state[weight]["exp_avg"].shape == (8, 3)


def test_float64_state_keeps_dtype() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4).double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train(model, [optimizer])

    _, new, _ = grow(model, optimizer, linear_remaps("head_dim"))

    assert optimizer.state[new["weight"]]["exp_avg"].dtype == torch.float64
    assert (
        optimizer.state[new["weight"]]["step"].dtype == optimizer.state[new["bias"]]["step"].dtype
    )


def test_tied_parameters_share_one_state() -> None:
    torch.manual_seed(0)
    model = Parallel()
    model.b.weight = model.a.weight  # one Parameter under two names
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, [optimizer])
    shared = model.a.weight
    exp_avg = optimizer.state[shared]["exp_avg"].clone()
    remap = rows_remap("a.weight", (4, 3), 8)
    new = nn.Parameter(remap.gather_sources(shared.detach()))
    old_params = {"a.weight": shared, "b.weight": shared}
    new_params = {"a.weight": new, "b.weight": new}

    prepare_state_remap(
        optimizer, old_params, new_params, {"a.weight": remap, "b.weight": remap}, OptimizerPolicy()
    ).commit()

    assert param_ids(optimizer) == [id(new)]
    assert len(optimizer.state) == 1
    assert torch.equal(optimizer.state[new]["exp_avg"][:4], exp_avg)


def test_tied_parameters_need_one_replacement() -> None:
    shared = nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.SGD([shared], lr=0.1)
    remap = rows_remap("a", (4, 3), 8)
    new_a = nn.Parameter(torch.zeros(8, 3))
    new_b = nn.Parameter(torch.zeros(8, 3))

    with pytest.raises(GrowthError, match="'a' and 'b' are tied"):
        prepare_state_remap(
            optimizer,
            {"a": shared, "b": shared},
            {"a": new_a, "b": new_b},
            {"a": remap, "b": remap},
            OptimizerPolicy(),
        )


# ---- parameters outside the optimizer -------------------------------------------------------


def test_frozen_param_outside_optimizer_allowed() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    model.bias.requires_grad_(False)
    optimizer = torch.optim.Adam([model.weight], lr=1e-2)
    train(model, [optimizer])

    _, new, _ = grow(model, optimizer, linear_remaps("append"))

    assert param_ids(optimizer) == [id(new["weight"])]


def test_trainable_param_outside_optimizer_raises() -> None:
    model = nn.Linear(3, 4)
    optimizer = torch.optim.Adam([model.weight], lr=1e-2)
    remaps = linear_remaps("append")

    with pytest.raises(
        GrowthError, match=r"parameter 'bias' requires grad but is in no param group"
    ):
        prepare_state_remap(
            optimizer,
            dict(model.named_parameters()),
            replacements(model, remaps),
            remaps,
            OptimizerPolicy(),
        )


# ---- errors ---------------------------------------------------------------------------------


def test_unrelated_state_shape_raises_and_changes_nothing() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 4, bias=False)
    optimizer = OddState(model.parameters())
    train(model, [optimizer])
    weight = model.weight
    state = optimizer.state[weight]
    remaps = {"weight": rows_remap("weight", (4, 3), 8)}

    with pytest.raises(OptimizerStateError) as error:
        prepare_state_remap(
            optimizer,
            dict(model.named_parameters()),
            replacements(model, remaps),
            remaps,
            OptimizerPolicy(),
        )

    message = str(error.value)
    assert "'history'" in message
    assert "'weight'" in message
    assert "(7,)" in message
    assert "(4, 3)" in message
    assert "register_state_rule(OddState, 'history', rule)" in message
    assert param_ids(optimizer) == [id(weight)]
    assert optimizer.state[weight] is state


def test_registered_rule_handles_unrelated_state() -> None:
    class OddStateWithRule(OddState):
        pass

    def keep_history(ctx: StateContext) -> torch.Tensor:
        return ctx.value.clone()

    register_state_rule(OddStateWithRule, "history", keep_history)
    torch.manual_seed(0)
    model = nn.Linear(3, 4, bias=False)
    optimizer = OddStateWithRule(model.parameters())
    train(model, [optimizer])

    _, new, _ = grow(model, optimizer, {"weight": rows_remap("weight", (4, 3), 8)})

    assert torch.equal(optimizer.state[new["weight"]]["history"], torch.arange(7.0))


def test_rule_with_reduced_dims_via_remap_state() -> None:
    class RowStatsWithRule(RowStats):
        pass

    register_state_rule(
        RowStatsWithRule, "row_keepdim", lambda ctx: remap_state(ctx, reduced_dims=(1,), fill=2.0)
    )
    torch.manual_seed(0)
    model = nn.Linear(3, 4, bias=False)
    optimizer = RowStatsWithRule(model.parameters())
    train(model, [optimizer])

    _, new, _ = grow(model, optimizer, {"weight": rows_remap("weight", (4, 3), 8)})

    assert torch.all(optimizer.state[new["weight"]]["row_keepdim"][4:] == 2.0)


def test_container_state_raises() -> None:
    param = nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    optimizer.state[param]["history"] = [torch.zeros(4, 3)]
    remap = rows_remap("w", (4, 3), 8)

    with pytest.raises(OptimizerStateError, match="'history' of parameter 'w'.*it is a list"):
        prepare_state_remap(
            optimizer,
            {"w": param},
            {"w": nn.Parameter(torch.zeros(8, 3))},
            {"w": remap},
            OptimizerPolicy(),
        )


def test_lbfgs_rejected() -> None:
    param = nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.LBFGS([param])
    remap = rows_remap("w", (4, 3), 8)

    with pytest.raises(OptimizerStateError, match="LBFGS keeps one state for all parameters"):
        prepare_state_remap(
            optimizer,
            {"w": param},
            {"w": nn.Parameter(torch.zeros(8, 3))},
            {"w": remap},
            OptimizerPolicy(),
        )


@pytest.mark.parametrize(
    ("old_params", "new_shape", "remap_shape", "message"),
    [
        ({}, (8, 3), (8, 3), "no current Parameter"),
        ({"w": (4, 3)}, (8, 3), None, "changes shape"),
        ({"w": (5, 3)}, (8, 3), (8, 3), "current Parameter has shape"),
        ({"w": (4, 3)}, (9, 3), (8, 3), "replacement has shape"),
    ],
    ids=["missing_old", "no_remap", "old_shape_mismatch", "new_shape_mismatch"],
)
def test_inconsistent_arguments_raise(
    old_params: dict[str, tuple[int, ...]],
    new_shape: tuple[int, ...],
    remap_shape: tuple[int, ...] | None,
    message: str,
) -> None:
    olds = {name: nn.Parameter(torch.zeros(shape)) for name, shape in old_params.items()}
    optimizer = torch.optim.SGD(list(olds.values()) or [nn.Parameter(torch.zeros(1))], lr=0.1)
    remaps = {} if remap_shape is None else {"w": rows_remap("w", (4, 3), remap_shape[0])}

    with pytest.raises(GrowthError, match=message):
        prepare_state_remap(
            optimizer, olds, {"w": nn.Parameter(torch.zeros(new_shape))}, remaps, OptimizerPolicy()
        )


def test_remap_without_replacement_raises() -> None:
    param = nn.Parameter(torch.zeros(4, 3))
    optimizer = torch.optim.SGD([param], lr=0.1)

    with pytest.raises(GrowthError, match="'w' has a remap but no replacement"):
        prepare_state_remap(
            optimizer, {"w": param}, {}, {"w": rows_remap("w", (4, 3), 8)}, OptimizerPolicy()
        )


# ---- index maps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old_position", "source", "message"),
    [
        ((0, -1), (0, 0, 1), "outside"),
        ((0, 5), (0, 0, 1), "outside"),
        ((0, 1), (0, 1, 7), "source index 7"),
        ((0, 0), (0, 1, 1), "source differs"),
    ],
    ids=["negative_position", "position_past_end", "source_past_end", "repeated_position"],
)
def test_dim_remap_rejects_bad_maps(
    old_position: tuple[int, ...], source: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DimRemap(old_size=2, new_size=3, old_position=old_position, source=source)


def test_param_remap_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="dim 0 goes 4 -> 5, but its DimRemap goes 4 -> 8"):
        ParamRemap(
            name="w", old_shape=(4, 3), new_shape=(5, 3), dims={0: DimRemap.append_cyclic(4, 8)}
        )
    with pytest.raises(ValueError, match="dim 1 goes 3 -> 4 without a DimRemap"):
        ParamRemap(
            name="w", old_shape=(4, 3), new_shape=(8, 4), dims={0: DimRemap.append_cyclic(4, 8)}
        )


def test_place_old_on_two_remapped_dims() -> None:
    remap = ParamRemap(
        name="w",
        old_shape=(4, 4),
        new_shape=(6, 6),
        dims={0: head_dim_remap(2, 2, 3), 1: DimRemap.append_cyclic(4, 6)},
    )
    old = torch.arange(16.0).view(4, 4)

    placed = remap.place_old(old, torch.full((6, 6), -1.0))

    assert torch.equal(placed[~remap.new_mask()].view(4, 4), old)
    assert torch.all(placed[remap.new_mask()] == -1.0)
    assert torch.equal(remap.gather_sources(old)[~remap.new_mask()].view(4, 4), old)


def test_gather_sources_never_aliases() -> None:
    remap = ParamRemap(name="w", old_shape=(2,), new_shape=(2,), dims={})
    old = torch.zeros(2)

    assert remap.gather_sources(old) is not old
