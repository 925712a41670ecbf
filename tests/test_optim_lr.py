"""Per-entry learning rates after growth: the re-warmup curve and the step hooks of EntryLR.

Exactness checks run in float64 and compare against reference optimizers that see the same
gradients: an un-grown copy for the old entries, and an optimizer at the re-warmup lr for
the new ones.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sparkling_ir.compile.remap import DimRemap, ParamRemap
from sparkling_ir.errors import GrowthError
from sparkling_ir.optim import EntryLR, prepare_state_remap, rewarmup_lr
from sparkling_ir.schedule.ir import InheritLR, LRPolicy, OptimizerPolicy, RewarmupLR

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

TOTAL_STEPS = 40
MIN_LR = 1e-4
REWARMUP = RewarmupLR(warmup_steps=4, peak_factor=1.5)


# ---- the curve ------------------------------------------------------------------------------


def test_rewarmup_starts_at_eta_e() -> None:
    assert (
        rewarmup_lr(0.1, 0, warmup_steps=10, peak_factor=1.3, decay_steps=100, min_lr=0.001) == 0.1
    )


def test_rewarmup_reaches_peak_after_warmup() -> None:
    lr = rewarmup_lr(0.1, 10, warmup_steps=10, peak_factor=1.3, decay_steps=100, min_lr=0.001)
    assert lr == pytest.approx(0.13, rel=1e-12)


def test_rewarmup_ramp_is_linear() -> None:
    lr = rewarmup_lr(0.1, 5, warmup_steps=10, peak_factor=1.3, decay_steps=100, min_lr=0.001)
    assert lr == pytest.approx(0.115, rel=1e-12)


def test_rewarmup_cosine_midpoint() -> None:
    lr = rewarmup_lr(0.1, 60, warmup_steps=10, peak_factor=1.3, decay_steps=100, min_lr=0.001)
    assert lr == pytest.approx((0.13 + 0.001) / 2, rel=1e-12)


def test_rewarmup_ends_at_min_lr() -> None:
    assert (
        rewarmup_lr(0.1, 110, warmup_steps=10, peak_factor=1.3, decay_steps=100, min_lr=0.001)
        == 0.001
    )
    assert (
        rewarmup_lr(0.1, 500, warmup_steps=10, peak_factor=1.3, decay_steps=100, min_lr=0.001)
        == 0.001
    )


def test_rewarmup_without_warmup_starts_at_peak() -> None:
    assert rewarmup_lr(
        0.1, 0, warmup_steps=0, peak_factor=1.3, decay_steps=100, min_lr=0.0
    ) == pytest.approx(0.13)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps_since_growth": -1},
        {"warmup_steps": -1},
        {"decay_steps": -1},
        {"peak_factor": 0.0},
        {"eta_e": -0.1},
        {"min_lr": -1e-3},
    ],
    ids=[
        "negative_step",
        "negative_warmup",
        "negative_decay",
        "zero_peak",
        "negative_eta",
        "negative_min",
    ],
)
def test_rewarmup_rejects_invalid_arguments(kwargs: dict[str, float]) -> None:
    arguments: dict[str, Any] = {
        "eta_e": 0.1,
        "steps_since_growth": 0,
        "warmup_steps": 10,
        "peak_factor": 1.3,
        "decay_steps": 100,
        "min_lr": 0.0,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError):
        rewarmup_lr(**arguments)


@given(
    eta_e=st.floats(1e-6, 1.0),
    warmup=st.integers(0, 300),
    peak_factor=st.floats(0.5, 3.0),
    decay=st.integers(0, 3000),
    min_fraction=st.floats(0.0, 2.0),
    step=st.integers(0, 4000),
)
def test_rewarmup_curve_properties(
    eta_e: float, warmup: int, peak_factor: float, decay: int, min_fraction: float, step: int
) -> None:
    min_lr = min_fraction * eta_e

    def lr(k: int) -> float:
        return rewarmup_lr(eta_e, k, warmup, peak_factor, decay, min_lr)

    peak = peak_factor * eta_e
    tolerance = 1e-12 * max(eta_e, peak, min_lr)
    assert min(eta_e, peak, min_lr) - tolerance <= lr(step) <= max(eta_e, peak, min_lr) + tolerance
    if warmup > 0:
        assert lr(0) == eta_e
    if decay > 0:
        assert math.isclose(lr(warmup), peak, rel_tol=1e-12)
    assert lr(warmup + decay) == min_lr
    assert lr(warmup + decay + step) == min_lr

    # Each piece is monotone in the direction of its end point.
    if step + 1 < warmup:
        assert (lr(step + 1) - lr(step)) * (peak - eta_e) >= -tolerance
    elif warmup <= step < warmup + decay:
        assert (lr(step + 1) - lr(step)) * (min_lr - peak) >= -tolerance


# ---- growth helpers -------------------------------------------------------------------------


def rows_remap(name: str, old_shape: tuple[int, ...], new_rows: int) -> ParamRemap:
    return ParamRemap(
        name=name,
        old_shape=old_shape,
        new_shape=(new_rows, *old_shape[1:]),
        dims={0: DimRemap.append_cyclic(old_shape[0], new_rows)},
    )


def install(model: nn.Module, new_params: Mapping[str, nn.Parameter]) -> None:
    for name, param in new_params.items():
        module_name, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(module_name), leaf, param)


def grow(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    entry_lr: EntryLR,
    remaps: Mapping[str, ParamRemap],
    *,
    event_id: int = 1,
    policy: OptimizerPolicy = OptimizerPolicy(),
    lr_policy: LRPolicy = REWARMUP,
    scales: Mapping[str, float] | None = None,
) -> dict[str, nn.Parameter]:
    """Widen `model` as the compiler does: prepare both swaps, install, commit."""
    old = dict(model.named_parameters())
    new = {}
    for name, remap in remaps.items():
        value = remap.gather_sources(old[name].detach()) * (scales or {}).get(name, 1.0)
        new[name] = nn.Parameter(value)
    state_swap = prepare_state_remap(optimizer, old, new, remaps, policy)
    label_swap = entry_lr.prepare_growth(event_id, None, lr_policy, remaps)
    install(model, new)
    state_swap.commit()
    label_swap.commit()
    return new


def random_grads(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(p.shape, generator=generator, dtype=p.dtype)
        for name, p in model.named_parameters()
    }


def set_grads(model: nn.Module, grads: Mapping[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        p.grad = grads[name].clone()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def base_lr(step: int) -> float:
    """The user's own schedule for the old entries: a linear decay."""
    return 0.05 * (1.0 - step / (2 * TOTAL_STEPS))


