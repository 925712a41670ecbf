"""The dimension graph: which tensor dimensions of a traced model must change together.

Nodes are dimensions (`Dim`): dimension `index` of a parameter (by canonical name) or of a
value computed by a traced node. Couplings state how two or more dimensions are tied:

- `equal`: same size and the same index map (a residual add, a Linear's output and the rows
  of its weight).
- `contract`: the same, for two dims that a matmul sums over (a Linear's input and the
  columns of its weight, the head dims of q and k in attention scores).
- `factor`: one dimension is the row-major product of others, as when a view splits
  `n_head * head_dim` into `(n_head, head_dim)`.
- `concat`: one dimension is the concatenation of others, as the output of a fused q/k/v
  projection is of q, k and v.

Parameter dimensions also carry tags that tell how each use treats them: `fan_out` (the layer
produces this dimension: rows of a Linear weight, columns of an embedding), `fan_in` (the
layer sums over it: columns of a Linear weight), `elementwise` (a norm gain or bias) or
`indexed` (rows of an embedding, selected by token ids). Dimensions touched by an op without a
rule are frozen, with the reason.

    >>> print(analyse_model(nn.Linear(4, 8), (torch.randn(2, 4),)).graph.format())
    equal    bias[0] == %linear[1]    (linear)
    equal    weight[0] == %linear[1]    (linear)
    contract weight[1] == %input_1[1]    (linear)
    ...
    tag      weight[1]: fan_in by linear
    frozen   %input_1[1]: input_1 is a model input, whose shape the data fixes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import networkx as nx

TagKind = Literal["fan_out", "fan_in", "elementwise", "indexed"]


@dataclass(frozen=True, order=True)
class Dim:
    """Dimension `index` of a parameter (`kind="param"`) or of a traced value (`"value"`).

    A value inside a tuple output (the pieces of `split`) is named `node.i`.
    """

    kind: Literal["param", "value"]
    name: str
    index: int

    def __str__(self) -> str:
        prefix = "" if self.kind == "param" else "%"
        return f"{prefix}{self.name}[{self.index}]"


@dataclass(frozen=True)
class Tag:
    kind: TagKind
    node: str  # the traced node that uses the parameter this way
    module: str  # qualified name of the module that owns that use ("" for the root)


@dataclass(frozen=True)
class Relation:
    """`whole` is the product (`factor`) or concatenation (`concat`) of `parts`, in order."""

    kind: Literal["factor", "concat"]
    whole: Dim
    parts: tuple[Dim, ...]
    node: str


@dataclass
class DimGraph:
    """Dimensions, their couplings, tags on parameter dimensions, and frozen dimensions."""

    sizes: dict[Dim, int] = field(default_factory=dict)
    equal_edges: nx.MultiGraph = field(default_factory=nx.MultiGraph)
    relations: list[Relation] = field(default_factory=list)
    tags: dict[Dim, list[Tag]] = field(default_factory=dict)
    frozen: dict[Dim, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)  # node -> op description
    score_dims: set[Dim] = field(default_factory=set)  # head dims contracted by q . k
    gated: set[Dim] = field(default_factory=set)  # dims of both factors of a product like SwiGLU
    attention_heads: set[Dim] = field(default_factory=set)  # head dims of q, k and v

    def add_dim(self, dim: Dim, size: int) -> None:
        self.sizes[dim] = size
        self.equal_edges.add_node(dim)

    def format(self) -> str:
        """Stable text form: couplings, then tags, then frozen dimensions."""
        lines = []
        for a, b, node, kind in sorted(_edge_key(edge) for edge in self.equal_edges.edges(data=True)):
            lines.append(f"{kind:<9}{a} == {b}    ({node})")
        for rel in self.relations:
            sep = " * " if rel.kind == "factor" else " ++ "
            parts = sep.join(str(p) for p in rel.parts)
            lines.append(f"{rel.kind:<9}{rel.whole} = {parts}    ({rel.node})")
        for dim in sorted(self.tags):
            kinds = ", ".join(f"{t.kind} by {t.node}" for t in self.tags[dim])
            lines.append(f"{'tag':<9}{dim}: {kinds}")
        for dim in sorted(self.frozen):
            lines.append(f"{'frozen':<9}{dim}: {self.frozen[dim]}")
        return "\n".join(lines)


def _edge_key(edge: tuple[Dim, Dim, dict[str, str]]) -> tuple[Dim, Dim, str, str]:
    a, b, data = edge
    low, high = (a, b) if a <= b else (b, a)
    return (low, high, data["node"], data["kind"])
