"""Event times in optimizer steps: `at 50%`, `at 1M tokens` and `train 2M tokens`, resolved.

A growth event fires after a number of completed optimizer steps. A schedule may give that
time as a step, a fraction of training or a token count, and the training length as steps
or tokens. Turning it into steps can then need the number of tokens per optimizer step
(batch size x sequence length), a setting of the training job. The rules:

- `train N tokens` lasts `floor(N / tokens_per_step)` steps: no partial step is taken.
- `at F` (or `at P%` with `P = 100 F`) fires after `round(F * T)` steps of a `T`-step
  training, with halves rounded up.
- `at N tokens` fires after `ceil(N / tokens_per_step)` steps: the first step after which at
  least `N` tokens have been seen.

`check_event_steps` implements the timing rules shared with `validate`: every event fires after
step 1 at the earliest and before the last step, events fire in strictly increasing order,
and a re-warmup ends before training does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from sparkling_ir.errors import Diagnostic, ScheduleError
from sparkling_ir.schedule.format import format_tokens, format_trigger
from sparkling_ir.schedule.ir import (
    AtFraction,
    AtStep,
    CosineLR,
    GrowthEvent,
    RewarmupLR,
    Schedule,
    Span,
    TrainSteps,
    Trigger,
)
from sparkling_ir.schedule.source import STRING_FILE, Source


def fraction_step(fraction: float, train_steps: int) -> int:
    """Return `round(fraction * train_steps)`, halves up, computed exactly."""
    return math.floor(Fraction(fraction) * train_steps + Fraction(1, 2))


def tokens_step(tokens: int, tokens_per_step: int) -> int:
    """Return the first step count after which at least `tokens` tokens have been seen."""
    return -(-tokens // tokens_per_step)


def trigger_step(trigger: Trigger, train_steps: int, tokens_per_step: int | None) -> int | None:
    """Return the step after which `trigger` fires, or None for a token count when
    `tokens_per_step` is not known."""
    if isinstance(trigger, AtStep):
        return trigger.step
    if isinstance(trigger, AtFraction):
        return fraction_step(trigger.fraction, train_steps)
    if tokens_per_step is None:
        return None
    return tokens_step(trigger.tokens, tokens_per_step)


def resolve_train_steps(schedule: Schedule, tokens_per_step: int | None = None) -> int:
    """Return the number of optimizer steps the schedule trains for.

    Raises ScheduleError, located at the `train` statement, when the length is in tokens and
    `tokens_per_step` is None, or when the length is shorter than one step. Raises ValueError
    when `tokens_per_step` is given and below 1.
    """
    _check_tokens_per_step(tokens_per_step)
    train = schedule.train
    if isinstance(train, TrainSteps):
        return train.steps
    source = _source_of(schedule)
    tokens = format_tokens(train.tokens)
    if tokens_per_step is None:
        raise ScheduleError([source.at(train.span, (
            f"training length is {tokens} tokens, which needs the tokens per step to become "
            "a step count; pass tokens_per_step (batch size x sequence length)"
        ))])
    steps = train.tokens // tokens_per_step
    if steps < 1:
        raise ScheduleError([source.at(train.span, (
            f"training length of {tokens} tokens is shorter than one step of "
            f"{tokens_per_step} tokens; train for more tokens"
        ))])
    return steps


def resolve_event_steps(
    schedule: Schedule, tokens_per_step: int | None = None
) -> tuple[int, ...]:
    """Return the completed-step count after which each event fires, in schedule order.

    Raises ScheduleError with every problem found, each located at its trigger. The
    problems are a token count when `tokens_per_step` is None, an event outside training
    once resolved, events out of order, and a re-warmup or base warmup that runs past the
    end of training. Raises ValueError when `tokens_per_step` is given and below 1.
    """
    train_steps = resolve_train_steps(schedule, tokens_per_step)
    source = _source_of(schedule)
    diagnostics: list[Diagnostic] = []
    steps: list[int | None] = []
    for event in schedule.events:
        step = trigger_step(event.trigger, train_steps, tokens_per_step)
        if step is None:
            diagnostics.append(source.at(_trigger_span(event), (
                f"event at {format_trigger(event.trigger)} needs the tokens per step to "
                "become a step; pass tokens_per_step (batch size x sequence length)"
            )))
        steps.append(step)
    diagnostics += check_event_steps(schedule.events, steps, train_steps, source)
    if schedule.base_lr is not None:
        diagnostics += check_base_warmup(schedule.base_lr, train_steps, source)
    if diagnostics:
        raise ScheduleError(diagnostics)
    return tuple(step for step in steps if step is not None)


# ---- timing rules shared with validate ----------------------------------------------------


def check_event_steps(
    events: Sequence[GrowthEvent],
    steps: Sequence[int | None],
    train_steps: int,
    source: Source,
) -> list[Diagnostic]:
    """Check resolved event steps against a `train_steps`-step training.

    `steps[i]` is the step of `events[i]`, or None where it is unknown or already reported;
    those events are skipped. Returns one diagnostic per problem.
    """
    diagnostics: list[Diagnostic] = []
    for event, step in zip(events, steps):
        if step is None:
            continue
        problem = _step_range_problem(event.trigger, step, train_steps)
        if problem:
            diagnostics.append(source.at(_trigger_span(event), problem))
        else:
            diagnostics += _check_rewarmup_end(event, step, train_steps, source)
    positions = [
        None if step is None else (step, _describe_at_step(event.trigger, step))
        for event, step in zip(events, steps)
    ]
    diagnostics += check_order(events, positions, source)
    return diagnostics


def check_order(
    events: Sequence[GrowthEvent],
    positions: Sequence[tuple[Fraction | int, str] | None],
    source: Source,
) -> list[Diagnostic]:
    """Check that events fire in strictly increasing order.

    `positions[i]` is the time of `events[i]` in one unit (steps or tokens) with a short
    description for messages, or None where it cannot be compared with the others. Each event
    is compared with the latest-firing event listed before it.
    """
    diagnostics: list[Diagnostic] = []
    latest: tuple[Fraction | int, str, GrowthEvent] | None = None
    for event, position in zip(events, positions):
        if position is None:
            continue
        value, description = position
        if latest is not None and value <= latest[0]:
            diagnostics.append(source.at(_trigger_span(event), _order_problem(
                description, latest[1], latest[2], same_time=value == latest[0]
            )))
        if latest is None or value > latest[0]:
            latest = (value, description, event)
    return diagnostics


def check_base_warmup(base_lr: CosineLR, train_steps: int, source: Source) -> list[Diagnostic]:
    """Check that the base schedule's warmup ends before the last step of training."""
    if base_lr.warmup_steps < train_steps:
        return []
    return [source.at(base_lr.warmup_steps_span or base_lr.span, (
        f"base warmup of {base_lr.warmup_steps} steps does not end before training ends at "
        f"step {train_steps}; shorten the warmup or train longer"
    ))]


