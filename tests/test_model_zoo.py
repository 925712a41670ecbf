"""Growth on small models of other shapes: fused SwiGLU, GQA, per-head norms, dict outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparkling_ir.analysis import analyse_model
from sparkling_ir.compile.emit import apply_plan
from sparkling_ir.compile.plan import plan_growth
from sparkling_ir.errors import BindError
from sparkling_ir.schedule.ir import AtStep, ByFactor, GrowthEvent, InitPolicy, Widen


def grow(model: nn.Module, inputs: tuple[torch.Tensor, ...], axis: str, init: str = "sparkling") -> None:
    event = GrowthEvent(
        trigger=AtStep(step=1),
        widens=(Widen(axis=axis, amount=ByFactor(factor=2.0)),),  # type: ignore[arg-type]
        init=InitPolicy(method=init),  # type: ignore[arg-type]
    )
    analysis = analyse_model(model, inputs)
    plan = plan_growth(analysis.axes, model, event, 0)
    apply_plan(model, plan, optimizer=None, entry_lr=None, verify=lambda: analyse_model(model, inputs))


class FusedSwiGLU(nn.Module):
    """A residual block whose gate and up projections are one matrix, split by `chunk`."""

    def __init__(self, width: int = 8, inner: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, width)
        self.norm = nn.RMSNorm(width)
        self.gate_up = nn.Linear(width, 2 * inner, bias=False)
        self.down = nn.Linear(inner, width, bias=False)
        self.head = nn.Linear(width, 20, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        gate, up = self.gate_up(self.norm(x)).chunk(2, dim=-1)
        x = x + self.down(F.silu(gate) * up)
        return self.head(x)


def test_fused_gate_up_grows_segment_by_segment() -> None:
    torch.manual_seed(0)
    model = FusedSwiGLU().double()
    ids = torch.randint(0, 20, (2, 5))
    before = model(ids).detach()
    grow(model, (ids,), "ffn")
    assert model.gate_up.weight.shape == (48, 8)
    # Gate rows 0..11 stay first and their copies follow; up rows keep the second half.
    torch.testing.assert_close(model.gate_up.weight[12:24], model.gate_up.weight[:12])
    torch.testing.assert_close(model.gate_up.weight[36:48], model.gate_up.weight[24:36])
    torch.testing.assert_close(model(ids).detach(), before, rtol=1e-10, atol=1e-12)


def test_zero_init_of_gated_units_is_rejected() -> None:
    model = FusedSwiGLU()
    ids = torch.randint(0, 20, (2, 5))
    with pytest.raises(BindError, match="with init zero: its units multiply two computed factors"):
        grow(model, (ids,), "ffn", init="zero")


def test_hidden_grows_through_rms_norm() -> None:
    torch.manual_seed(0)
    model = FusedSwiGLU().double()
    ids = torch.randint(0, 20, (2, 5))
    before = model(ids).detach()
    grow(model, (ids,), "hidden")
    assert model.norm.normalized_shape == (16,)
    torch.testing.assert_close(model(ids).detach(), before, rtol=1e-10, atol=1e-12)


class GroupedQueryAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.q = nn.Linear(16, 16)
        self.kv = nn.Linear(16, 8)
        self.out = nn.Linear(16, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        batch, seq = ids.shape
        q = self.q(x).view(batch, seq, 4, 4).transpose(1, 2)
        k, v = self.kv(x).view(batch, seq, 2, 4).transpose(1, 2).chunk(2, dim=-1)
        y = F.scaled_dot_product_attention(q, k.repeat(1, 1, 1, 2), v.repeat(1, 1, 1, 2), enable_gqa=True)
        return self.out(y.transpose(1, 2).reshape(batch, seq, 16))


def test_grouped_query_attention_is_frozen_not_guessed() -> None:
    analysis = analyse_model(GroupedQueryAttention(), (torch.randint(0, 20, (2, 3)),))
    heads = [a for a in analysis.axes.axes if a.frozen and "grouped-query attention" in a.frozen[0]]
    assert heads


class PerHeadNorm(nn.Module):
    """Attention with a norm over each head's q and k (the Qwen3 layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_head, self.head_dim = 2, 4
        self.embed = nn.Embedding(20, 8)
        self.qkv = nn.Linear(8, 24)
        self.q_norm = nn.LayerNorm(4)
        self.k_norm = nn.LayerNorm(4)
        self.out = nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.embed(ids)
        batch, seq = ids.shape
        q, k, v = self.qkv(x).split(self.n_head * self.head_dim, dim=-1)
        q = self.q_norm(q.view(batch, seq, self.n_head, self.head_dim)).transpose(1, 2)
        k = self.k_norm(k.view(batch, seq, self.n_head, self.head_dim)).transpose(1, 2)
        v = v.view(batch, seq, self.n_head, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return {"hidden": self.out(y.transpose(1, 2).reshape(batch, seq, self.n_head * self.head_dim))}


def test_per_head_norm_stays_fixed_when_heads_grow() -> None:
    torch.manual_seed(0)
    model = PerHeadNorm().double()
    ids = torch.randint(0, 20, (2, 5))
    before = model(ids)["hidden"].detach()
    grow(model, (ids,), "heads")
    assert model.n_head == 4
    assert model.q_norm.weight.shape == (4,)
    assert model.qkv.weight.shape == (48, 8)
    torch.testing.assert_close(model(ids)["hidden"].detach(), before, rtol=1e-10, atol=1e-12)


def test_per_head_norm_follows_head_dim_axis() -> None:
    analysis = analyse_model(PerHeadNorm(), (torch.randint(0, 20, (2, 3)),))
    head_dim = next(a for a in analysis.axes.axes if a.name.endswith("head_dim[qk]"))
    params = {m.param for m in head_dim.members}
    assert {"q_norm.weight", "k_norm.weight"} <= params


class HandWrittenRMSNorm(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class SumPooled(HandWrittenRMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.sum(-1, keepdim=True) * self.weight


class TinyLM(nn.Module):
    def __init__(self, norm: type[HandWrittenRMSNorm]) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.norm = norm(8)
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 8)
        self.head = nn.Linear(8, 20)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x + self.down(F.gelu(self.up(self.norm(x))))
        return self.head(x)


def test_hand_written_rms_norm_grows_with_hidden() -> None:
    torch.manual_seed(0)
    model = TinyLM(HandWrittenRMSNorm).double()
    ids = torch.randint(0, 20, (2, 5))
    before = model(ids).detach()
    grow(model, (ids,), "hidden")
    assert model.norm.weight.shape == (16,)
    torch.testing.assert_close(model(ids).detach(), before, rtol=1e-10, atol=1e-12)


def test_sum_over_hidden_freezes_it() -> None:
    model = TinyLM(SumPooled)
    ids = torch.randint(0, 20, (2, 5))
    with pytest.raises(BindError, match="no dimension rule for method Tensor.sum"):
        grow(model, (ids,), "hidden")
