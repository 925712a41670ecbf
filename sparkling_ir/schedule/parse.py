"""`.grow` text to schedule IR: parse, lower the tree with a lark Transformer, validate.

    schedule = parse_schedule(text, file="x.grow")   # Schedule, or raises ScheduleError

The stages, each reporting located diagnostics:

1. `syntax.parse_tree`: text to lark tree, or ScheduleSyntaxError with one diagnostic.
2. `_ToIR`: tree to IR. Its methods are named after the grammar's rules. It reports what
   the grammar leaves open: a repeated statement, a missing `train`, numbers of the
   wrong form (`train 2.5 steps`, `peak 6e-4k`, a value beyond 10^18), and a percentage
   outside 0%..100% (`at 100%`).
3. `validate.check_schedule_parts`: the semantic rules (ranges, order of events).

Stages 2 and 3 report all their errors together in one ScheduleError. A value that stage 2
rejects is replaced by a stand-in so that stage 3 can still run, and stage 3's message at
the same place is dropped, leaving one diagnostic per position.

For any input string the parser returns a Schedule or raises ScheduleError; the fuzz tests
check this.
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from lark import Token, Transformer, v_args
from lark.tree import Meta

from sparkling_ir.errors import Diagnostic, ScheduleError
from sparkling_ir.schedule.format import DECIMAL_CONTEXT
from sparkling_ir.schedule.ir import (
    AXIS_NAMES,
    INIT_METHODS,
    AtFraction,
    AtStep,
    AtTokens,
    AxisName,
    ByFactor,
    CosineLR,
    GrowthEvent,
    InheritLR,
    InitMethod,
    InitPolicy,
    OptimizerPolicy,
    RewarmupLR,
    Schedule,
    Span,
    ToSize,
    TrainLength,
    TrainSteps,
    TrainTokens,
    Trigger,
    Widen,
)
from sparkling_ir.schedule.source import STRING_FILE, Source
from sparkling_ir.schedule.syntax import parse_tree
from sparkling_ir.schedule.validate import check_schedule_parts

logger = logging.getLogger(__name__)

# Counts (steps, tokens, sizes) above this are rejected: they fit in an int64, which is
# what the training job stores them in.
LARGEST_COUNT = 10**18

OptimizerKind = Literal["reset_new", "reset_all", "copy"]

_SUFFIX_POWERS = {"k": 3, "K": 3, "M": 6, "B": 9}
_AXES: dict[str, AxisName] = {axis: axis for axis in AXIS_NAMES}
_INIT_METHODS: dict[str, InitMethod] = {method: method for method in INIT_METHODS}


def parse_schedule(text: str, file: str = STRING_FILE) -> Schedule:
    """Parse and validate the text of a `.grow` file.

    `file` names the text in diagnostics and becomes `Schedule.source`. Raises
    ScheduleSyntaxError if the text does not parse, and ScheduleError with every semantic
    error if it parses but is invalid.
    """
    source = Source(file, text)
    tree = parse_tree(source)

    lowering = _ToIR(source)
    draft: _Draft = lowering.transform(tree)

    diagnostics = lowering.diagnostics + check_schedule_parts(
        draft.name, draft.span, draft.train, draft.base_lr, draft.events, source
    )
    if diagnostics or draft.train is None:
        raise ScheduleError(_one_per_position(diagnostics))

    schedule = Schedule(
        name=draft.name,
        train=draft.train,
        base_lr=draft.base_lr,
        events=tuple(draft.events),
        source=file,
        span=draft.span,
    )
    logger.info("parsed schedule %s from %s: %d growth events", draft.name, file, len(draft.events))
    return schedule


def load_schedule(path: str | os.PathLike[str]) -> Schedule:
    """Read, parse and validate a `.grow` file.

    Raises ScheduleError when the file cannot be read (located at line 1, column 1) or is not
    UTF-8 (located at the first invalid byte; a leading byte order mark is allowed), and
    otherwise as `parse_schedule` does.
    """
    file = os.fspath(path)
    try:
        data = Path(file).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        message = f"cannot read the schedule file: {reason}"
        raise ScheduleError([Diagnostic(file, 1, 1, message)]) from error
    # A byte order mark is no column in an editor, so it is dropped before decoding.
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScheduleError([_not_utf8(file, body, error, len(data) - len(body))]) from error
    return parse_schedule(text, file)


def _not_utf8(file: str, body: bytes, error: UnicodeDecodeError, bom: int) -> Diagnostic:
    """Locate the first byte of `body` that is not UTF-8, counting columns in characters;
    `bom` is the length of the byte order mark removed before `body`."""
    before = body[: error.start]
    line = before.count(b"\n") + 1
    line_text = before[before.rfind(b"\n") + 1 :]
    column = len(line_text.decode("utf-8", errors="replace")) + 1
    return Diagnostic(file, line, column, (
        f"the file is not valid UTF-8 (byte 0x{body[error.start]:02x} at offset "
        f"{error.start + bom}); save it as UTF-8"
    ))


def _one_per_position(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Keep the first diagnostic at each line and column: a value rejected for its form is
    not reported again for its range."""
    kept: dict[tuple[str, int, int], Diagnostic] = {}
    for diagnostic in diagnostics:
        kept.setdefault((diagnostic.file, diagnostic.line, diagnostic.column), diagnostic)
    return list(kept.values())


