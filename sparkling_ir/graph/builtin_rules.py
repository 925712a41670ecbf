"""Dimension rules for the ops of transformer language models.

Covered: Linear (module and `F.linear`), Embedding, LayerNorm and RMSNorm, activations,
dropout, element-wise arithmetic with broadcasting, softmax, `view`/`reshape`, `transpose`/
`permute`, `split`/`chunk` and tuple indexing, `size`/`shape`, `arange`, and
`scaled_dot_product_attention`. Anything else is frozen by the graph builder.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from sparkling_ir.graph.dims import Dim
from sparkling_ir.graph.rules import (
    RuleContext,
    register_function_rule,
    register_method_rule,
    register_module_rule,
)

# ---- layers with parameters -----------------------------------------------------------------


@register_module_rule(nn.Linear)
def linear_module(ctx: RuleContext, node: fx.Node) -> None:
    weight = ctx.module_param_dims(node, "weight")
    bias = ctx.module_param_dims(node, "bias")
    assert weight is not None
    _linear(ctx, node, node.args[0], weight, bias)


@register_function_rule(F.linear)
def linear_function(ctx: RuleContext, node: fx.Node) -> None:
    args = list(node.args) + [node.kwargs.get("bias")]
    weight = _param_of(ctx, args[1])
    bias = _param_of(ctx, args[2]) if len(args) > 2 and args[2] is not None else None
    if weight is None:
        ctx.freeze_node(node, f"{node.name}: F.linear with a computed weight is not supported")
        return
    _linear(ctx, node, args[0], weight, bias)


def _linear(
    ctx: RuleContext, node: fx.Node, source: Any, weight: list[Dim], bias: list[Dim] | None,
) -> None:
    # x (..., in) @ W.T (in, out) + b (out) -> y (..., out)
    x, y = ctx.dims(source), ctx.output_dims(node)
    ctx.equal_all(zip(x[:-1], y[:-1]), node)
    ctx.contract(x[-1], weight[1], node)
    ctx.equal(y[-1], weight[0], node)
    ctx.tag(weight[1], "fan_in", node)
    ctx.tag(weight[0], "fan_out", node)
    if bias is not None:
        ctx.equal(y[-1], bias[0], node)
        ctx.tag(bias[0], "fan_out", node)


def _param_of(ctx: RuleContext, arg: Any) -> list[Dim] | None:
    """Dims of the parameter that a `get_attr` node reads, if `arg` is one."""
    if isinstance(arg, fx.Node) and arg.op == "get_attr":
        name = str(arg.target)
        if name in ctx.traced.alias_to_param:
            return ctx.param_dims(name)
    return None


@register_module_rule(nn.Embedding)
def embedding(ctx: RuleContext, node: fx.Node) -> None:
    # ids (...) -> weight[ids] (..., embedding_dim)
    weight = ctx.module_param_dims(node, "weight")
    assert weight is not None
    ids, y = ctx.dims(node.args[0]), ctx.output_dims(node)
    ctx.equal_all(zip(ids, y[:-1]), node)
    ctx.equal(y[-1], weight[1], node)
    ctx.tag(weight[1], "fan_out", node)
    ctx.tag(weight[0], "indexed", node)


@register_module_rule(nn.LayerNorm, nn.RMSNorm)
def norm(ctx: RuleContext, node: fx.Node) -> None:
    x, y = ctx.dims(node.args[0]), ctx.output_dims(node)
    ctx.equal_all(zip(x, y), node)
    normalized = len(ctx.traced.graph_module.get_submodule(str(node.target)).normalized_shape)  # type: ignore[arg-type]
    for local_name in ("weight", "bias"):
        param = ctx.module_param_dims(node, local_name)
        if param is None:
            continue
        for offset, dim in enumerate(param):
            ctx.equal(y[len(y) - normalized + offset], dim, node)
            ctx.tag(dim, "elementwise", node)


# ---- shape-preserving ops ---------------------------------------------------------------------

_SAME_SHAPE_MODULES = (
    nn.Dropout, nn.GELU, nn.ReLU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Softmax,
    nn.LeakyReLU, nn.Mish, nn.ELU,
)
_SAME_SHAPE_FUNCTIONS = (
    F.gelu, F.relu, F.silu, F.dropout, F.softmax, F.log_softmax, F.tanh, F.sigmoid,
    torch.tanh, torch.sigmoid, torch.relu, torch.exp, torch.rsqrt, torch.softmax,
    torch.nn.functional.mish, torch.sqrt, torch.pow, torch.square, torch.abs,
)
_SAME_SHAPE_METHODS = (
    "contiguous", "float", "half", "bfloat16", "to", "type_as", "clone", "detach",
    "softmax", "relu", "sigmoid", "tanh", "exp", "rsqrt", "sqrt", "pow", "square", "abs",
)


@register_module_rule(*_SAME_SHAPE_MODULES)
@register_function_rule(*_SAME_SHAPE_FUNCTIONS)
@register_method_rule(*_SAME_SHAPE_METHODS)
def same_shape(ctx: RuleContext, node: fx.Node) -> None:
    x, y = ctx.dims(node.args[0]), ctx.output_dims(node)
    if len(x) != len(y):
        ctx.freeze_node(node, f"{node.name} changed the rank of its input")
        return
    ctx.equal_all(zip(x, y), node)


@register_method_rule("mean", "amax", "amin")
@register_function_rule(torch.mean, torch.amax, torch.amin)
def normalising_reduction(ctx: RuleContext, node: fx.Node) -> None:
    """Reductions whose value does not depend on how many copies a dim holds.

    The mean (or maximum, minimum) over `[h, h]` equals that over `h`, so the reduced dim may
    grow: it ties nothing. `sum` doubles and the unbiased `var` changes, so neither has a rule.
    """
    x, y = ctx.dims(node.args[0]), ctx.output_dims(node)
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
    if dims is None:
        return  # reduced to a scalar: no dim survives
    reduced = {d % len(x) for d in (dims if isinstance(dims, (tuple, list)) else [dims])}  # type: ignore[operator]
    kept = [d for i, d in enumerate(x) if i not in reduced or keepdim]
    for in_dim, out_dim in zip(kept, y):
        if x.index(in_dim) not in reduced:
            ctx.equal(in_dim, out_dim, node)


@register_function_rule(
    operator.add, operator.sub, operator.mul, operator.truediv,
    torch.add, torch.sub, torch.mul, torch.div,
)
@register_method_rule("add", "sub", "mul", "div")
def elementwise(ctx: RuleContext, node: fx.Node) -> None:
    if not ctx.output_dims(node):
        _track_derived_size(ctx, node)
        return
    # Broadcasting aligns dims from the right; a dim of size 1 against a larger one is a
    # broadcast and ties nothing.
    y = ctx.output_dims(node)
    factors = [ctx.dims(arg) for arg in node.args[:2]]
    for x in factors:
        for offset in range(1, len(x) + 1):
            in_dim, out_dim = x[-offset], y[-offset]
            if ctx.graph.sizes[in_dim] == 1 and ctx.graph.sizes[out_dim] != 1:
                continue
            ctx.equal(in_dim, out_dim, node)
    computed = all(isinstance(a, fx.Node) and a.op != "get_attr" for a in node.args[:2])
    if node.target in (operator.mul, torch.mul, "mul") and all(factors) and computed:
        # A product of two computed tensors (a SwiGLU gate): a unit whose factors are both
        # zero gets no gradient, which initialisation must avoid.
        ctx.graph.gated.update(y)


def _track_derived_size(ctx: RuleContext, node: fx.Node) -> None:
    """Remember that an int such as `C // n_head` was computed from the size of some dims."""
    sources: set[Dim] = set()
    for arg in node.args:
        if isinstance(arg, fx.Node):
            if arg.name in ctx.size_sources:
                sources.add(ctx.size_sources[arg.name])
            sources |= ctx.derived_sizes.get(arg.name, set())
    if sources:
        ctx.derived_sizes[node.name] = sources


register_function_rule(operator.floordiv, operator.mod, operator.pow)(_track_derived_size)


# ---- non-tensor values: sizes -------------------------------------------------------------------


@register_method_rule("size")
def size(ctx: RuleContext, node: fx.Node) -> None:
    x = ctx.dims(node.args[0])
    index = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if index is None:
        ctx.shape_sources[node.name] = tuple(x)
    elif isinstance(index, int):
        ctx.size_sources[node.name] = x[index]


@register_function_rule(getattr)
def attribute(ctx: RuleContext, node: fx.Node) -> None:
    if node.args[1] == "shape":
        ctx.shape_sources[node.name] = tuple(ctx.dims(node.args[0]))
    # `x.device` and `x.dtype` carry no dims.


@register_function_rule(operator.getitem)
def getitem(ctx: RuleContext, node: fx.Node) -> None:
    source, index = node.args[0], node.args[1]
    assert isinstance(source, fx.Node)
    if source.name in ctx.shape_sources:
        if isinstance(index, int):
            ctx.size_sources[node.name] = ctx.shape_sources[source.name][index]
        return
    value = ctx.traced.shapes.get(source.name)
    if isinstance(value, (tuple, list)) and isinstance(index, int):
        # One element of a tuple output, e.g. a piece of `split`.
        ctx.equal_all(zip(ctx.output_dims(source, index), ctx.output_dims(node)), node)
        return
    if isinstance(value, torch.Size):
        _tensor_index(ctx, node, source, index)
        return
    if ctx.output_dims(node):
        ctx.freeze_node(node, f"{node.name}: indexing {source.name} is not supported")


def _tensor_index(ctx: RuleContext, node: fx.Node, source: fx.Node, index: Any) -> None:
    # Full slices keep a dim; None inserts one; Ellipsis skips to the right-aligned rest.
    entries = list(index) if isinstance(index, tuple) else [index]
    x, y = ctx.dims(source), ctx.output_dims(node)
    if any(not (e is None or e is Ellipsis or e == slice(None)) for e in entries):
        ctx.freeze_node(node, f"{node.name}: tensor indexing other than full slices is not supported")
        return
    if Ellipsis in entries:
        split_at = entries.index(Ellipsis)
        kept = len(x) - sum(1 for e in entries if e == slice(None))
        entries = entries[:split_at] + [slice(None)] * kept + entries[split_at + 1:]
    entries += [slice(None)] * (len(x) - sum(1 for e in entries if e is not None))
    in_index = 0
    for out_index, entry in enumerate(entries):
        if entry is None:
            continue
        ctx.equal(x[in_index], y[out_index], node)
        in_index += 1


@register_function_rule(torch.arange)
def arange(ctx: RuleContext, node: fx.Node) -> None:
    # arange(end) or arange(start, end): the output length follows `end` when it is a size.
    y = ctx.output_dims(node)
    end = node.args[-1] if node.args else node.kwargs.get("end")
    if isinstance(end, fx.Node) and end.name in ctx.size_sources and len(node.args) <= 2:
        ctx.equal(ctx.size_sources[end.name], y[0], node)


# ---- layout ops ---------------------------------------------------------------------------------


@register_method_rule("view", "reshape")
@register_function_rule(torch.reshape)
def reshape(ctx: RuleContext, node: fx.Node) -> None:
    x, y = ctx.dims(node.args[0]), ctx.output_dims(node)
    _tie_size_arguments(ctx, node, y)
    in_sizes = [ctx.graph.sizes[d] for d in x]
    out_sizes = [ctx.graph.sizes[d] for d in y]
    for in_group, out_group in _reshape_groups(in_sizes, out_sizes):
        ins, outs = [x[i] for i in in_group], [y[j] for j in out_group]
        if len(ins) == 1 and len(outs) == 1:
            ctx.equal(ins[0], outs[0], node)
        elif len(ins) == 1:
            ctx.factor(ins[0], outs, node)  # (..., H * D) -> (..., H, D)
        elif len(outs) == 1:
            ctx.factor(outs[0], ins, node)  # (..., H, D) -> (..., H * D)
        else:
            ctx.freeze([*ins, *outs], f"{node.name} regroups dims {in_group} into {out_group}")


def _tie_size_arguments(ctx: RuleContext, node: fx.Node, y: list[Dim]) -> None:
    """Tie an output dim to the tensor dim that its size argument was read from (`x.size(0)`)."""
    sizes = node.args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if len(sizes) != len(y):
        return
    for arg, out_dim in zip(sizes, y):
        if not isinstance(arg, fx.Node):
            continue
        if arg.name in ctx.size_sources:
            ctx.equal(ctx.size_sources[arg.name], out_dim, node)
        elif arg.name in ctx.derived_sizes:
            sources = sorted(ctx.derived_sizes[arg.name])
            names = ", ".join(str(d) for d in sources)
            ctx.freeze(
                [out_dim, *sources],
                f"{node.name}: the size of {out_dim} is computed from {names} by arithmetic, "
                "so growing one would silently change the other; compute it from module "
                "attributes (such as n_head and head_dim) instead",
            )


def _reshape_groups(
    in_sizes: list[int], out_sizes: list[int],
) -> list[tuple[list[int], list[int]]]:
    """Split a reshape into the smallest runs of dims whose products match.

    `(2, 5, 64) -> (2, 5, 4, 16)` gives `[0]->[0]`, `[1]->[1]`, `[2]->[2, 3]`. A leading dim
    of size 1 joins the run it starts, and trailing ones join the last run.
    """
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(in_sizes) and j < len(out_sizes):
        ins, outs = [i], [j]
        in_product, out_product = in_sizes[i], out_sizes[j]
        i, j = i + 1, j + 1
        while in_product != out_product:
            if in_product < out_product and i < len(in_sizes):
                in_product *= in_sizes[i]
                ins.append(i)
                i += 1
            elif j < len(out_sizes):
                out_product *= out_sizes[j]
                outs.append(j)
                j += 1
            else:
                break
        groups.append((ins, outs))
    if groups:
        groups[-1][0].extend(range(i, len(in_sizes)))
        groups[-1][1].extend(range(j, len(out_sizes)))
    return groups


@register_method_rule("transpose")
@register_function_rule(torch.transpose)
def transpose(ctx: RuleContext, node: fx.Node) -> None:
    x, y = ctx.dims(node.args[0]), ctx.output_dims(node)
    a, b = node.args[1:3]
    if not isinstance(a, int) or not isinstance(b, int):
        ctx.freeze_node(node, f"{node.name}: transpose with computed dims is not supported")
        return
    order = list(range(len(x)))
    order[a], order[b] = order[b], order[a]
    ctx.equal_all(((x[order[k]], y[k]) for k in range(len(y))), node)


@register_method_rule("permute")
@register_function_rule(torch.permute)
def permute(ctx: RuleContext, node: fx.Node) -> None:
    x, y = ctx.dims(node.args[0]), ctx.output_dims(node)
    order = node.args[1] if isinstance(node.args[1], (tuple, list)) else node.args[1:]
    ctx.equal_all(((x[int(order[k])], y[k]) for k in range(len(y))), node)  # type: ignore[arg-type, index]


@register_method_rule("split", "chunk")
@register_function_rule(torch.split, torch.chunk)
def split(ctx: RuleContext, node: fx.Node) -> None:
    # x (..., A + B + C, ...) -> pieces (..., A, ...), (..., B, ...), (..., C, ...)
    x = ctx.dims(node.args[0])
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 0)
    if not isinstance(dim, int):
        ctx.freeze_node(node, f"{node.name}: split along a computed dim is not supported")
        return
    axis = dim % len(x)
    pieces = ctx.traced.shapes[node.name]
    parts = []
    for element in range(len(pieces)):
        y = ctx.output_dims(node, element)
        ctx.equal_all(((x[k], y[k]) for k in range(len(x)) if k != axis), node)
        parts.append(y[axis])
    ctx.concat(x[axis], parts, node)


@register_function_rule(F.scaled_dot_product_attention)
def scaled_dot_product_attention(ctx: RuleContext, node: fx.Node) -> None:
    # q (..., L, E), k (..., S, E), v (..., S, Ev) -> out (..., L, Ev)
    q, k, v = (ctx.dims(a) for a in node.args[:3])
    out = ctx.output_dims(node)
    if node.kwargs.get("enable_gqa"):
        ctx.freeze_node(node, f"{node.name}: grouped-query attention is not supported yet")
        return
    ctx.equal_all(zip(q[:-2], out[:-2]), node)
    ctx.equal_all(zip(k[:-2], out[:-2]), node)
    ctx.equal_all(zip(v[:-2], out[:-2]), node)
    ctx.equal(q[-2], out[-2], node)
    ctx.equal(k[-2], v[-2], node)
    ctx.contract(q[-1], k[-1], node)
    ctx.equal(v[-1], out[-1], node)
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if mask is not None:
        # The mask (..., L, S) broadcasts against the scores (..., L, S).
        m = ctx.dims(mask)
        scores = [*out[:-2], q[-2], k[-2]]
        for offset in range(1, len(m) + 1):
            if ctx.graph.sizes[m[-offset]] != 1:
                ctx.equal(m[-offset], scores[-offset], node)
    ctx.graph.score_dims.update((q[-1], k[-1]))
    if len(q) >= 3:
        ctx.graph.attention_heads.update((q[-3], k[-3], v[-3]))
