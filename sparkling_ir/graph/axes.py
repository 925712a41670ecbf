"""Width axes: the groups of the dimension graph that can grow, named by role.

Dims tied by `equal` couplings form a *dim class*: they always have the same size and index
map. `factor` and `concat` relations link classes into *dim groups* (the connected groups of
the graph). A class that is not the product or concatenation of other classes is an *atom*;
growth changes atoms, and every other class of the group follows from its relations.

Each atom that parameters depend on is an `Axis` with a role:

- `hidden`: the class of an embedding's width (the residual stream of a language model);
- `heads` / `head_dim`: the head count and head size of an attention group;
- `ffn`: a class produced by fan-out layers and consumed by fan-in layers (an MLP's width);
- `indexed`: rows of an embedding, selected by ids (vocabulary or positions; never grown);
- `other`: anything else with parameters, listed but not bound to a schedule axis name.

Roles come from the graph's structure, never from sizes: two axes of equal size stay apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict

from sparkling_ir.graph.dims import Dim, DimGraph, Relation

Role = Literal["hidden", "ffn", "heads", "kv_heads", "head_dim", "indexed", "other"]

# Roles the graph recognises but the compiler cannot grow yet (see compile.plan).
NOT_GROWABLE_YET: frozenset[str] = frozenset({"head_dim", "kv_heads"})


class AxisMember(BaseModel):
    """A parameter dim whose size follows an axis, with how each use treats it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    param: str
    dim: int
    size: int
    tags: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.param}[{self.dim}] ({', '.join(self.tags) or 'untagged'})"


