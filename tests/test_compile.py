"""The growth compiler: binding errors, fan-in scales, index maps and all-or-nothing emit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sparkling_ir.analysis import analyse_model
from sparkling_ir.compile.emit import apply_plan
from sparkling_ir.compile.plan import check_events, fan_in_scale, plan_growth
from sparkling_ir.compile.propagate import compose_concat, compose_factor
from sparkling_ir.compile.remap import DimRemap
from sparkling_ir.errors import BindError, GrowthError
from sparkling_ir.models.nanogpt import GPT, GPTConfig
from sparkling_ir.schedule.ir import AtStep, ByFactor, GrowthEvent, Span, ToSize, Widen


def event(*widens: Widen) -> GrowthEvent:
    return GrowthEvent(trigger=AtStep(step=1), widens=widens)


def widen(axis: str, factor: float | None = None, size: int | None = None,
          span: Span | None = None) -> Widen:
    amount = ByFactor(factor=factor) if factor is not None else ToSize(size=size or 0)
    return Widen(axis=axis, amount=amount, span=span)  # type: ignore[arg-type]


@pytest.fixture
def gpt() -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_embd=16, ffn_dim=24, n_head=2, head_dim=4)), torch.randint(0, 256, (2, 6))


# ---- fan-in alpha -------------------------------------------------------------------------------


@pytest.mark.parametrize("old, new, expected", [
    (64, 128, 0.5),                         # 2x: c = 1, 1 / sqrt(1 + 3)
    (64, 96, 1 / math.sqrt(1 + 3 * 0.5)),   # c = 0.5, each old dim copied at most once
    (64, 192, 1 / 3),                       # uniform replication x3: d / d'
    (64, 256, 1 / 4),
])
def test_sparkling_alpha_matches_table(old: int, new: int, expected: float) -> None:
    assert fan_in_scale(DimRemap.append_cyclic(old, new), "sparkling") == pytest.approx(expected)


@pytest.mark.parametrize("init", ["random", "zero"])
def test_random_and_zero_alpha_is_sqrt_ratio(init: str) -> None:
    remap = DimRemap.append_cyclic(64, 128)
    assert fan_in_scale(remap, init) == pytest.approx(math.sqrt(0.5))  # type: ignore[arg-type]


def test_factor_composition_interleaves_head_dim() -> None:
    # (heads 2, head_dim 2 -> 3): the flat dim keeps each head's entries together.
    heads = DimRemap.append_cyclic(2, 2)
    head_dim = DimRemap.append_cyclic(2, 3)
    flat = compose_factor([heads, head_dim])
    assert flat.source == (0, 1, 0, 2, 3, 2)
    assert flat.old_position == (0, 1, 3, 4)


def test_concat_composition_offsets_segments() -> None:
    grown = DimRemap.append_cyclic(2, 4)
    fused = compose_concat([grown, grown, grown])
    assert fused.source == (0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5)
    assert fused.old_position == (0, 1, 4, 5, 8, 9)


# ---- binding errors -----------------------------------------------------------------------------


def test_unknown_axis_error_names_axes_and_location(gpt: tuple[GPT, torch.Tensor], tmp_path: Path) -> None:
    model, x = gpt
    source = tmp_path / "s.grow"
    source.write_text("line one\n    widen experts x2\n")
    span = Span(file=str(source), line=2, column=5)
    analysis = analyse_model(model, (x,))
    with pytest.raises(BindError) as caught:
        plan_growth(analysis.axes, model, event(widen("experts", 2.0, span=span)), 0)
    message = str(caught.value)
    assert message.startswith(f"{source}:2:5: error: cannot widen experts")
    assert "    widen experts x2\n        ^" in message


def test_non_integer_factor_is_rejected(gpt: tuple[GPT, torch.Tensor]) -> None:
    model, x = gpt
    analysis = analyse_model(model, (x,))
    with pytest.raises(BindError, match=r"x1\.3 gives 20\.8 for hidden \(size 16\)"):
        plan_growth(analysis.axes, model, event(widen("hidden", 1.3)), 0)


def test_shrinking_size_is_rejected(gpt: tuple[GPT, torch.Tensor]) -> None:
    model, x = gpt
    analysis = analyse_model(model, (x,))
    with pytest.raises(BindError, match="already has size 24; the new size must be larger"):
        plan_growth(analysis.axes, model, event(widen("ffn", size=20)), 0)


def test_all_errors_of_a_schedule_reported_together(gpt: tuple[GPT, torch.Tensor]) -> None:
    model, x = gpt
    analysis = analyse_model(model, (x,))
    events = [event(widen("hidden", 1.3), widen("kv_heads", 2.0)), event(widen("ffn", size=8))]
    with pytest.raises(BindError) as caught:
        check_events(analysis.axes, model, events)
    assert len(caught.value.diagnostics) == 3


def test_check_events_follows_sizes_across_events(gpt: tuple[GPT, torch.Tensor]) -> None:
    model, x = gpt
    analysis = analyse_model(model, (x,))
    # 16 -> 24 is fine, then x1.5 of 24 is 36; `to 30` after that is a shrink.
    check_events(analysis.axes, model, [event(widen("hidden", 1.5)), event(widen("hidden", 1.5))])
    with pytest.raises(BindError, match="already has size 36"):
        check_events(analysis.axes, model, [
            event(widen("hidden", 1.5)), event(widen("hidden", 1.5)), event(widen("hidden", size=30)),
        ])


# ---- all or nothing -----------------------------------------------------------------------------


class HardCodedHeads(nn.Module):
    """Attention whose head count is a literal in `view`, so growth cannot rewrite it."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(10, 8)
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 8)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        q, k, v = self.qkv(x).split(8, dim=2)
        q = q.view(2, 3, 2, 4).transpose(1, 2)
        k = k.view(2, 3, 2, 4).transpose(1, 2)
        v = v.view(2, 3, 2, 4).transpose(1, 2)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(2, 3, 8))


