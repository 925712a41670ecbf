"""The analysis stages in order: trace, build the dimension graph, name the axes.

    analysis = analyse_model(model, example_inputs)
    print(analysis.axes.format_table())
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from sparkling_ir.graph.axes import AxisAnalysis, analyse_axes
from sparkling_ir.graph.build import build_dim_graph
from sparkling_ir.graph.dims import DimGraph
from sparkling_ir.trace.fx_frontend import TracedModel, trace_model


@dataclass
class ModelAnalysis:
    traced: TracedModel
    graph: DimGraph
    axes: AxisAnalysis


def analyse_model(
    model: nn.Module,
    example_inputs: Sequence[Any],
    leaf_modules: tuple[type[nn.Module], ...] = (),
) -> ModelAnalysis:
    traced = trace_model(model, example_inputs, leaf_modules)

    graph = build_dim_graph(traced)

    axes = analyse_axes(graph)
    return ModelAnalysis(traced, graph, axes)
