"""The equivalence harness: widen the bundled GPT and compare its outputs with the original.

SPARKLING's copy-copy initialisation at exactly 2x multiplies every fan-in layer by 1/2, which
both keeps each layer's RMS gain and preserves the function. These properties draw model
shapes and inputs with Hypothesis and grow hidden, ffn and heads.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkling_ir.analysis import analyse_model
from sparkling_ir.compile.emit import apply_plan
from sparkling_ir.compile.plan import plan_growth
from sparkling_ir.models.nanogpt import GPT, GPTConfig
from sparkling_ir.nn import ScaledLinear
from sparkling_ir.schedule.ir import AtStep, ByFactor, GrowthEvent, InitPolicy, Widen


def grow(model: torch.nn.Module, inputs: torch.Tensor, axes: tuple[str, ...],
         factor: float = 2.0, init: str = "sparkling") -> None:
    """Apply one event widening `axes` by `factor`, with no optimizer."""
    event = GrowthEvent(
        trigger=AtStep(step=1),
        widens=tuple(Widen(axis=a, amount=ByFactor(factor=factor)) for a in axes),  # type: ignore[arg-type]
        init=InitPolicy(method=init),  # type: ignore[arg-type]
    )
    analysis = analyse_model(model, (inputs,))
    plan = plan_growth(analysis.axes, model, event, 0)
    apply_plan(model, plan, optimizer=None, entry_lr=None,
               verify=lambda: None, generator=torch.Generator().manual_seed(0))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


configs = st.builds(
    GPTConfig,
    vocab_size=st.integers(8, 40),
    block_size=st.just(16),
    n_layer=st.integers(1, 3),
    n_embd=st.integers(2, 24),
    n_head=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    ffn_dim=st.integers(1, 40),
    bias=st.booleans(),
)
axis_sets = st.sampled_from([
    ("hidden",), ("ffn",), ("heads",), ("hidden", "ffn"), ("hidden", "ffn", "heads"),
])


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@settings(max_examples=25, deadline=None)
@given(config=configs, axes=axis_sets, seed=st.integers(0, 2**16), batch=st.integers(2, 3),
       seq=st.integers(2, 16))
def test_copy_growth_preserves_outputs(
    dtype: torch.dtype, tolerance: float, config: GPTConfig, axes: tuple[str, ...],
    seed: int, batch: int, seq: int,
) -> None:
    torch.manual_seed(seed)
    model = GPT(config).to(dtype).eval()
    inputs = torch.randint(0, config.vocab_size, (batch, seq))
    with torch.no_grad():
        before = model(inputs)
    grow(model, inputs, axes)
    with torch.no_grad():
        after = model(inputs)
    assert relative_error(after, before) < tolerance


def test_hidden_growth_doubles_every_hidden_size() -> None:
    model = GPT(GPTConfig(n_layer=2, n_embd=16, ffn_dim=32))
    inputs = torch.randint(0, 256, (2, 8))
    grow(model, inputs, ("hidden", "ffn"))
    assert model.wte.embedding_dim == 32
    assert model.wte.weight.shape == (256, 32)
    assert model.blocks[0].ln_1.normalized_shape == (32,)
    assert model.blocks[1].mlp.c_fc.weight.shape == (64, 32)
    assert model.blocks[1].mlp.c_fc.in_features == 32
    assert model.blocks[1].mlp.c_proj.out_features == 32
    assert model.current_config().ffn_dim == 64
    assert model.config.n_embd == 32


def test_tied_head_stays_tied_and_keeps_scale() -> None:
    model = GPT(GPTConfig(n_layer=1, n_embd=8, ffn_dim=16))
    inputs = torch.randint(0, 256, (2, 4))
    grow(model, inputs, ("hidden",))
    assert isinstance(model.lm_head, ScaledLinear)
    assert model.lm_head.weight is model.wte.weight
    assert float(model.lm_head.logit_scale) == pytest.approx(0.5)
    assert "lm_head.logit_scale" in model.state_dict()
    grow(model, inputs, ("hidden",))
    assert model.lm_head.weight is model.wte.weight
    assert float(model.lm_head.logit_scale) == pytest.approx(0.25)


def test_two_events_in_sequence_preserve_outputs() -> None:
    torch.manual_seed(1)
    model = GPT(GPTConfig(n_layer=2, n_embd=8, ffn_dim=12, n_head=2, head_dim=4)).double()
    inputs = torch.randint(0, 256, (2, 6))
    before = model(inputs).detach()
    grow(model, inputs, ("ffn",))
    grow(model, inputs, ("hidden", "heads"))
    assert model.current_config().n_embd == 16
    assert model.current_config().n_head == 4
    assert relative_error(model(inputs).detach(), before) < 1e-10


def _rms(x: torch.Tensor) -> float:
    return float(x.detach().pow(2).mean().sqrt())


@pytest.mark.parametrize("init", ["random", "zero", "sparkling"])
@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_fan_in_scale_keeps_layer_rms_gain(init: str, factor: float) -> None:
    # One MLP layer pair on random inputs whose new features copy old ones (the residual
    # stream after a copy-initialised growth): the RMS gain r = RMS(y) / RMS(x) of every
    # Linear must stay within 15% of its value before growth.
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=64, ffn_dim=256, n_head=4, head_dim=16))
    inputs = torch.randint(0, 256, (2, 8))
    old_fc = copy.deepcopy(model.blocks[0].mlp.c_fc)
    x = torch.randn(4096, 64)
    gain_before = _rms(old_fc(x) - old_fc.bias) / _rms(x)
    grow(model, inputs, ("hidden",), factor=factor, init=init)
    fc = model.blocks[0].mlp.c_fc
    source = torch.arange(fc.in_features) % 64
    # New residual features are copies (sparkling), fresh values (random) or zero (zero).
    extra = fc.in_features - 64
    if init == "sparkling":
        wide_x = x[:, source]
    elif init == "random":
        wide_x = torch.cat([x, torch.randn(4096, extra)], dim=1)
    else:
        wide_x = torch.cat([x, torch.zeros(4096, extra)], dim=1)
    gain_after = _rms(fc(wide_x) - fc.bias) / _rms(wide_x)
    assert gain_after == pytest.approx(gain_before, rel=0.15)


def test_random_init_breaks_function_but_keeps_rms() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_embd=32, ffn_dim=64)).eval()
    inputs = torch.randint(0, 256, (4, 16))
    with torch.no_grad():
        before = model(inputs)
    grow(model, inputs, ("ffn",), init="random")
    with torch.no_grad():
        after = model(inputs)
    assert relative_error(after, before) > 1e-6
    assert _rms(after) == pytest.approx(_rms(before), rel=0.2)
