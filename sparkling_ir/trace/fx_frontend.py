"""The torch.fx front end: trace a model and record the shape of every value.

`trace_model` runs `torch.fx.symbolic_trace` on the model and then interprets the traced graph
once on the example inputs, storing the shapes of every node's output. The dimension graph is
built from this `TracedModel`; nothing downstream reruns the model.

Modules from `torch.nn` stay leaves (one `call_module` node each), as torch.fx does by default.
Models that symbolic tracing cannot follow (data-dependent control flow, current Hugging Face
models) need another front end; `trace_model` raises `TraceError` naming the failure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from sparkling_ir.errors import TraceError

logger = logging.getLogger(__name__)

# The recorded output of a node: a torch.Size for a tensor, a tuple/list/dict of these for a
# structured output, or the plain Python value (an int from `size()`, a dtype, a device...).
ValueShape = Any


@dataclass(frozen=True)
class ParamInfo:
    """One parameter tensor, under its canonical name, with every other name it is reachable by."""

    name: str
    shape: tuple[int, ...]
    aliases: tuple[str, ...]


@dataclass
class TracedModel:
    graph_module: fx.GraphModule
    shapes: dict[str, ValueShape]
    params: dict[str, ParamInfo]
    alias_to_param: dict[str, str] = field(default_factory=dict)

    def shape(self, node: fx.Node) -> ValueShape:
        return self.shapes[node.name]

    def owner(self, node: fx.Node) -> str:
        """Return the qualified name of the innermost module whose forward produced `node`."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return ""
        path, _ = list(stack.values())[-1]
        return str(path)


def collect_params(model: torch.nn.Module) -> tuple[dict[str, ParamInfo], dict[str, str]]:
    """Group parameter names by tensor: tied parameters share one canonical name (the first)."""
    names_by_id: dict[int, list[str]] = {}
    tensors: dict[int, torch.nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_by_id.setdefault(id(param), []).append(name)
        tensors[id(param)] = param
    params: dict[str, ParamInfo] = {}
    alias_to_param: dict[str, str] = {}
    for key, names in names_by_id.items():
        canonical = names[0]
        params[canonical] = ParamInfo(canonical, tuple(tensors[key].shape), tuple(names))
        for alias in names:
            alias_to_param[alias] = canonical
    return params, alias_to_param


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph and keeps only the shapes of what each node produced."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: dict[str, ValueShape] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.shapes[n.name] = _shape_of(result)
        return result


def _shape_of(value: Any) -> ValueShape:
    if isinstance(value, torch.Tensor):
        return torch.Size(value.shape)
    if isinstance(value, (tuple, list)):
        return type(value)(_shape_of(v) for v in value)
    if isinstance(value, dict):
        return {k: _shape_of(v) for k, v in value.items()}
    return value


class _LeafTracer(fx.Tracer):
    """The default tracer, keeping instances of `leaf_types` opaque as well."""

    def __init__(self, leaf_types: tuple[type[torch.nn.Module], ...]) -> None:
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, module_qualified_name)


def _first_line(error: BaseException) -> str:
    """Return the first line of `error`'s message, without the graph dump torch.fx appends."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def trace_model(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    leaf_modules: tuple[type[torch.nn.Module], ...] = (),
) -> TracedModel:
    """Trace `model` with torch.fx and record every node's output shape on `example_inputs`.

    `leaf_modules` lists module classes to keep opaque (one `call_module` node each) instead
    of tracing through them. Each needs a registered dimension rule, or its dims are frozen.
    """
    try:
        graph = _LeafTracer(leaf_modules).trace(model)
        graph_module = fx.GraphModule(model, graph, type(model).__name__)
    except Exception as error:  # torch.fx raises many types; all mean "cannot trace".
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {_first_line(error)}. Symbolic "
            "tracing cannot follow data-dependent control flow. Move such code into a submodule, "
            "pass its class in leaf_modules=(...) so that tracing keeps it opaque, and register "
            "a dimension rule for it (sparkling_ir.graph.rules.register_module_rule)."
        ) from error
    recorder = _ShapeRecorder(graph_module)
    try:
        with torch.no_grad():
            recorder.run(*example_inputs)
    except Exception as error:
        raise TraceError(
            f"the traced {type(model).__name__} failed on the example inputs: "
            f"{_first_line(error)}. Check that example_inputs is a tuple of positional "
            "arguments that the model's forward accepts, and that every size the model "
            "computes with is read from the model (not a literal)."
        ) from error
    params, alias_to_param = collect_params(model)
    logger.info(
        "traced %s: %d nodes, %d parameter tensors",
        type(model).__name__, len(graph_module.graph.nodes), len(params),
    )
    return TracedModel(graph_module, recorder.shapes, params, alias_to_param)
