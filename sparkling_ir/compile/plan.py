"""Bind one growth event to a model's axes and plan every change it implies.

`plan_growth` is the middle of the compiler. It resolves the schedule's axis names (`hidden`,
`ffn`, `heads`) to the model's axes, checks the new sizes and propagates index maps through
the dimension graph. The resulting `GrowthPlan` lists the index maps and fan-in scale of each
parameter, the output scales of tied heads, and the module attributes that store a grown
size. Planning changes nothing, because `sparkling_ir.compile.emit` applies the plan.

Fan-in scale (the RMS-consistent alpha of SPARKLING, Yu et al., arXiv 2602.02472): a layer
that sums over a widened input dim of old size `d` is multiplied as a whole by `alpha`. When
new inputs and new columns are both copies, the output variance grows by `sum_r k_r^2 / d`,
where `k_r` counts the copies of old input `r`. So `alpha = sqrt(d / sum_r k_r^2)`, which is
`1 / sqrt(1 + 3c)` when each input is copied at most once (`d' = (1 + c) d`) and `d / d'` for
uniform replication. At 2x it is exactly `1/2`, which also preserves the function. With random
or zero new entries the new columns add independent terms, and `alpha = sqrt(d / d')`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from torch import nn

from sparkling_ir.compile.propagate import propagate_maps
from sparkling_ir.compile.remap import DimRemap, ParamRemap
from sparkling_ir.errors import BindError, Diagnostic
from sparkling_ir.graph.axes import Axis, AxisAnalysis
from sparkling_ir.graph.dims import Dim
from sparkling_ir.trace.fx_frontend import collect_params
from sparkling_ir.schedule.ir import (
    ByFactor,
    GrowthEvent,
    InitMethod,
    LRPolicy,
    OptimizerPolicy,
    Span,
    Widen,
)


class PlanModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AxisChange(PlanModel):
    axis: str
    role: str
    old_size: int
    new_size: int


class ParamChange(PlanModel):
    """The widening of one parameter, by canonical name; `aliases` lists its tied names."""

    name: str
    aliases: tuple[str, ...]
    remap: ParamRemap
    fan_in_dims: tuple[int, ...]
    fan_out_dims: tuple[int, ...]
    scale: float  # multiplies the whole tensor (fan-in alpha); 1.0 when nothing sums over it


class OutputScale(PlanModel):
    """A module whose output is multiplied by `scale`: the fan-in side of a tied weight."""

    module: str
    scale: float
    param: str


class AttributeChange(PlanModel):
    """An int stored outside tensors (`blocks.0.attn.n_head`, `config.n_embd`) to rewrite."""

    module: str
    path: str
    old: int
    new: int

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.path}" if self.module else self.path


class GrowthPlan(PlanModel):
    event_index: int
    init: InitMethod
    optimizer: OptimizerPolicy
    lr: LRPolicy
    axes: tuple[AxisChange, ...]
    params: tuple[ParamChange, ...]
    output_scales: tuple[OutputScale, ...]
    attributes: tuple[AttributeChange, ...]

    def format(self) -> str:
        """Stable text form of the plan, one change per line."""
        lines = [f"growth event {self.event_index}: init {self.init}, optimizer "
                 f"{self.optimizer.kind}, lr {self.lr.kind}"]
        lines += [f"  axis   {a.axis} ({a.role}): {a.old_size} -> {a.new_size}" for a in self.axes]
        for p in self.params:
            dims = ", ".join(f"[{d}] {r.describe()}" for d, r in sorted(p.remap.dims.items()))
            scale = f", scale {p.scale:.6g}" if p.scale != 1.0 else ""
            lines.append(f"  param  {p.name} {list(p.remap.old_shape)} -> "
                         f"{list(p.remap.new_shape)}: {dims}{scale}")
        lines += [f"  output {o.module} x {o.scale:.6g} (tied {o.param})" for o in self.output_scales]
        lines += [f"  attr   {a.qualified}: {a.old} -> {a.new}" for a in self.attributes]
        return "\n".join(lines)


# Attribute names that conventionally store the size of each role's axis.
ATTRIBUTE_NAMES: dict[str, tuple[str, ...]] = {
    "hidden": ("n_embd", "hidden_size", "d_model", "embed_dim", "n_embed", "emb_dim", "dim"),
    "ffn": ("ffn_dim", "intermediate_size", "d_ff", "n_inner", "ffn_hidden_size", "mlp_dim"),
    "heads": ("n_head", "n_heads", "num_heads", "num_attention_heads"),
    "head_dim": ("head_dim", "head_size", "d_head", "kv_channels"),
}

# Larger dims do not fit the 32-bit indices that many kernels use.
MAX_DIM_SIZE = 2**31 - 1

# Axis names that the schedule language accepts but this compiler cannot grow yet, with reasons.
NOT_YET_GROWABLE: dict[str, str] = {
    "head_dim": "growing head_dim changes the attention score scale 1/sqrt(head_dim) and the "
                "q . k contraction, which needs a score-scale rewrite not implemented yet",
    "kv_heads": "grouped-query attention is not modelled yet",
    "experts": "mixture-of-experts layers are not modelled yet",
    "expert_ffn": "mixture-of-experts layers are not modelled yet",
}


def plan_growth(
    analysis: AxisAnalysis, model: nn.Module, event: GrowthEvent, event_index: int,
) -> GrowthPlan:
    """Plan `event` on the analysed model; raise `BindError` listing every problem found."""
    diagnostics: list[Diagnostic] = []
    atom_maps: dict[int, DimRemap] = {}
    changes: list[AxisChange] = []
    for widen in event.widens:
        for axis, new_size in _bind_widen(analysis, widen, event.init.method, diagnostics):
            atom_maps[axis.atom] = DimRemap.append_cyclic(axis.size, new_size)
            changes.append(AxisChange(axis=axis.name, role=axis.role, old_size=axis.size, new_size=new_size))
    if diagnostics:
        raise BindError(diagnostics)

    class_maps = propagate_maps(analysis, atom_maps)
    aliases = {name: info.aliases for name, info in collect_params(model)[0].items()}
    params, outputs = _plan_params(analysis, class_maps, event.init.method, aliases)
    attributes = _plan_attributes(analysis, model, changes, event, diagnostics)
    if diagnostics:
        raise BindError(diagnostics)
    return GrowthPlan(
        event_index=event_index, init=event.init.method, optimizer=event.optimizer,
        lr=event.lr, axes=tuple(changes), params=tuple(params),
        output_scales=tuple(outputs), attributes=tuple(attributes),
    )


# ---- binding axis names to axes ---------------------------------------------------------------


def _bind_widen(
    analysis: AxisAnalysis, widen: Widen, init: InitMethod, diagnostics: list[Diagnostic],
) -> list[tuple[Axis, int]]:
    def fail(message: str) -> list[tuple[Axis, int]]:
        diagnostics.append(_diagnostic(widen.span, message))
        return []

    if widen.axis in NOT_YET_GROWABLE:
        return fail(f"cannot widen {widen.axis}: {NOT_YET_GROWABLE[widen.axis]}")
    axes = analysis.axes_with_role(widen.axis)
    if not axes:
        return fail(_no_axis_message(analysis, widen.axis))
    bound = []
    for axis in axes:
        if axis.frozen:
            return fail(f"cannot widen {axis.name}: {axis.frozen[0]}")
        if init == "zero" and analysis.classes[axis.atom] & analysis.graph.gated:
            return fail(
                f"cannot widen {axis.name} with init zero: its units multiply two computed "
                "factors (a gated unit such as SwiGLU), so zero rows in both would get no "
                "gradient and never train; use init sparkling or init random"
            )
        new_size = _new_size(axis, widen, diagnostics)
        if new_size is None:
            return []  # one message per widen, even when it binds several axes
        bound.append((axis, new_size))
    return bound


def _no_axis_message(analysis: AxisAnalysis, role: str) -> str:
    """Explain a missing axis, naming the axes whose role is unknown and why they are frozen."""
    found = sorted({a.role for a in analysis.axes if a.role not in ("indexed", "other")})
    message = f"this model has no {role} axis"
    message += f"; its axes are: {', '.join(found)}" if found else "; no axis has a known role"
    unknown = [a for a in analysis.axes if a.role == "other"]
    if unknown:
        first = unknown[0]
        reason = f"frozen: {first.frozen[0]}" if first.frozen else "its role is unknown"
        message += (f". {len(unknown)} axis(es) have no role, e.g. {first.name} "
                    f"(size {first.size}, {reason})")
    return message


def _new_size(axis: Axis, widen: Widen, diagnostics: list[Diagnostic]) -> int | None:
    if isinstance(widen.amount, ByFactor):
        exact = axis.size * widen.amount.factor
        if not math.isfinite(exact) or abs(exact - round(exact)) > 1e-9:
            diagnostics.append(_diagnostic(widen.span, (
                f"widen {widen.axis} x{widen.amount.factor!r} gives {exact!r} for {axis.name} "
                f"(size {axis.size}), which is not an integer; use a factor that divides "
                f"evenly or `to SIZE`"
            )))
            return None
        new_size = round(exact)
    else:
        new_size = widen.amount.size
    if new_size > MAX_DIM_SIZE:
        diagnostics.append(_diagnostic(widen.span, (
            f"widen {widen.axis} makes {axis.name} {new_size:,} wide, more than the largest "
            f"tensor dim supported ({MAX_DIM_SIZE:,}); choose a smaller size"
        )))
        return None
    if new_size <= axis.size:
        diagnostics.append(_diagnostic(widen.span, (
            f"widen {widen.axis} to {new_size} does not grow {axis.name}, which already has "
            f"size {axis.size}; the new size must be larger"
        )))
        return None
    return new_size


def _diagnostic(span: Span | None, message: str) -> Diagnostic:
    if span is None:
        return Diagnostic("<schedule>", 1, 1, message)
    return Diagnostic(span.file, span.line, span.column, message, _source_line(span))


def _source_line(span: Span) -> str:
    try:
        lines = Path(span.file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    return lines[span.line - 1] if 0 < span.line <= len(lines) else ""


# ---- parameters ---------------------------------------------------------------------------------


def _plan_params(
    analysis: AxisAnalysis, class_maps: dict[int, DimRemap], init: InitMethod,
    aliases: dict[str, tuple[str, ...]],
) -> tuple[list[ParamChange], list[OutputScale]]:
    traced_params = {
        dim.name for dim in analysis.graph.sizes if dim.kind == "param"
    }
    params: list[ParamChange] = []
    outputs: list[OutputScale] = []
    for name in sorted(traced_params):
        change, scales = _plan_param(analysis, class_maps, init, name, aliases[name])
        if change is not None:
            params.append(change)
            outputs += scales
    return params, outputs


def _plan_param(
    analysis: AxisAnalysis, class_maps: dict[int, DimRemap], init: InitMethod, name: str,
    aliases: tuple[str, ...],
) -> tuple[ParamChange | None, list[OutputScale]]:
    graph = analysis.graph
    rank = sum(1 for dim in graph.sizes if dim.kind == "param" and dim.name == name)
    dims = [Dim("param", name, i) for i in range(rank)]
    remaps = {
        i: class_maps[analysis.class_of[dim]]
        for i, dim in enumerate(dims)
        if analysis.class_of[dim] in class_maps and _changes(class_maps[analysis.class_of[dim]])
    }
    if not remaps:
        return None, []

    fan_in, fan_out, scale, outputs = [], [], 1.0, []
    for index in remaps:
        kinds = {tag.kind for tag in graph.tags.get(dims[index], [])}
        alpha = fan_in_scale(remaps[index], init)
        if "fan_out" in kinds:
            fan_out.append(index)
        if "fan_in" not in kinds:
            continue
        fan_in.append(index)
        if "fan_out" in kinds or "indexed" in kinds:
            # A tied weight: the producing use needs the copy unscaled, so the consuming use
            # scales its output instead (the logits of a tied head).
            outputs += [
                OutputScale(module=tag.module, scale=alpha, param=name)
                for tag in graph.tags[dims[index]] if tag.kind == "fan_in"
            ]
        else:
            scale *= alpha

    old_shape = tuple(graph.sizes[d] for d in dims)
    new_shape = tuple(remaps[i].new_size if i in remaps else old_shape[i] for i in range(rank))
    remap = ParamRemap(name=name, old_shape=old_shape, new_shape=new_shape, dims=remaps)
    change = ParamChange(
        name=name, aliases=aliases, remap=remap, fan_in_dims=tuple(fan_in),
        fan_out_dims=tuple(fan_out), scale=scale,
    )
    return change, outputs


def _changes(remap: DimRemap) -> bool:
    return remap.new_size != remap.old_size or remap.source != tuple(range(remap.new_size))


def fan_in_scale(remap: DimRemap, init: InitMethod) -> float:
    """RMS-consistent alpha for a layer summing over a dim widened by `remap` (see module doc)."""
    if init == "sparkling":
        counts = remap.copy_counts().double()
        return math.sqrt(remap.old_size / float((counts**2).sum()))
    return math.sqrt(remap.old_size / remap.new_size)


# ---- sizes stored outside tensors ---------------------------------------------------------------


def _plan_attributes(
    analysis: AxisAnalysis, model: nn.Module, changes: list[AxisChange],
    event: GrowthEvent, diagnostics: list[Diagnostic],
) -> list[AttributeChange]:
    planned: dict[tuple[str, str], AttributeChange] = {}
    axes = {a.name: a for a in analysis.axes}
    for change in changes:
        names = ATTRIBUTE_NAMES.get(change.role, ())
        scopes = _owning_modules(a.param for a in axes[change.axis].members)
        for module_name in sorted(scopes):
            module = model.get_submodule(module_name)
            for path in _matching_attributes(module, names, change.old_size):
                key = (module_name, path)
                new = AttributeChange(module=module_name, path=path, old=change.old_size, new=change.new_size)
                if key in planned and planned[key].new != new.new:
                    diagnostics.append(_diagnostic(event.span, (
                        f"{new.qualified} stores the size of several axes that would grow to "
                        f"different sizes ({planned[key].new} and {new.new}); widen them to the same size"
                    )))
                planned[key] = new
    return [planned[key] for key in sorted(planned)]


def _owning_modules(param_names: Iterable[str]) -> set[str]:
    """Return every module that owns one of the parameters, with all its ancestors."""
    modules = {""}
    for name in param_names:
        parts = name.split(".")[:-1]
        modules.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return modules


def _matching_attributes(module: nn.Module, names: tuple[str, ...], old: int) -> list[str]:
    found = []
    for name in names:
        if _is_size(getattr(module, name, None), old):
            found.append(name)
    config = getattr(module, "config", None)
    if config is not None and not isinstance(config, (nn.Module, dict)):
        found += [f"config.{n}" for n in names if _is_size(getattr(config, n, None), old)]
    return found


def _is_size(value: object, old: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == old


def check_events(
    analysis: AxisAnalysis, model: nn.Module, events: Iterable[GrowthEvent],
) -> dict[str, int]:
    """Check every event's axes and sizes up front, following sizes from event to event.

    Returns the size of every axis after the last event. Raises `BindError` with the problems
    of all events together. The full plan of a later event is only built when it fires, on
    the model as the earlier events left it.
    """
    del model  # sizes stored outside tensors are checked when the event is planned
    diagnostics: list[Diagnostic] = []
    sizes = {axis.name: axis.size for axis in analysis.axes}
    for event in events:
        for widen in event.widens:
            view = _with_sizes(analysis, sizes)
            for axis, new_size in _bind_widen(view, widen, event.init.method, diagnostics):
                sizes[axis.name] = new_size
    if diagnostics:
        raise BindError(diagnostics)
    return sizes


def estimate_parameter_count(analysis: AxisAnalysis, sizes: dict[str, int]) -> int:
    """Estimate the parameter count once every axis has the given size.

    A dim that depends on several grown atoms (a flat `n_head * head_dim`) grows by the
    product of their ratios, which is exact for products and an upper bound for concatenations.
    """
    ratios = {axis.atom: sizes[axis.name] / axis.size for axis in analysis.axes}
    class_ratio = [1.0] * len(analysis.classes)
    for atom, ratio in ratios.items():
        if ratio != 1.0:
            for dependent in analysis.dependents(atom):
                class_ratio[dependent] *= ratio
    shapes: dict[str, dict[int, int]] = {}
    for dim, size in analysis.graph.sizes.items():
        if dim.kind == "param":
            new = size * class_ratio[analysis.class_of[dim]]
            shapes.setdefault(dim.name, {})[dim.index] = round(new)
    total = 0
    for dims in shapes.values():
        total += math.prod(dims.values())
    return total


def _with_sizes(analysis: AxisAnalysis, sizes: dict[str, int]) -> AxisAnalysis:
    """Return a copy of `analysis` whose axes carry the simulated `sizes`."""
    view = copy.copy(analysis)
    view.axes = [axis.model_copy(update={"size": sizes[axis.name]}) for axis in analysis.axes]
    return view
