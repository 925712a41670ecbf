"""Semantic checks of a schedule: every rule that the grammar cannot express.

`check_schedule` returns every problem of a schedule as diagnostics located at the offending
value; `validate_schedule` raises ScheduleError with all of them. `parse_schedule` runs the
same checks, so a parsed schedule is always valid. The rules:

- the schedule name can be written back in a `.grow` file (an identifier, not a keyword);
- training lasts at least 1 step or 1 token;
- base LR: `peak` and `min` are finite and >= 0, `min <= peak`, and the warmup is >= 0 steps
  and ends before training does (checked here when training is in steps, else at resolution);
- each event widens at least one axis, each axis at most once, by a factor > 1 or to a size
  >= 1; its re-warmup is >= 0 steps with a peak factor > 0; its time is a fraction in (0, 1),
  a step >= 1 or a token count >= 1;
- timing, in the unit of the training length: events fire before training ends and in
  strictly increasing order, and each re-warmup ends before training does. Two events are
  compared only when both resolve to that unit without knowing the tokens per step
  (`resolve.py` checks the rest once it is known).

No check here looks at a model. Whether it has an axis, or whether `x1.5` gives a whole
size, is checked when the schedule is bound to a model in `sparkling_ir.compile`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from sparkling_ir.errors import Diagnostic, ScheduleError
from sparkling_ir.schedule.format import format_fraction, format_real, format_tokens
from sparkling_ir.schedule.ir import (
    AtFraction,
    AtStep,
    AtTokens,
    ByFactor,
    CosineLR,
    GrowthEvent,
    RewarmupLR,
    Schedule,
    Span,
    TrainLength,
    TrainSteps,
    Trigger,
    Widen,
)
from sparkling_ir.schedule.resolve import (
    check_base_warmup,
    check_event_steps,
    check_order,
    trigger_step,
)
from sparkling_ir.schedule.source import STRING_FILE, Source
from sparkling_ir.schedule.syntax import is_schedule_name


def check_schedule(schedule: Schedule, text: str | None = None) -> list[Diagnostic]:
    """Return every semantic error of `schedule`, or [] if it is valid.

    `text` is the file's text, used only to show the source line under each message.
    """
    source = Source(schedule.source or STRING_FILE, text)
    return check_schedule_parts(
        schedule.name, schedule.span, schedule.train, schedule.base_lr, schedule.events, source
    )


def validate_schedule(schedule: Schedule, text: str | None = None) -> None:
    """Raise ScheduleError listing every semantic error of `schedule`, if it has any."""
    diagnostics = check_schedule(schedule, text)
    if diagnostics:
        raise ScheduleError(diagnostics)


def check_schedule_parts(
    name: str,
    span: Span | None,
    train: TrainLength | None,
    base_lr: CosineLR | None,
    events: Sequence[GrowthEvent],
    source: Source,
) -> list[Diagnostic]:
    """Check the parts of a schedule and return every problem found.

    `train` is None when the file has no `train` statement. The parser reports that itself,
    and the checks that need the training length are skipped."""
    diagnostics: list[Diagnostic] = []
    if not is_schedule_name(name):
        diagnostics.append(source.at(span, (
            f"schedule name {name!r} cannot be written in a .grow file; use letters, digits "
            "and '_', not starting with a digit, and not a keyword or 'x' then a digit"
        )))
    if train is not None:
        diagnostics += _check_train(train, source)
    if base_lr is not None:
        diagnostics += _check_base_lr(base_lr, source)
    for event in events:
        diagnostics += _check_event(event, source)
    if train is not None and not _check_train(train, source):
        diagnostics += _check_timing(train, base_lr, events, source)
    return diagnostics


# ---- values that are wrong on their own ------------------------------------------------------


def _check_train(train: TrainLength, source: Source) -> list[Diagnostic]:
    if isinstance(train, TrainSteps):
        if train.steps >= 1:
            return []
        return [source.at(train.span, f"training must last at least 1 step, got {train.steps}")]
    if train.tokens >= 1:
        return []
    return [source.at(train.span, f"training must last at least 1 token, got {train.tokens}")]


def _check_base_lr(lr: CosineLR, source: Source) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    for value, span, what in ((lr.peak, lr.peak_span, "peak"), (lr.min, lr.min_span, "min")):
        if not _is_non_negative(value):
            diagnostics.append(source.at(span or lr.span, (
                f"{what} learning rate must be a finite number >= 0, got {format_real(value)}"
            )))
    if not diagnostics and lr.min > lr.peak:
        diagnostics.append(source.at(lr.min_span or lr.span, (
            f"min learning rate {format_real(lr.min)} is above the peak "
            f"{format_real(lr.peak)}; the cosine decays from peak to min, so write a min "
            "at most the peak"
        )))
    if lr.warmup_steps < 0:
        diagnostics.append(source.at(lr.warmup_steps_span or lr.span, (
            f"base warmup must be at least 0 steps, got {lr.warmup_steps}"
        )))
    return diagnostics


def _check_event(event: GrowthEvent, source: Source) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    problem = _trigger_problem(event.trigger)
    if problem:
        diagnostics.append(source.at(event.trigger.span or event.span, problem))
    if not event.widens:
        diagnostics.append(source.at(event.span, (
            "event has no `widen` statement; add one, such as `widen ffn x2`"
        )))
    first_widen: dict[str, Widen] = {}
    for widen in event.widens:
        first = first_widen.setdefault(widen.axis, widen)
        if first is not widen:
            diagnostics.append(source.at(widen.axis_span or widen.span, (
                f"axis {widen.axis} is widened twice in this event{_first_on_line(first.span)}; "
                "keep one `widen` per axis"
            )))
        problem = _amount_problem(widen)
        if problem:
            diagnostics.append(source.at(widen.amount.span or widen.span, problem))
    if isinstance(event.lr, RewarmupLR):
        diagnostics += _check_rewarmup(event.lr, source)
    return diagnostics


def _trigger_problem(trigger: Trigger) -> str:
    """Return what is wrong with an event time on its own, or ""."""
    if isinstance(trigger, AtStep):
        if trigger.step >= 1:
            return ""
        return (
            f"event step must be at least 1, got {trigger.step}; an event fires after that "
            "many completed optimizer steps"
        )
    if isinstance(trigger, AtTokens):
        if trigger.tokens >= 1:
            return ""
        return f"event token count must be at least 1, got {trigger.tokens}"
    fraction = trigger.fraction
    if math.isfinite(fraction) and 0 < fraction < 1:
        return ""
    message = (
        "an event time given as a fraction of training must be between 0 and 1 "
        f"(0% and 100%), exclusive, got {format_real(fraction)}"
    )
    if math.isfinite(fraction) and fraction >= 1 and fraction.is_integer():
        # Most likely a step count or a percentage written without `step` or `%`.
        whole = int(fraction)
        message += f"; to fire after step {whole}, write `at step {whole}`"
        if whole < 100:
            message += f", or for {whole}% write `at {whole}%`"
    elif format_fraction(fraction).endswith("%"):
        message += f" ({format_fraction(fraction)})"
    return message


def _amount_problem(widen: Widen) -> str:
    """Return what is wrong with the amount of one `widen`, or ""."""
    amount = widen.amount
    if not isinstance(amount, ByFactor):
        if amount.size >= 1:
            return ""
        return f"target size of {widen.axis} must be at least 1, got {amount.size}"
    factor = amount.factor
    if math.isfinite(factor) and factor > 1:
        return ""
    if factor == 1:
        return f"widening {widen.axis} by x1 leaves it unchanged; use a factor greater than 1"
    return (
        f"widening factor must be a finite number greater than 1, got x{format_real(factor)}; "
        "narrowing a model is not supported"
    )


def _check_rewarmup(lr: RewarmupLR, source: Source) -> list[Diagnostic]:
    diagnostics: list[Diagnostic] = []
    if lr.warmup_steps < 0:
        diagnostics.append(source.at(lr.warmup_steps_span or lr.span, (
            f"re-warmup must last at least 0 steps, got {lr.warmup_steps}"
        )))
    if not (math.isfinite(lr.peak_factor) and lr.peak_factor > 0):
        diagnostics.append(source.at(lr.peak_factor_span or lr.span, (
            f"re-warmup peak factor must be a finite number greater than 0, got "
            f"{format_real(lr.peak_factor)}x; 1x holds the LR of new entries at its value at "
            "the event, 1.3x (the default) raises it by 30%"
        )))
    return diagnostics


# ---- timing: values that are wrong together ---------------------------------------------------


def _check_timing(
    train: TrainLength,
    base_lr: CosineLR | None,
    events: Sequence[GrowthEvent],
    source: Source,
) -> list[Diagnostic]:
    """Check event times against the training length and each other, in its unit.

    Events whose time is invalid on its own were reported already and are skipped here.
    """
    if isinstance(train, TrainSteps):
        # Times already reported as invalid on their own are left out (None).
        steps = [
            None
            if _trigger_problem(event.trigger)
            else trigger_step(event.trigger, train.steps, None)
            for event in events
        ]
        diagnostics = check_event_steps(events, steps, train.steps, source)
        if base_lr is not None and base_lr.warmup_steps >= 0:
            diagnostics += check_base_warmup(base_lr, train.steps, source)
        return diagnostics

    diagnostics = []
    positions: list[tuple[Fraction | int, str] | None] = []
    for event in events:
        position = _tokens_position(event.trigger, train.tokens)
        positions.append(position)
        if isinstance(event.trigger, AtTokens) and position is not None:
            if event.trigger.tokens >= train.tokens:
                diagnostics.append(source.at(event.trigger.span or event.span, (
                    f"event at {format_tokens(event.trigger.tokens)} tokens fires when "
                    f"training has ended at {format_tokens(train.tokens)} tokens; move the "
                    "event earlier or train longer"
                )))
    return diagnostics + check_order(events, positions, source)


def _tokens_position(trigger: Trigger, train_tokens: int) -> tuple[Fraction | int, str] | None:
    """Return when a trigger fires, in tokens, with a description; None for a step count,
    which needs the tokens per step, or for a time already reported as invalid."""
    if _trigger_problem(trigger):
        return None
    if isinstance(trigger, AtTokens):
        return trigger.tokens, f"{format_tokens(trigger.tokens)} tokens"
    if isinstance(trigger, AtFraction):
        tokens = Fraction(trigger.fraction) * train_tokens
        approximate = format_tokens(round(tokens))
        return tokens, f"{format_fraction(trigger.fraction)}, {approximate} tokens"
    return None


def _is_non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _first_on_line(span: Span | None) -> str:
    return "" if span is None else f" (first on line {span.line})"