def test_failed_growth_leaves_model_and_optimizer_unchanged() -> None:
    torch.manual_seed(0)
    model = HardCodedHeads()
    x = torch.randint(0, 10, (2, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(x).sum().backward()
    optimizer.step()
    params_before = dict(model.named_parameters())
    state_before = {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer.state.items()}
    output_before = model(x).detach()
    analysis = analyse_model(model, (x,))
    plan = plan_growth(analysis.axes, model, event(widen("heads", 2.0)), 0)

    def verify() -> None:
        analyse_model(model, (x,))

    with pytest.raises(GrowthError, match="failed and was undone"):
        apply_plan(model, plan, optimizer=optimizer, entry_lr=None, verify=verify)
    assert dict(model.named_parameters()) == params_before
    assert all(a is b for a, b in zip(model.parameters(), params_before.values()))
    assert optimizer.param_groups[0]["params"] == list(params_before.values())
    for param, state in optimizer.state.items():
        for key, value in state.items():
            assert torch.equal(value, state_before[param][key])
    assert torch.equal(model(x).detach(), output_before)


def test_interrupted_growth_is_undone_to_same_objects(gpt: tuple[GPT, torch.Tensor]) -> None:
    model, x = gpt
    analysis = analyse_model(model, (x,))
    apply_plan(model, plan_growth(analysis.axes, model, event(widen("hidden", 2.0)), 0),
               optimizer=None, entry_lr=None, verify=lambda: None)
    params_before = list(model.parameters())
    scale_before = model.lm_head.logit_scale
    output_before = model(x).detach()
    analysis = analyse_model(model, (x,))
    plan = plan_growth(analysis.axes, model, event(widen("hidden", 2.0)), 1)

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        apply_plan(model, plan, optimizer=None, entry_lr=None, verify=interrupt)
    assert all(a is b for a, b in zip(model.parameters(), params_before, strict=True))
    assert model.lm_head.logit_scale is scale_before
    assert float(model.lm_head.logit_scale) == 0.5
    assert torch.equal(model(x).detach(), output_before)


def test_missing_axis_message_explains_frozen_axes() -> None:
    class Cumulative(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.Linear(4, 6)
            self.down = nn.Linear(6, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.down(torch.cumsum(self.up(x), dim=-1))

    model = Cumulative()
    analysis = analyse_model(model, (torch.randn(2, 4),))
    with pytest.raises(BindError) as caught:
        plan_growth(analysis.axes, model, event(widen("ffn", 2.0)), 0)
    message = str(caught.value)
    assert "this model has no ffn axis" in message
    assert "no dimension rule for function torch.cumsum" in message
