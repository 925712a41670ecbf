"""Propagate new sizes from atom classes to every class that depends on them.

Growth sets an index map on some atoms (a head count, a hidden size). A class that is the
row-major product of others (`n_head * head_dim`) or their concatenation (fused q/k/v) gets
the map composed from its parts. Classes are visited in topological order of the relations,
so propagation ends on every graph. A cycle, or two relations that disagree on one class, is a
contradiction and is reported with the nodes involved.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import networkx as nx
import torch

from sparkling_ir.compile.remap import DimRemap
from sparkling_ir.errors import GrowthError
from sparkling_ir.graph.axes import AxisAnalysis


def identity(size: int) -> DimRemap:
    return DimRemap(
        old_size=size, new_size=size, old_position=tuple(range(size)), source=tuple(range(size)),
    )


def propagate_maps(analysis: AxisAnalysis, atom_maps: Mapping[int, DimRemap]) -> dict[int, DimRemap]:
    """Index maps of every class affected by `atom_maps` (class id -> map), atoms included."""
    order = _relation_order(analysis)
    affected: set[int] = set()
    for atom in atom_maps:
        affected |= analysis.dependents(atom)
    maps = dict(atom_maps)
    for class_id in order:
        if class_id not in affected or class_id in atom_maps:
            continue
        candidates = []
        for relation, whole, parts in analysis.relations:
            if whole != class_id:
                continue
            part_maps = [maps.get(p) or identity(analysis.class_size(p)) for p in parts]
            composed = compose_factor(part_maps) if relation.kind == "factor" else compose_concat(part_maps)
            candidates.append((relation.node, composed))
        if not candidates:
            continue
        first_node, first = candidates[0]
        for node, other in candidates[1:]:
            if other != first:
                raise GrowthError(
                    f"contradiction in the dimension graph: nodes {first_node} and {node} give "
                    f"different layouts for the same dims ({first.describe()} vs "
                    f"{other.describe()}); the model reshapes one tensor in two incompatible ways"
                )
        maps[class_id] = first
    return maps


def _relation_order(analysis: AxisAnalysis) -> list[int]:
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(analysis.classes)))
    for _, whole, parts in analysis.relations:
        dag.add_edges_from((part, whole) for part in parts)
    try:
        return list(nx.topological_sort(dag))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(dag)
        names = ", ".join(str(min(analysis.classes[a])) for a, _ in cycle)
        raise GrowthError(
            f"contradiction in the dimension graph: the dims {names} are defined in terms of "
            "each other (a cycle of reshapes or concatenations), so no growth can be derived"
        ) from None


def compose_factor(parts: Sequence[DimRemap]) -> DimRemap:
    """Map of a row-major product dim `(p0 * p1 * ...)` from the maps of its parts."""
    new_sizes = [p.new_size for p in parts]
    old_sizes = [p.old_size for p in parts]
    source = _flatten_product([p.source for p in parts], old_sizes)
    old_position = _flatten_product([p.old_position for p in parts], new_sizes)
    return DimRemap(
        old_size=_product(old_sizes), new_size=_product(new_sizes),
        old_position=old_position, source=source,
    )


def _flatten_product(columns: Sequence[Sequence[int]], strides_of: Sequence[int]) -> tuple[int, ...]:
    """Row-major flat indices of every combination of `columns`, in a space of `strides_of`."""
    flat = torch.zeros(1, dtype=torch.long)
    for column, size in zip(columns, strides_of):
        values = torch.tensor(column, dtype=torch.long)
        flat = (flat[:, None] * size + values[None, :]).reshape(-1)
    return tuple(int(v) for v in flat)


def compose_concat(parts: Sequence[DimRemap]) -> DimRemap:
    """Map of a concatenated dim `(p0 ++ p1 ++ ...)` from the maps of its parts."""
    old_offsets = [0, *itertools.accumulate(p.old_size for p in parts)]
    new_offsets = [0, *itertools.accumulate(p.new_size for p in parts)]
    source: list[int] = []
    old_position: list[int] = []
    for part, old_offset, new_offset in zip(parts, old_offsets, new_offsets):
        source += [old_offset + s for s in part.source]
        old_position += [new_offset + p for p in part.old_position]
    return DimRemap(
        old_size=old_offsets[-1], new_size=new_offsets[-1],
        old_position=tuple(old_position), source=tuple(source),
    )


def _product(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result