class Axis(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    size: int
    atom: int  # id of the atom class
    group: int
    members: tuple[AxisMember, ...]
    frozen: tuple[str, ...]  # reasons; empty when the axis can grow

    def count(self, tag: str) -> int:
        return sum(1 for m in self.members if tag in m.tags)


@dataclass
class AxisAnalysis:
    """Classes, class-level relations, groups and named axes of one dimension graph."""

    graph: DimGraph
    classes: list[frozenset[Dim]]
    class_of: dict[Dim, int]
    relations: list[tuple[Relation, int, tuple[int, ...]]]
    groups: list[frozenset[int]]
    group_of: dict[int, int]
    axes: list[Axis] = field(default_factory=list)

    def class_size(self, class_id: int) -> int:
        return self.graph.sizes[next(iter(self.classes[class_id]))]

    def dependents(self, class_id: int) -> set[int]:
        """Return the classes whose size depends on `class_id` through relations, itself included."""
        found = {class_id}
        frontier = [class_id]
        while frontier:
            current = frontier.pop()
            for _, whole, parts in self.relations:
                if current in parts and whole not in found:
                    found.add(whole)
                    frontier.append(whole)
        return found

    def axes_with_role(self, role: str) -> list[Axis]:
        return [axis for axis in self.axes if axis.role == role]

    def format_table(self) -> str:
        """Format the axes as a plain-text table, one row each."""
        rows = [("axis", "role", "size", "fan-out", "fan-in", "elementwise", "status")]
        for axis in self.axes:
            status = "frozen: " + axis.frozen[0] if axis.frozen else "growable"
            if axis.role == "indexed":
                status = "not a width (embedding rows)"
            elif axis.role in NOT_GROWABLE_YET and not axis.frozen:
                status = "not growable yet"
            rows.append((
                axis.name, axis.role, str(axis.size), str(axis.count("fan_out")),
                str(axis.count("fan_in")), str(axis.count("elementwise")), status,
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        lines = []
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths)]
            lines.append("  ".join(cells + [row[-1]]).rstrip())
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps([axis.model_dump() for axis in self.axes], indent=2)


def analyse_axes(graph: DimGraph) -> AxisAnalysis:
    """Group the graph's dims into classes and groups, and name the growable atoms."""
    classes = [frozenset(c) for c in nx.connected_components(graph.equal_edges)]
    classes.sort(key=lambda c: min(c))
    class_of = {dim: i for i, members in enumerate(classes) for dim in members}
    relations = [
        (rel, class_of[rel.whole], tuple(class_of[p] for p in rel.parts))
        for rel in graph.relations
    ]
    linked = nx.Graph()
    linked.add_nodes_from(range(len(classes)))
    for _, whole, parts in relations:
        linked.add_edges_from((whole, part) for part in parts)
    groups = [frozenset(g) for g in nx.connected_components(linked)]
    groups.sort(key=min)
    group_of = {c: i for i, g in enumerate(groups) for c in g}
    analysis = AxisAnalysis(graph, classes, class_of, relations, groups, group_of)
    analysis.axes = _name_axes(analysis)
    return analysis


def _name_axes(analysis: AxisAnalysis) -> list[Axis]:
    wholes = {whole for _, whole, _ in analysis.relations}
    axes = []
    for class_id in range(len(analysis.classes)):
        if class_id in wholes:
            continue
        members = _members(analysis, analysis.dependents(class_id))
        if not members:
            continue  # batch and sequence dims: no parameter follows them
        role = _role(analysis, class_id)
        group_members = _members(analysis, analysis.groups[analysis.group_of[class_id]])
        axes.append(Axis(
            name=_axis_name(role, members, group_members, analysis, class_id),
            role=role,
            size=analysis.class_size(class_id),
            atom=class_id,
            group=analysis.group_of[class_id],
            members=tuple(members),
            frozen=tuple(_frozen_reasons(analysis, class_id)),
        ))
    _disambiguate(axes)
    axes.sort(key=lambda a: (_ROLE_ORDER.index(a.role), _natural_key(a.name)))
    return axes


_ROLE_ORDER: list[str] = ["hidden", "ffn", "heads", "kv_heads", "head_dim", "other", "indexed"]


def _members(analysis: AxisAnalysis, class_ids: Iterable[int]) -> list[AxisMember]:
    graph = analysis.graph
    members = []
    for class_id in class_ids:
        for dim in analysis.classes[class_id]:
            if dim.kind != "param":
                continue
            kinds = sorted({tag.kind for tag in graph.tags.get(dim, [])})
            members.append(AxisMember(
                param=dim.name, dim=dim.index, size=graph.sizes[dim], tags=tuple(kinds),
            ))
    members.sort(key=lambda m: (_natural_key(m.param), m.dim))
    return members


def _role(analysis: AxisAnalysis, class_id: int) -> Role:
    graph = analysis.graph
    dims = analysis.classes[class_id]
    if dims & graph.attention_heads:
        return "heads"
    if dims & graph.score_dims or _is_value_head_dim(analysis, class_id):
        return "head_dim"
    tags = {tag.kind for dim in dims for tag in graph.tags.get(dim, [])}
    # A fused projection (gate and up in one matrix) produces the whole that this class is a
    # segment of, so the fan-out tags sit on the classes that depend on this one.
    dependent_tags = {
        tag.kind
        for dependent in analysis.dependents(class_id)
        for dim in analysis.classes[dependent]
        for tag in graph.tags.get(dim, [])
    }
    if "indexed" in tags:
        return "indexed"
    if _is_embedding_width(analysis, dims):
        return "hidden"
    at_model_boundary = any(d.kind == "value" and d in graph.frozen for d in dims)
    if {"fan_out", "fan_in"} <= dependent_tags and not at_model_boundary:
        return "ffn"
    return "other"


def _is_embedding_width(analysis: AxisAnalysis, dims: frozenset[Dim]) -> bool:
    for dim in dims:
        if dim.kind == "param" and dim.index == 1:
            rows = Dim("param", dim.name, 0)
            if any(tag.kind == "indexed" for tag in analysis.graph.tags.get(rows, [])):
                return True
    return False


def _is_value_head_dim(analysis: AxisAnalysis, class_id: int) -> bool:
    """Tell whether a class is the head size of attention values (a factor beside heads)."""
    for _, _, parts in analysis.relations:
        if class_id in parts and len(parts) == 2 and parts[1] == class_id:
            if analysis.classes[parts[0]] & analysis.graph.attention_heads:
                return True
    return False


def _frozen_reasons(analysis: AxisAnalysis, class_id: int) -> list[str]:
    reasons = []
    for dependent in sorted(analysis.dependents(class_id)):
        for dim in sorted(analysis.classes[dependent]):
            if dim in analysis.graph.frozen:
                reasons.append(f"{dim}: {analysis.graph.frozen[dim]}")
    return reasons


def _axis_name(
    role: Role, members: list[AxisMember], group_members: list[AxisMember],
    analysis: AxisAnalysis, class_id: int,
) -> str:
    if role == "hidden":
        return "hidden"
    # Attention axes are scoped by their whole group (the attention module), so the head
    # count and both head sizes of one layer read as one family.
    scoped = group_members if role in ("heads", "kv_heads", "head_dim") else members
    scope = _common_scope([m.param for m in scoped])
    name = f"{scope}:{role}" if scope else role
    if role == "head_dim":
        is_query_key = bool(analysis.classes[class_id] & analysis.graph.score_dims)
        name += "[qk]" if is_query_key else "[v]"
    return name


def _common_scope(names: list[str]) -> str:
    """Return the module path that every parameter name starts with, e.g. `blocks.0.mlp`."""
    split = [name.split(".")[:-1] for name in names]
    prefix: list[str] = []
    for parts in zip(*split):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return ".".join(prefix)


def _disambiguate(axes: list[Axis]) -> None:
    seen: dict[str, int] = {}
    for index, axis in enumerate(axes):
        count = seen.get(axis.name, 0)
        seen[axis.name] = count + 1
        if count:
            axes[index] = axis.model_copy(update={"name": f"{axis.name}#{count + 1}"})


def _natural_key(text: str) -> list[object]:
    """Sort `blocks.10` after `blocks.9`."""
    return [int(part) if part.isdigit() else part for part in text.replace(":", ".").split(".")]
