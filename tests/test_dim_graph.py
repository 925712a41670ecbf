"""Dimension graph and axes on tiny inline models, one claim per test."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sparkling_ir.analysis import analyse_model
from sparkling_ir.graph.axes import AxisAnalysis
from sparkling_ir.graph.dims import Dim
from sparkling_ir.models.nanogpt import GPT, GPTConfig


def axes_of(model: nn.Module, *inputs: torch.Tensor) -> AxisAnalysis:
    return analyse_model(model, inputs).axes


def roles(analysis: AxisAnalysis) -> dict[str, str]:
    return {axis.name: axis.role for axis in analysis.axes}


class TwoLayerMLP(nn.Module):
    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, inner)
        self.down = nn.Linear(inner, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.gelu(self.up(x)))


def test_mlp_inner_width_is_ffn_axis() -> None:
    analysis = axes_of(TwoLayerMLP(8, 16), torch.randn(3, 8))
    ffn = analysis.axes_with_role("ffn")
    assert [a.size for a in ffn] == [16]
    members = {(m.param, m.dim): m.tags for m in ffn[0].members}
    assert members[("up.weight", 0)] == ("fan_out",)
    assert members[("up.bias", 0)] == ("fan_out",)
    assert members[("down.weight", 1)] == ("fan_in",)


def test_equal_sizes_stay_separate_axes() -> None:
    # hidden and ffn both have size 8: the graph, not the size, decides what grows together.
    model = GPT(GPTConfig(n_layer=2, n_embd=8, ffn_dim=8, n_head=2, head_dim=4))
    analysis = axes_of(model, torch.randint(0, 256, (2, 5)))
    hidden = analysis.axes_with_role("hidden")
    ffn = analysis.axes_with_role("ffn")
    assert len(hidden) == 1
    assert len(ffn) == 2
    assert {a.atom for a in ffn}.isdisjoint({hidden[0].atom})


def test_bundled_gpt_axes_table() -> None:
    model = GPT(GPTConfig(n_layer=2))
    table = axes_of(model, torch.randint(0, 256, (2, 8))).format_table()
    assert table.splitlines()[:6] == [
        "axis                        role      size  fan-out  fan-in  elementwise  status",
        "hidden                      hidden    64    10       5       10           growable",
        "blocks.0.mlp:ffn            ffn       256   2        1       0            growable",
        "blocks.1.mlp:ffn            ffn       256   2        1       0            growable",
        "blocks.0.attn:heads         heads     4     2        1       0            growable",
        "blocks.1.attn:heads         heads     4     2        1       0            growable",
    ]


def test_tied_embedding_dim_tags() -> None:
    # The shared matrix is fan-out for the embedding and fan-in for the output head.
    model = GPT(GPTConfig(n_layer=1))
    analysis = axes_of(model, torch.randint(0, 256, (2, 8)))
    hidden = analysis.axes_with_role("hidden")[0]
    tags = {(m.param, m.dim): m.tags for m in hidden.members}
    assert tags[("wte.weight", 1)] == ("fan_in", "fan_out")
    assert "lm_head.weight" not in {m.param for m in hidden.members}


class CumulativeMix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 6)
        self.down = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.cumsum(self.up(x), dim=-1))


def test_op_without_rule_freezes_its_dims() -> None:
    analysis = axes_of(CumulativeMix(), torch.randn(2, 4))
    graph = analysis.graph
    assert list(graph.unsupported.values()) == ["function torch.cumsum"]
    # Without a rule, nothing ties up's rows to down's columns, and both stay frozen.
    inner = [a for a in analysis.axes if a.size == 6]
    assert [a.role for a in inner] == ["other", "other"]
    for axis in inner:
        assert "no dimension rule for function torch.cumsum" in axis.frozen[0]
        assert "register_function_rule" in axis.frozen[0]


class OpaqueLayer(nn.Module):
    """A user layer that torch.fx keeps as a leaf, so no rule looks inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class WithOpaque(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.opaque = OpaqueLayer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.opaque(self.proj(x))


def test_unknown_leaf_module_is_reported_not_skipped() -> None:
    analysis = analyse_model(WithOpaque(), (torch.randn(2, 4),), leaf_modules=(OpaqueLayer,))
    unsupported = analysis.graph.unsupported
    assert list(unsupported) == ["opaque"]
    assert "OpaqueLayer" in unsupported["opaque"]
    assert Dim("param", "opaque.inner.weight", 0) in analysis.graph.frozen
    proj_rows = next(a for a in analysis.axes.axes if ("proj.weight", 0) in {(m.param, m.dim) for m in a.members})
    assert "OpaqueLayer" in proj_rows.frozen[0]


class SizeFromArithmetic(nn.Module):
    """nanoGPT's original head split: head size computed as C // n_head from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 8)
        self.out = nn.Linear(8, 8)
        self.n_head = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.size()
        h = self.qkv(x).view(batch, seq, self.n_head, width // self.n_head)
        return self.out(h.reshape(batch, seq, width))


def test_size_computed_by_arithmetic_freezes() -> None:
    analysis = axes_of(SizeFromArithmetic(), torch.randn(2, 3, 8))
    assert any("by arithmetic" in reason for reason in analysis.graph.frozen.values())


def test_split_chunk_and_views_give_same_axes() -> None:
    class WithSplit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fused = nn.Linear(4, 12)
            self.out = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b, c = self.fused(x).split(4, dim=-1)
            return self.out(a * b + c)

    class WithChunk(WithSplit):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b, c = self.fused(x).chunk(3, dim=-1)
            return self.out(a * b + c)

    x = torch.randn(2, 4)
    split_axes = [(a.role, a.size, len(a.members)) for a in axes_of(WithSplit(), x).axes]
    chunk_axes = [(a.role, a.size, len(a.members)) for a in axes_of(WithChunk(), x).axes]
    assert split_axes == chunk_axes


def test_graph_prints_stably() -> None:
    analysis = axes_of(TwoLayerMLP(2, 3), torch.randn(5, 2))
    text = analysis.graph.format()
    assert text == axes_of(TwoLayerMLP(2, 3), torch.randn(5, 2)).graph.format()
    assert "contract up.weight[1] == %x[1]    (up)" in text
    assert "equal    up.weight[0] == %up[1]    (up)" in text
    assert "tag      down.weight[1]: fan_in by down" in text