def sgd_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, seed: int
) -> dict[str, torch.Tensor]:
    """One step with random gradients; returns each entry's effective lr, -(change) / grad."""
    grads = random_grads(model, seed)
    set_grads(model, grads)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer.step()
    return {name: (before[name] - p.detach()) / grads[name] for name, p in model.named_parameters()}


def new_model(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(3, 4, bias=bias).double()


# ---- exact updates after growth -------------------------------------------------------------

EXACT: dict[str, OptimizerFactory] = {
    "adamw_wd": lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.9, 0.95), weight_decay=0.1),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.05),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=0.01),
}


def standalone_new_entries(
    model: nn.Module, optimizer: torch.optim.Optimizer, factory: OptimizerFactory, old_rows: int
) -> tuple[dict[str, nn.Parameter], torch.optim.Optimizer]:
    """A separate optimizer over copies of the new rows, with their state after growth."""
    params = {
        name: nn.Parameter(p.detach()[old_rows:].clone()) for name, p in model.named_parameters()
    }
    reference = factory(params.values())
    for name, p in model.named_parameters():
        reference.state[params[name]] = {
            key: value[old_rows:].clone() if value.dim() else value.clone()
            for key, value in optimizer.state[p].items()
        }
    return params, reference


@pytest.mark.parametrize("optimizer_name", list(EXACT))
def test_updates_after_growth_match_references(optimizer_name: str) -> None:
    factory = EXACT[optimizer_name]
    model = new_model()
    optimizer = factory(model.parameters())
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    for step in range(3):
        set_lr(optimizer, base_lr(step))
        set_grads(model, random_grads(model, seed=step))
        optimizer.step()

    # The un-grown twin continues with the same state; growth at step 3 doubles the rows.
    twin = copy.deepcopy(model)
    twin_optimizer = factory(twin.parameters())
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    grow(
        model,
        optimizer,
        entry_lr,
        {n: rows_remap(n, tuple(p.shape), 8) for n, p in model.named_parameters()},
    )
    new_params, reference = standalone_new_entries(model, optimizer, factory, old_rows=4)

    for step in range(3, 9):
        grads = random_grads(model, seed=step)
        for name, p in twin.named_parameters():
            p.grad = grads[name][:4].clone()
        for name, p in new_params.items():
            p.grad = grads[name][4:].clone()
        set_grads(model, grads)
        set_lr(optimizer, base_lr(step))
        set_lr(twin_optimizer, base_lr(step))
        expected_lr = rewarmup_lr(base_lr(3), step - 3, 4, 1.5, TOTAL_STEPS - 3 - 4, MIN_LR)
        assert entry_lr.new_entry_lr() == pytest.approx(expected_lr, rel=1e-15)
        set_lr(reference, expected_lr)

        optimizer.step()
        twin_optimizer.step()
        reference.step()

        for name, p in model.named_parameters():
            assert torch.equal(p.detach()[:4], twin.get_parameter(name).detach()), (name, step)
            torch.testing.assert_close(
                p.detach()[4:], new_params[name].detach(), rtol=1e-13, atol=1e-15
            )