def _step_range_problem(trigger: Trigger, step: int, train_steps: int) -> str:
    """Return why an event at `step` cannot fire in a `train_steps`-step training, or ""."""
    where = _describe_at_step(trigger, step)
    if step < 1:
        return (
            f"event at {where} fires before the first optimizer step; an event fires after "
            "step 1 at the earliest, so use a later time"
        )
    if step >= train_steps:
        return (
            f"event at {where} fires when training has ended at step {train_steps}; "
            "move the event earlier or train longer"
        )
    return ""


def _check_rewarmup_end(
    event: GrowthEvent, step: int, train_steps: int, source: Source
) -> list[Diagnostic]:
    """Check that the re-warmup of new entries ends before training does, which leaves the
    decay that follows it at least one step."""
    lr = event.lr
    if not isinstance(lr, RewarmupLR) or step + lr.warmup_steps < train_steps:
        return []
    longest = train_steps - step - 1
    overrun = (
        f"from step {step} runs to step {step + lr.warmup_steps}, past the end of training at "
        f"step {train_steps}"
    )
    if lr.span is None:
        # The event has no `lr new` line: the re-warmup is the default, which short runs
        # cannot fit. Say so, because the user wrote no re-warmup to shorten.
        return [source.at(event.span, (
            f"the default re-warmup of new entries ({_steps(lr.warmup_steps)}) {overrun}; "
            f"add `lr new rewarmup {longest} steps` (or fewer) to this event"
        ))]
    return [source.at(lr.warmup_steps_span or lr.span, (
        f"re-warmup of {_steps(lr.warmup_steps)} {overrun}; shorten it to at most "
        f"{_steps(longest)} or move the event earlier"
    ))]


def _order_problem(
    description: str, previous: str, previous_event: GrowthEvent, *, same_time: bool
) -> str:
    other = f"the event at {previous}"
    if previous_event.span is not None:
        other += f" on line {previous_event.span.line}"
    if same_time:
        return (
            f"this event ({description}) fires at the same time as {other}; "
            "merge them into one `at` block"
        )
    return (
        f"events must be listed in the order they fire, but this one ({description}) "
        f"fires before {other}"
    )


def _describe_at_step(trigger: Trigger, step: int) -> str:
    written = format_trigger(trigger)
    return written if isinstance(trigger, AtStep) else f"{written}, step {step}"


def _trigger_span(event: GrowthEvent) -> Span | None:
    return event.trigger.span or event.span


def _check_tokens_per_step(tokens_per_step: int | None) -> None:
    if tokens_per_step is not None and tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be at least 1, got {tokens_per_step}")


def _source_of(schedule: Schedule) -> Source:
    return Source(schedule.source or STRING_FILE)



def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"
