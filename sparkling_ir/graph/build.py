"""Build the dimension graph of a traced model by applying one rule per node."""

from __future__ import annotations

import logging

import torch
from torch import fx

from sparkling_ir.graph import builtin_rules  # noqa: F401  (registers the built-in rules)
from sparkling_ir.graph.dims import DimGraph
from sparkling_ir.graph.rules import RuleContext, describe_op, find_rule
from sparkling_ir.trace.fx_frontend import TracedModel

logger = logging.getLogger(__name__)


def build_dim_graph(traced: TracedModel) -> DimGraph:
    """Apply the registered rule of every traced node; freeze what no rule covers."""
    graph = DimGraph()
    ctx = RuleContext(traced, graph)
    for name in traced.params:
        ctx.param_dims(name)
    for node in traced.graph_module.graph.nodes:
        _apply(ctx, node)
    if graph.unsupported:
        logger.warning(
            "no dimension rule for %d op(s), their dims are frozen: %s",
            len(graph.unsupported), ", ".join(sorted(set(graph.unsupported.values()))),
        )
    logger.info(
        "dimension graph: %d dims, %d equal couplings, %d factor/concat relations",
        len(graph.sizes), graph.equal_edges.number_of_edges(), len(graph.relations),
    )
    return graph


def _apply(ctx: RuleContext, node: fx.Node) -> None:
    if node.op == "placeholder":
        ctx.freeze(ctx.output_dims(node), f"{node.name} is a model input, whose shape the data fixes")
        return
    if node.op == "output":
        for arg in _tensor_args(node):
            ctx.freeze(ctx.dims(arg), f"{arg.name} is a model output, whose shape callers rely on")
        return
    if node.op == "get_attr":
        _get_attr(ctx, node)
        return
    rule = find_rule(ctx.traced, node)
    if rule is not None:
        rule(ctx, node)
        return
    if _touches_tensors(ctx, node):
        op = describe_op(ctx.traced, node)
        ctx.graph.unsupported[node.name] = op
        ctx.freeze_node(
            node,
            f"no dimension rule for {op} at node {node.name}; register one with "
            "sparkling_ir.graph.rules.register_module_rule / register_function_rule / "
            "register_method_rule",
        )


def _get_attr(ctx: RuleContext, node: fx.Node) -> None:
    name = str(node.target)
    if name in ctx.traced.alias_to_param:
        ctx.equal_all(zip(ctx.output_dims(node), ctx.param_dims(name)), node)
    else:
        # A buffer or constant tensor: its dims cannot be grown by a parameter rewrite.
        ctx.freeze(ctx.output_dims(node), f"{name} is a buffer or constant read by {node.name}")


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)  # type: ignore[func-returns-value]
    return found


def _touches_tensors(ctx: RuleContext, node: fx.Node) -> bool:
    if node.op == "call_module":
        return True
    value = ctx.traced.shapes.get(node.name)
    if isinstance(value, torch.Size) or (
        isinstance(value, (tuple, list)) and any(isinstance(v, torch.Size) for v in value)
    ):
        return True
    return any(ctx.shape(arg) is not None for arg in _tensor_args(node))
