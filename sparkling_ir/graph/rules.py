"""The registry of dimension rules: how each op ties the dimensions it reads and writes.

A rule is a function `rule(ctx, node)` that calls `ctx.equal`, `ctx.factor`, `ctx.concat`,
`ctx.tag` and `ctx.freeze` for one traced node. Rules are registered per op:

    @register_module_rule(nn.LayerNorm)          # a leaf module, matched along its MRO
    @register_function_rule(torch.add, operator.add)
    @register_method_rule("view", "reshape")     # a Tensor method, by name

An op with no rule freezes every dimension it touches and is reported by name: the analysis
never assumes that an unknown op is element-wise. To support a custom layer, register a rule
for its class (or let torch.fx trace through it by making it a non-leaf module).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import fx, nn

from sparkling_ir.graph.dims import Dim, DimGraph, Relation, Tag, TagKind
from sparkling_ir.trace.fx_frontend import TracedModel

Rule = Callable[["RuleContext", fx.Node], None]

MODULE_RULES: dict[type[nn.Module], Rule] = {}
FUNCTION_RULES: dict[Any, Rule] = {}
METHOD_RULES: dict[str, Rule] = {}


def register_module_rule(*types: type[nn.Module]) -> Callable[[Rule], Rule]:
    def decorate(rule: Rule) -> Rule:
        for module_type in types:
            MODULE_RULES[module_type] = rule
        return rule
    return decorate


def register_function_rule(*targets: Any) -> Callable[[Rule], Rule]:
    def decorate(rule: Rule) -> Rule:
        for target in targets:
            FUNCTION_RULES[target] = rule
        return rule
    return decorate


def register_method_rule(*names: str) -> Callable[[Rule], Rule]:
    def decorate(rule: Rule) -> Rule:
        for name in names:
            METHOD_RULES[name] = rule
        return rule
    return decorate


def find_rule(traced: TracedModel, node: fx.Node) -> Rule | None:
    if node.op == "call_module":
        module = traced.graph_module.get_submodule(str(node.target))
        for klass in type(module).__mro__:
            if klass in MODULE_RULES:
                return MODULE_RULES[klass]
        return None
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target)
    if node.op == "call_method":
        return METHOD_RULES.get(str(node.target))
    return None


def describe_op(traced: TracedModel, node: fx.Node) -> str:
    """The user's handle for the op of `node`: a module class, a function or a method name."""
    if node.op == "call_module":
        module = traced.graph_module.get_submodule(str(node.target))
        return f"module {node.target} ({type(module).__module__}.{type(module).__qualname__})"
    if node.op == "call_function":
        target = node.target
        module_name = getattr(target, "__module__", None) or ""
        name = getattr(target, "__name__", None) or str(target)
        return f"function {module_name}.{name}".replace("function .", "function ")
    return f"method Tensor.{node.target}"