class MuonLike(torch.optim.Optimizer):
    """Momentum, then an orthogonalised (Newton-Schulz) update of the whole matrix."""

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
                x = buffer / (buffer.norm() + 1e-7)
                for _ in range(5):
                    x = 1.5 * x - 0.5 * (x @ x.T) @ x
                p.add_(x, alpha=-group["lr"])


class LionLike(torch.optim.Optimizer):
    """Sign of an interpolated momentum with decoupled weight decay."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float = 1e-3, weight_decay: float = 0.1):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                exp_avg = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                update = (0.9 * exp_avg + 0.1 * p.grad).sign()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
                exp_avg.mul_(0.99).add_(p.grad, alpha=0.01)


PROPORTIONAL: dict[str, OptimizerFactory] = {
    "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "adam_l2": lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.1),
    "adamw_amsgrad": lambda ps: torch.optim.AdamW(ps, lr=0.01, amsgrad=True),
    "rmsprop_momentum": lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.9, centered=True),
    "adagrad_decay": lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.01),
    "adamax": lambda ps: torch.optim.Adamax(ps, lr=0.01),
    "nadam": lambda ps: torch.optim.NAdam(
        ps, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True
    ),
    "radam": lambda ps: torch.optim.RAdam(ps, lr=0.01),
    "adadelta": lambda ps: torch.optim.Adadelta(ps, lr=1.0),
    "adafactor": lambda ps: torch.optim.Adafactor(ps, lr=1e-3, weight_decay=0.1),
    "muon": lambda ps: torch.optim.Muon(ps, lr=0.02, weight_decay=0.1),
    "muon_like": lambda ps: MuonLike(ps),
    "lion_like": lambda ps: LionLike(ps),
}


@pytest.mark.parametrize("optimizer_name", list(PROPORTIONAL))
def test_new_entries_step_as_at_their_lr(optimizer_name: str) -> None:
    factory = PROPORTIONAL[optimizer_name]
    model = new_model(bias=False)  # torch.optim.Muon takes matrices only
    optimizer = factory(model.parameters())
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    for step in range(5):
        if step == 3:
            grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 8)})
        set_grads(model, random_grads(model, seed=step))
        optimizer.step()

    # References: the same parameter and state, stepped with one lr for every entry.
    grads = random_grads(model, seed=99)
    group_lr = float(optimizer.param_groups[0]["lr"])
    new_lr = entry_lr.new_entry_lr()
    assert new_lr is not None and new_lr != pytest.approx(group_lr)
    references = {}
    for label, lr in (("old", group_lr), ("new", new_lr)):
        param = nn.Parameter(model.weight.detach().clone())
        reference = factory([param])
        # A copy of the state as it is; load_state_dict would cast NAdam's mu_product.
        reference.state[param] = copy.deepcopy(optimizer.state[model.weight])
        set_lr(reference, lr)
        param.grad = grads["weight"].clone()
        reference.step()
        references[label] = param.detach()
    set_grads(model, grads)

    optimizer.step()

    weight = model.weight.detach()
    assert torch.equal(weight[:4], references["old"][:4])
    torch.testing.assert_close(weight[4:], references["new"][4:], rtol=1e-12, atol=1e-14)


# ---- labels and events ----------------------------------------------------------------------


def insert_rows_remap() -> ParamRemap:
    """Rows 6 -> 8 with new rows inserted at positions 3 and 7 (copies of rows 0 and 1)."""
    dim = DimRemap(
        old_size=6, new_size=8, old_position=(0, 1, 2, 4, 5, 6), source=(0, 1, 2, 0, 3, 4, 5, 1)
    )
    return ParamRemap(name="weight", old_shape=(6, 3), new_shape=(8, 3), dims={0: dim})


def test_grown_twice_labels_move_and_both_rewarm() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    assert entry_lr.new_entry_lr() is None
    sgd_step(model, optimizer, seed=0)
    grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 6)}, event_id=1)
    for seed in (1, 2):
        sgd_step(model, optimizer, seed)
    set_lr(optimizer, 0.08)  # the user's schedule moves the group lr; event 2 starts from it
    grow(model, optimizer, entry_lr, {"weight": insert_rows_remap()}, event_id=2)

    labels = entry_lr.labels("weight")
    assert labels is not None
    assert labels[:, 0].tolist() == [0, 0, 0, 2, 0, 1, 1, 2]
    assert torch.all(labels == labels[:, :1])

    sgd_step(model, optimizer, seed=3)  # event 2's first step, at the group lr
    lr_event_1 = entry_lr.entry_lr(1, 0)
    lr_event_2 = entry_lr.entry_lr(2, 0)
    # Event 1 fired after 1 step and event 2 after 3; 4 steps are complete now.
    assert lr_event_1 == pytest.approx(rewarmup_lr(0.1, 3, 4, 1.5, TOTAL_STEPS - 1 - 4, MIN_LR))
    assert lr_event_2 == pytest.approx(rewarmup_lr(0.08, 1, 4, 1.5, TOTAL_STEPS - 3 - 4, MIN_LR))
    assert entry_lr.new_entry_lr() == lr_event_2

    rates = sgd_step(model, optimizer, seed=4)["weight"]

    row_lrs = [0.08, 0.08, 0.08, lr_event_2, 0.08, lr_event_1, lr_event_1, lr_event_2]
    expected = torch.tensor(row_lrs, dtype=torch.float64)[:, None].expand(8, 3)
    torch.testing.assert_close(rates, expected, rtol=1e-9, atol=0)


def test_each_group_rewarms_from_its_own_lr() -> None:
    model = new_model()
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.01}], lr=0.1
    )
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=[1e-3, 1e-4])
    sgd_step(model, optimizer, seed=0)
    grow(
        model,
        optimizer,
        entry_lr,
        {n: rows_remap(n, tuple(p.shape), 8) for n, p in model.named_parameters()},
    )
    for seed in (1, 2):
        sgd_step(model, optimizer, seed)

    rates = sgd_step(model, optimizer, seed=3)

    weight_lr = rewarmup_lr(0.1, 2, 4, 1.5, TOTAL_STEPS - 1 - 4, 1e-3)
    bias_lr = rewarmup_lr(0.01, 2, 4, 1.5, TOTAL_STEPS - 1 - 4, 1e-4)
    torch.testing.assert_close(
        rates["weight"][4:], torch.full((4, 3), weight_lr, dtype=torch.float64)
    )
    torch.testing.assert_close(rates["bias"][4:], torch.full((4,), bias_lr, dtype=torch.float64))
    torch.testing.assert_close(rates["bias"][:4], torch.full((4,), 0.01, dtype=torch.float64))


def test_inherit_lr_follows_group_lr() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    grow(
        model,
        optimizer,
        entry_lr,
        {"weight": rows_remap("weight", (4, 3), 8)},
        lr_policy=InheritLR(),
    )
    sgd_step(model, optimizer, seed=0)

    rates = sgd_step(model, optimizer, seed=1)["weight"]

    torch.testing.assert_close(rates, torch.full((8, 3), 0.1, dtype=torch.float64))
    assert entry_lr.new_entry_lr() == 0.1


def test_first_step_after_growth_uses_group_lr() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 8)})

    rates = sgd_step(model, optimizer, seed=0)["weight"]

    torch.testing.assert_close(rates, torch.full((8, 3), 0.1, dtype=torch.float64))


def test_tied_parameter_rescaled_once() -> None:
    model = nn.Module()
    model.a = nn.Linear(3, 4, bias=False).double()
    model.b = nn.Linear(3, 4, bias=False).double()
    model.b.weight = model.a.weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    remap = rows_remap("a.weight", (4, 3), 8)
    new = nn.Parameter(remap.gather_sources(model.a.weight.detach()))
    prepare_state_remap(
        optimizer,
        {"a.weight": model.a.weight, "b.weight": model.a.weight},
        {"a.weight": new, "b.weight": new},
        {"a.weight": remap},
        OptimizerPolicy(),
    ).commit()
    label_swap = entry_lr.prepare_growth(1, None, REWARMUP, {"a.weight": remap, "b.weight": remap})
    model.a.weight = new
    model.b.weight = new
    label_swap.commit()
    sgd_step(model, optimizer, seed=0)
    expected = entry_lr.new_entry_lr()

    rates = sgd_step(model, optimizer, seed=1)["a.weight"]

    assert expected is not None
    torch.testing.assert_close(rates[4:], torch.full((4, 3), expected, dtype=torch.float64))


def test_label_rollback_forgets_event() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    swap = entry_lr.prepare_growth(1, 0, REWARMUP, {"weight": rows_remap("weight", (4, 3), 8)})
    swap.commit()

    swap.rollback()

    assert entry_lr.labels("weight") is None
    assert entry_lr.new_entry_lr() is None
    rates = sgd_step(model, optimizer, seed=0)["weight"]
    torch.testing.assert_close(rates, torch.full((4, 3), 0.1, dtype=torch.float64))


def test_remove_restores_group_lr() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 8)})
    sgd_step(model, optimizer, seed=0)

    entry_lr.remove()

    rates = sgd_step(model, optimizer, seed=1)["weight"]
    torch.testing.assert_close(rates, torch.full((8, 3), 0.1, dtype=torch.float64))


def test_state_dict_resumes_same_rates() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 8)})
    sgd_step(model, optimizer, seed=0)
    set_lr(optimizer, 0.05)
    expected = entry_lr.new_entry_lr()
    saved = copy.deepcopy(entry_lr.state_dict())
    entry_lr.remove()

    resumed = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    resumed.load_state_dict(saved)

    assert resumed.completed_steps == 1
    assert resumed.new_entry_lr() == expected
    rates = sgd_step(model, optimizer, seed=1)["weight"]
    assert expected is not None
    torch.testing.assert_close(rates[4:], torch.full((4, 3), expected, dtype=torch.float64))


# ---- warnings and errors --------------------------------------------------------------------


def test_zero_group_lr_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 8)})
    sgd_step(model, optimizer, seed=0)
    set_lr(optimizer, 0.0)

    with caplog.at_level(logging.WARNING, logger="sparkling_ir.optim.lr"):
        sgd_step(model, optimizer, seed=1)
        rates = sgd_step(model, optimizer, seed=2)["weight"]

    assert torch.all(rates == 0)
    messages = [r.getMessage() for r in caplog.records if "has lr 0" in r.getMessage()]
    assert len(messages) == 1


def test_adafactor_cap_warns(caplog: pytest.LogCaptureFixture) -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.Adafactor(model.parameters(), lr=0.5)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    for step in range(3):
        set_grads(model, random_grads(model, seed=step))
        optimizer.step()
    grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 8)})

    with caplog.at_level(logging.WARNING, logger="sparkling_ir.optim.lr"):
        for step in range(3, 5):
            set_grads(model, random_grads(model, seed=step))
            optimizer.step()

    assert any("Adafactor caps its relative step" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "factory",
    [
        lambda ps: torch.optim.LBFGS(ps),
        lambda ps: torch.optim.ASGD(ps),
        lambda ps: torch.optim.Rprop(ps),
    ],
    ids=["lbfgs", "asgd", "rprop"],
)
def test_rewarmup_rejected_for_non_proportional_optimizers(factory: OptimizerFactory) -> None:
    model = new_model(bias=False)
    optimizer = factory(model.parameters())
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    remaps = {"weight": rows_remap("weight", (4, 3), 8)}

    with pytest.raises(
        GrowthError, match=f"cannot re-warm new entries under {type(optimizer).__name__}"
    ):
        entry_lr.prepare_growth(1, 0, REWARMUP, remaps)
    entry_lr.prepare_growth(1, 0, InheritLR(), remaps)  # following the group lr is fine


def test_start_step_mismatch_raises() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)

    with pytest.raises(ValueError, match="start_step 5 differs from the 0 optimizer steps"):
        entry_lr.prepare_growth(1, 5, REWARMUP, {"weight": rows_remap("weight", (4, 3), 8)})


def test_event_ids_must_increase() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    grow(model, optimizer, entry_lr, {"weight": rows_remap("weight", (4, 3), 8)}, event_id=2)

    with pytest.raises(ValueError, match=r"event_id must be in 3\.\.127, got 2"):
        entry_lr.prepare_growth(2, None, REWARMUP, {"weight": rows_remap("weight", (8, 3), 16)})


def test_uninstalled_parameters_raise_at_step() -> None:
    model = new_model(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    entry_lr.prepare_growth(1, 0, REWARMUP, {"weight": rows_remap("weight", (4, 3), 8)}).commit()
    model.weight.grad = torch.zeros(4, 3, dtype=torch.float64)

    with pytest.raises(
        GrowthError,
        match=r"'weight' is a Parameter of shape \(4, 3\) but its entry labels have shape \(8, 3\)",
    ):
        optimizer.step()


# ---- symmetry -------------------------------------------------------------------------------


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def hidden_remaps() -> dict[str, ParamRemap]:
    """Hidden 4 -> 8 by copies: fc1 rows (fan-out) and fc2 columns (fan-in)."""
    hidden = DimRemap.append_cyclic(4, 8)
    return {
        "fc1.weight": ParamRemap(
            name="fc1.weight", old_shape=(4, 3), new_shape=(8, 3), dims={0: hidden}
        ),
        "fc1.bias": ParamRemap(name="fc1.bias", old_shape=(4,), new_shape=(8,), dims={0: hidden}),
        "fc2.weight": ParamRemap(
            name="fc2.weight", old_shape=(2, 4), new_shape=(2, 8), dims={1: hidden}
        ),
    }


def train_grown(
    policy: OptimizerPolicy, lr_policy: LRPolicy
) -> tuple[TwoLayer, torch.Tensor, torch.Tensor]:
    """Train 3 steps, double the hidden width, train 5 more; returns model and outputs at growth."""
    torch.manual_seed(0)
    model = TwoLayer().double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    entry_lr = EntryLR(optimizer, model.get_parameter, total_steps=TOTAL_STEPS, min_lr=MIN_LR)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    target = torch.randn(16, 2, generator=generator, dtype=torch.float64)
    for step in range(8):
        if step == 3:
            before = model(x).detach()
            # Copy on both sides at 2x: fan-in columns times 1/2 keeps the function exactly.
            grow(
                model,
                optimizer,
                entry_lr,
                hidden_remaps(),
                policy=policy,
                lr_policy=lr_policy,
                scales={"fc2.weight": 0.5},
            )
            after = model(x).detach()
        (model(x) - target).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, before, after


def test_copy_and_inherit_keep_copies_locked() -> None:
    model, before, after = train_grown(OptimizerPolicy(kind="copy"), InheritLR())

    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-12)
    assert torch.equal(model.fc1.weight[:4], model.fc1.weight[4:])
    assert torch.equal(model.fc1.bias[:4], model.fc1.bias[4:])
    assert torch.equal(model.fc2.weight[:, :4], model.fc2.weight[:, 4:])


def test_reset_new_and_rewarmup_break_symmetry() -> None:
    model, before, after = train_grown(OptimizerPolicy(kind="reset_new"), REWARMUP)

    torch.testing.assert_close(after, before, rtol=1e-12, atol=1e-12)
    assert (model.fc1.weight[:4] - model.fc1.weight[4:]).abs().max() > 1e-4
    assert (model.fc2.weight[:, :4] - model.fc2.weight[:, 4:]).abs().max() > 1e-4
