"""The schedule IR: what a `.grow` file means, as frozen pydantic models.

A `Schedule` is independent of any model: it names width axes by role (`hidden`, `ffn`, ...)
and says when and how to widen them. Binding it to a model's dimension graph happens in
`sparkling_ir.compile`. Every node that a user wrote carries its `Span`, so later stages can
report errors at the file position that caused them.

Variants are told apart by a `kind` literal, so the IR round-trips through JSON.

Spans follow one rule: a statement's `span` is its first keyword (`widen`, `lr`, `at`), and
a value's span (`AtStep.span`, `ByFactor.span`, `CosineLR.peak_span`, ...) is its number.
Nodes built in Python rather than parsed have no spans. `without_spans()` drops them, for
comparing two schedules by meaning.

The IR accepts values that the language rejects (a fraction of 2, a factor of 0.5), so
that `sparkling_ir.schedule.validate` can report every mistake of a file at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

AxisName = Literal["hidden", "ffn", "heads", "kv_heads", "head_dim", "experts", "expert_ffn"]
AXIS_NAMES: tuple[AxisName, ...] = (
    "hidden", "ffn", "heads", "kv_heads", "head_dim", "experts", "expert_ffn",
)

InitMethod = Literal["sparkling", "random", "zero"]
INIT_METHODS: tuple[InitMethod, ...] = ("sparkling", "random", "zero")


class IRModel(BaseModel):
    """Base of every IR node: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def without_spans(self) -> Self:
        """Return a copy in which every `Span`, at any depth, is None."""
        return type(self).model_validate(_drop_spans(self.model_dump()))


class Span(IRModel):
    """A position in a schedule file (1-based line and column)."""

    file: str
    line: int
    column: int


def _drop_spans(value: Any) -> Any:
    """Set every span field of a `model_dump()` to None; a span field is one whose name is
    `span` or ends in `_span`."""
    if isinstance(value, dict):
        return {
            key: None if key == "span" or key.endswith("_span") else _drop_spans(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_drop_spans(item) for item in value]
    return value


# ---- when an event fires ------------------------------------------------------------------


class AtStep(IRModel):
    """A count of completed optimizer steps, written `at step 2000` or `at 2000 steps`."""

    kind: Literal["step"] = "step"
    step: int
    span: Span | None = None


class AtFraction(IRModel):
    """A fraction of the training length, written `at 50%` or `at 0.5`."""

    kind: Literal["fraction"] = "fraction"
    fraction: float
    span: Span | None = None


class AtTokens(IRModel):
    """A count of training tokens seen, written `at 2M tokens`."""

    kind: Literal["tokens"] = "tokens"
    tokens: int
    span: Span | None = None


Trigger = Annotated[AtStep | AtFraction | AtTokens, Field(discriminator="kind")]


# ---- how much to widen --------------------------------------------------------------------


class ByFactor(IRModel):
    """`widen AXIS xFACTOR`: the new size is `round(old * factor)`; must be an integer."""

    kind: Literal["factor"] = "factor"
    factor: float
    span: Span | None = None


class ToSize(IRModel):
    """`widen AXIS to SIZE`: the new size, absolute."""

    kind: Literal["to"] = "to"
    size: int
    span: Span | None = None


Amount = Annotated[ByFactor | ToSize, Field(discriminator="kind")]


class Widen(IRModel):
    """`widen AXIS AMOUNT`: one width axis of the model and its new size."""

    axis: AxisName
    amount: Amount
    span: Span | None = None
    axis_span: Span | None = None


# ---- how new entries are initialised and trained ------------------------------------------


class InitPolicy(IRModel):
    """Initialisation of new entries: `init sparkling | random | zero`."""

    method: InitMethod = "sparkling"
    span: Span | None = None


class OptimizerPolicy(IRModel):
    """Optimizer state of widened tensors.

    `reset_new`: `[S, 0]`, old positions keep their state, new positions start at zero (default).
    `reset_all`: every state tensor of a widened parameter starts at zero.
    `copy`: new positions copy the state of the entry they were copied from (symmetric; kept
    as a negative control, it leaves copied units locked together).
    """

    kind: Literal["reset_new", "reset_all", "copy"] = "reset_new"
    span: Span | None = None


class RewarmupLR(IRModel):
    """New entries: linear from `eta_e` to `peak_factor * eta_e` over `warmup_steps`, then a
    half-cosine down to the base schedule's minimum at the end of training. Old entries keep
    the base schedule."""

    kind: Literal["rewarmup"] = "rewarmup"
    warmup_steps: int = 250
    peak_factor: float = 1.3
    span: Span | None = None
    warmup_steps_span: Span | None = None
    peak_factor_span: Span | None = None


class InheritLR(IRModel):
    """New entries follow the base schedule, like the old entries (`lr new same`)."""

    kind: Literal["inherit"] = "inherit"
    span: Span | None = None


LRPolicy = Annotated[RewarmupLR | InheritLR, Field(discriminator="kind")]


class GrowthEvent(IRModel):
    """`at TRIGGER { ... }`: the axes to widen at one point of training, and how."""

    trigger: Trigger
    widens: tuple[Widen, ...]
    init: InitPolicy = InitPolicy()
    optimizer: OptimizerPolicy = OptimizerPolicy()
    lr: LRPolicy = RewarmupLR()
    span: Span | None = None


# ---- the base schedule and the whole file -------------------------------------------------


class TrainSteps(IRModel):
    """`train N steps`: the length of training in optimizer steps."""

    kind: Literal["steps"] = "steps"
    steps: int
    span: Span | None = None


class TrainTokens(IRModel):
    """`train N tokens`: the length of training in tokens. The training job turns it into
    steps with its tokens per step."""

    kind: Literal["tokens"] = "tokens"
    tokens: int
    span: Span | None = None


TrainLength = Annotated[TrainSteps | TrainTokens, Field(discriminator="kind")]


class CosineLR(IRModel):
    """Base schedule: linear warmup from 0 to `peak` over `warmup_steps`, then cosine to `min`."""

    kind: Literal["cosine"] = "cosine"
    peak: float
    min: float
    warmup_steps: int = 0
    span: Span | None = None
    peak_span: Span | None = None
    min_span: Span | None = None
    warmup_steps_span: Span | None = None


class Schedule(IRModel):
    """A whole `.grow` file: `schedule NAME { ... }`, with events in the order they fire."""

    name: str
    train: TrainLength
    base_lr: CosineLR | None = None
    events: tuple[GrowthEvent, ...] = ()
    source: str | None = None  # file the schedule was read from, for messages
    span: Span | None = None