class RuleContext:
    """The view a rule gets: shapes of the node's inputs and output, and the graph it adds to."""

    def __init__(self, traced: TracedModel, graph: DimGraph) -> None:
        self.traced = traced
        self.graph = graph
        # Where an int in the traced program came from: `x.size(1)` -> (x's dim 1).
        self.size_sources: dict[str, Dim] = {}
        self.shape_sources: dict[str, tuple[Dim, ...]] = {}
        # Ints computed from sizes by arithmetic: `x.size(2) // 4` -> {x's dim 2}.
        self.derived_sizes: dict[str, set[Dim]] = {}

    # ---- shapes and dims ----------------------------------------------------------------

    def shape(self, arg: Any) -> torch.Size | None:
        """Return the tensor shape of a node argument, or None if it is not a tensor."""
        if isinstance(arg, fx.Node):
            value = self.traced.shapes.get(arg.name)
            if isinstance(value, torch.Size):
                return value
        return None

    def dims(self, arg: Any) -> list[Dim]:
        """Return the dims of a tensor-valued node argument (empty for non-tensors)."""
        shape = self.shape(arg)
        if shape is None or not isinstance(arg, fx.Node):
            return []
        return [self.value_dim(arg.name, i, size) for i, size in enumerate(shape)]

    def value_dim(self, name: str, index: int, size: int) -> Dim:
        dim = Dim("value", name, index)
        if dim not in self.graph.sizes:
            self.graph.add_dim(dim, size)
        return dim

    def output_dims(self, node: fx.Node, element: int | None = None) -> list[Dim]:
        shape = self.traced.shapes.get(node.name)
        name = node.name
        if element is not None:
            assert isinstance(shape, (tuple, list)), f"{node.name} has no tuple output"
            shape = shape[element]
            name = f"{node.name}.{element}"
        if not isinstance(shape, torch.Size):
            return []
        return [self.value_dim(name, i, size) for i, size in enumerate(shape)]

    def param_dims(self, qualified_name: str) -> list[Dim]:
        """Dims of a parameter, named canonically so tied parameters share their dims."""
        canonical = self.traced.alias_to_param[qualified_name]
        shape = self.traced.params[canonical].shape
        dims = [Dim("param", canonical, i) for i in range(len(shape))]
        for dim, size in zip(dims, shape):
            if dim not in self.graph.sizes:
                self.graph.add_dim(dim, size)
        return dims

    def module_param_dims(self, node: fx.Node, local_name: str) -> list[Dim] | None:
        """Dims of parameter `local_name` of the module called by `node`, if it has one."""
        module = self.traced.graph_module.get_submodule(str(node.target))
        if getattr(module, local_name, None) is None:
            return None
        return self.param_dims(f"{node.target}.{local_name}")

    # ---- couplings ----------------------------------------------------------------------

    def equal(self, a: Dim, b: Dim, node: fx.Node) -> None:
        self._tie(a, b, node, "equal")

    def contract(self, a: Dim, b: Dim, node: fx.Node) -> None:
        """Tie two dims that a matmul sums over: same size and index map, like `equal`."""
        self._tie(a, b, node, "contract")

    def _tie(self, a: Dim, b: Dim, node: fx.Node, kind: str) -> None:
        size_a, size_b = self.graph.sizes[a], self.graph.sizes[b]
        if size_a != size_b:
            self.freeze([a, b], f"{node.name} ties dims of sizes {size_a} and {size_b}")
            return
        if a != b:
            self.graph.equal_edges.add_edge(a, b, node=node.name, kind=kind)

    def equal_all(self, pairs: Iterable[tuple[Dim, Dim]], node: fx.Node) -> None:
        for a, b in pairs:
            self.equal(a, b, node)

    def factor(self, whole: Dim, parts: list[Dim], node: fx.Node) -> None:
        self._relation("factor", whole, parts, node)

    def concat(self, whole: Dim, parts: list[Dim], node: fx.Node) -> None:
        self._relation("concat", whole, parts, node)

    def _relation(self, kind: str, whole: Dim, parts: list[Dim], node: fx.Node) -> None:
        sizes = [self.graph.sizes[p] for p in parts]
        expected = _product(sizes) if kind == "factor" else sum(sizes)
        if expected != self.graph.sizes[whole]:
            self.freeze([whole, *parts], f"{node.name}: {kind} sizes do not add up")
            return
        relation = Relation(kind, whole, tuple(parts), node.name)  # type: ignore[arg-type]
        self.graph.relations.append(relation)

    def tag(self, dim: Dim, kind: TagKind, node: fx.Node) -> None:
        tag = Tag(kind, node.name, self.traced.owner(node) or str(node.target))
        self.graph.tags.setdefault(dim, []).append(tag)

    def freeze(self, dims: Iterable[Dim], reason: str) -> None:
        for dim in dims:
            self.graph.frozen.setdefault(dim, reason)

    def freeze_node(self, node: fx.Node, reason: str) -> None:
        """Freeze every dim that `node` reads or writes, including parameters of its module."""
        touched = list(self.output_dims(node))
        shape = self.traced.shapes.get(node.name)
        if isinstance(shape, (tuple, list)):
            for element in range(len(shape)):
                if isinstance(shape[element], torch.Size):
                    touched += self.output_dims(node, element)
        for arg in _flat_args(node):
            touched += self.dims(arg)
        if node.op == "call_module":
            module = self.traced.graph_module.get_submodule(str(node.target))
            for local_name, _ in module.named_parameters():
                touched += self.param_dims(f"{node.target}.{local_name}")
        self.freeze(touched, reason)


def _flat_args(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)  # type: ignore[func-returns-value]
    return found


def _product(values: Iterable[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


__all__ = [
    "Relation",
    "Rule",
    "RuleContext",
    "find_rule",
    "register_function_rule",
    "register_method_rule",
    "register_module_rule",
]