# ---- lowering the tree ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Statement:
    """One statement of a block, with the keyword and position used for duplicate errors."""

    keyword: str
    span: Span
    node: Any


@dataclass
class _Draft:
    """A schedule as the file wrote it; `train` is None if the file has no `train`."""

    name: str
    span: Span
    train: TrainLength | None = None
    base_lr: CosineLR | None = None
    events: list[GrowthEvent] = field(default_factory=list)


class _ToIR(Transformer[Token, Any]):
    """Lowers the parse tree into IR nodes; each method is named after a grammar rule or
    alias and receives its children already lowered. Problems go to `diagnostics`."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.diagnostics: list[Diagnostic] = []

    def start(self, children: list[_Draft]) -> _Draft:
        return children[0]

    @v_args(meta=True)
    def schedule(self, meta: Meta, children: list[Any]) -> _Draft:
        name, *statements = children
        draft = _Draft(name=str(name), span=self._span(meta))
        for statement in self._without_duplicates(statements, "a schedule has one"):
            if statement.keyword == "train":
                draft.train = statement.node
            elif statement.keyword == "lr":
                draft.base_lr = statement.node
            else:
                draft.events.append(statement.node)
        if draft.train is None:
            self._report(draft.span, (
                f"schedule {draft.name} has no `train` statement; add one, such as "
                "`train 4000 steps` or `train 2M tokens`"
            ))
        return draft

    # ---- training length and base LR

    @v_args(meta=True)
    def train_steps(self, meta: Meta, children: list[Token]) -> _Statement:
        (count,) = children
        steps = self._count(count, "a step count")
        return _Statement("train", self._span(meta), TrainSteps(steps=steps, span=self._at(count)))

    @v_args(meta=True)
    def train_tokens(self, meta: Meta, children: list[Token]) -> _Statement:
        (count,) = children
        tokens = self._count(count, "a token count")
        node = TrainTokens(tokens=tokens, span=self._at(count))
        return _Statement("train", self._span(meta), node)

    @v_args(meta=True)
    def base_lr(self, meta: Meta, children: list[Token | None]) -> _Statement:
        peak, minimum, warmup = children
        assert peak is not None and minimum is not None  # the grammar requires both
        node = CosineLR(
            peak=self._real(peak, "a learning rate"),
            min=self._real(minimum, "a learning rate"),
            warmup_steps=0 if warmup is None else self._count(warmup, "a step count"),
            span=self._span(meta),
            peak_span=self._at(peak),
            min_span=self._at(minimum),
            warmup_steps_span=None if warmup is None else self._at(warmup),
        )
        return _Statement("lr", node.span or self._span(meta), node)

    # ---- events

    @v_args(meta=True)
    def event(self, meta: Meta, children: list[Any]) -> _Statement:
        trigger, *statements = children
        span = self._span(meta)
        widens: list[Widen] = []
        policies: dict[str, Any] = {}
        for statement in self._without_duplicates(statements, "an event has one"):
            if statement.keyword == "widen":
                widens.append(statement.node)
            else:
                policies[statement.keyword] = statement.node
        node = GrowthEvent(trigger=trigger, widens=tuple(widens), span=span, **policies)
        return _Statement("at", span, node)

    def at_percent(self, children: list[Token]) -> Trigger:
        (number,) = children
        reported = len(self.diagnostics)
        fraction = self._real(number, "a percentage", power=-2)
        # Checked here rather than in validate, because the IR keeps only the fraction and
        # the message should quote the percentage as written.
        if len(self.diagnostics) == reported and not 0 < fraction < 1:
            self._report_at(number, (
                "an event time given as a percentage of training must be above 0% and "
                f"below 100%, got {number}%"
            ))
        return AtFraction(fraction=fraction, span=self._at(number))

    def at_fraction(self, children: list[Token]) -> Trigger:
        (number,) = children
        return AtFraction(fraction=self._real(number, "a fraction"), span=self._at(number))

    def at_step(self, children: list[Token]) -> Trigger:
        (number,) = children
        return AtStep(step=self._count(number, "a step count"), span=self._at(number))

    at_steps = at_step  # `at 2000 steps` means `at step 2000`

    def at_tokens(self, children: list[Token]) -> Trigger:
        (number,) = children
        return AtTokens(tokens=self._count(number, "a token count"), span=self._at(number))

    # ---- statements inside an event

    @v_args(meta=True)
    def widen(self, meta: Meta, children: list[Any]) -> _Statement:
        axis, amount = children
        span = self._span(meta)
        node = Widen(axis=_AXES[str(axis)], amount=amount, span=span, axis_span=self._at(axis))
        return _Statement("widen", span, node)

    def axis(self, children: list[Token]) -> Token:
        return children[0]

    def factor(self, children: list[Token]) -> ByFactor:
        (number,) = children
        # `x2` is one FACTOR token; `2x` and `x 2` give the number alone.
        text = str(number)[1:] if number.type == "FACTOR" else str(number)
        value = self._real(number, "a factor", text=text)
        return ByFactor(factor=value, span=self._at(number))

    def to_size(self, children: list[Token]) -> ToSize:
        (number,) = children
        return ToSize(size=self._count(number, "a size"), span=self._at(number))

    @v_args(meta=True)
    def init(self, meta: Meta, children: list[InitMethod]) -> _Statement:
        span = self._span(meta)
        return _Statement("init", span, InitPolicy(method=children[0], span=span))

    def init_method(self, children: list[Token]) -> InitMethod:
        return _INIT_METHODS[str(children[0])]

    @v_args(meta=True)
    def reset_new(self, meta: Meta, children: list[Any]) -> _Statement:
        return self._optimizer(meta, "reset_new")

    @v_args(meta=True)
    def reset_all(self, meta: Meta, children: list[Any]) -> _Statement:
        return self._optimizer(meta, "reset_all")

    @v_args(meta=True)
    def copy_state(self, meta: Meta, children: list[Any]) -> _Statement:
        return self._optimizer(meta, "copy")

    @v_args(meta=True)
    def rewarmup(self, meta: Meta, children: list[Any]) -> _Statement:
        steps, factor = children
        span = self._span(meta)
        # A part left out takes the IR's default.
        parts: dict[str, Any] = {"span": span}
        if steps is not None:
            parts["warmup_steps"] = self._count(steps, "a step count")
            parts["warmup_steps_span"] = self._at(steps)
        if factor is not None:
            parts["peak_factor"] = factor.factor
            parts["peak_factor_span"] = factor.span
        return _Statement("lr", span, RewarmupLR(**parts))

    @v_args(meta=True)
    def same(self, meta: Meta, children: list[Any]) -> _Statement:
        span = self._span(meta)
        return _Statement("lr", span, InheritLR(span=span))

    # ---- helpers

    def _optimizer(self, meta: Meta, kind: OptimizerKind) -> _Statement:
        span = self._span(meta)
        return _Statement("optimizer", span, OptimizerPolicy(kind=kind, span=span))

    def _without_duplicates(self, statements: list[_Statement], rule: str) -> list[_Statement]:
        """Drop and report the second and later copies of every statement except `at` and
        `widen`, which may repeat (repeated axes are checked by validate)."""
        first: dict[str, _Statement] = {}
        kept = []
        for statement in statements:
            if statement.keyword in {"at", "widen"}:
                kept.append(statement)
                continue
            earlier = first.setdefault(statement.keyword, statement)
            if earlier is statement:
                kept.append(statement)
                continue
            self._report(statement.span, (
                f"duplicate `{statement.keyword}` statement: {rule}, and the first is on "
                f"line {earlier.span.line}; remove one"
            ))
        return kept

    def _count(self, token: Token, what: str) -> int:
        """Lower a NUMBER that must be whole, after its suffix (`2.5k` is 2500)."""
        value = self._decimal(token, str(token))
        if value is None:
            return LARGEST_COUNT
        if abs(value) > LARGEST_COUNT:
            self._report_at(token, f"{what} must be at most 1e18, got {token}")
            return LARGEST_COUNT if value > 0 else -LARGEST_COUNT
        whole = value.to_integral_value(context=DECIMAL_CONTEXT)
        if value != whole:
            self._report_at(token, f"{what} must be a whole number, got {token}")
        return int(whole)

    def _real(self, token: Token, what: str, text: str | None = None, power: int = 0) -> float:
        """Lower a NUMBER that may have decimals and takes no suffix, times `10**power`
        (exactly, so that `33.3%` is the float nearest to 0.333)."""
        text = str(token) if text is None else text
        if text[-1:] in _SUFFIX_POWERS:
            self._report_at(token, (
                f"the suffix {text[-1]} is for counts of steps, tokens or sizes, not for "
                f"{what}; write the number in full"
            ))
        value = self._decimal(token, text)
        result = 0.0 if value is None else float(value.scaleb(power, DECIMAL_CONTEXT))
        if not math.isfinite(result):
            self._report_at(token, f"{what} is too large, got {token}")
            return math.copysign(sys.float_info.max, result)
        return result

    def _decimal(self, token: Token, text: str) -> Decimal | None:
        """Read a number with an optional k/M/B suffix exactly; None (and a diagnostic) when
        its exponent is beyond what `decimal` can represent."""
        power = _SUFFIX_POWERS.get(text[-1:], 0)
        digits = text[:-1] if power else text
        try:
            return Decimal(digits).scaleb(power, DECIMAL_CONTEXT)
        except ArithmeticError:
            self._report_at(token, f"number {token} is out of range")
            return None

    def _report(self, span: Span, message: str) -> None:
        self.diagnostics.append(self.source.at(span, message))

    def _report_at(self, token: Token, message: str) -> None:
        self._report(self._at(token), message)

    def _span(self, meta: Meta) -> Span:
        return self.source.span(meta.line, meta.column)

    def _at(self, token: Token) -> Span:
        return self.source.span(token.line or 1, token.column or 1)
