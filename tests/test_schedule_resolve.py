"""Resolving event times to optimizer steps: fractions round halves up, token counts round up
to the first step that reaches them, and token-based lengths need the tokens per step."""

from __future__ import annotations

import pytest

from sparkling_ir.errors import ScheduleError
from sparkling_ir.schedule import parse_schedule, resolve_event_steps, resolve_train_steps
from sparkling_ir.schedule.resolve import fraction_step, tokens_step


def schedule_of(train: str, *triggers: str) -> str:
    events = "".join(f"\n at {trigger} {{ widen ffn x2; lr new same }}" for trigger in triggers)
    return f"schedule s {{\n train {train}{events}\n}}\n"


def test_steps_and_fractions() -> None:
    schedule = parse_schedule(schedule_of("4000 steps", "step 1000", "50%", "0.75"))

    assert resolve_train_steps(schedule) == 4000
    assert resolve_event_steps(schedule) == (1000, 2000, 3000)


def test_tokens_need_tokens_per_step() -> None:
    schedule = parse_schedule(schedule_of("2M tokens", "500k tokens", "50%"))

    assert resolve_train_steps(schedule, tokens_per_step=1000) == 2000
    assert resolve_event_steps(schedule, tokens_per_step=1000) == (500, 1000)


def test_train_tokens_rounds_down() -> None:
    schedule = parse_schedule(schedule_of("10000 tokens"))

    assert resolve_train_steps(schedule, tokens_per_step=3000) == 3


def test_event_tokens_round_up() -> None:
    schedule = parse_schedule(schedule_of("100 steps", "1001 tokens"))

    assert resolve_event_steps(schedule, tokens_per_step=100) == (11,)


@pytest.mark.parametrize(
    "fraction, steps, expected",
    [(0.5, 4000, 2000), (0.5, 5, 3), (0.1, 5, 1), (0.3, 1000, 300), (1 / 3, 3, 1), (0.25, 6, 2)],
)
def test_fraction_step_rounds_half_up(fraction: float, steps: int, expected: int) -> None:
    assert fraction_step(fraction, steps) == expected


@pytest.mark.parametrize("tokens, per_step, expected", [(1000, 100, 10), (1001, 100, 11), (1, 100, 1)])
def test_tokens_step(tokens: int, per_step: int, expected: int) -> None:
    assert tokens_step(tokens, per_step) == expected


def test_train_tokens_without_tokens_per_step() -> None:
    schedule = parse_schedule(schedule_of("2M tokens"), file="t.grow")

    with pytest.raises(ScheduleError) as caught:
        resolve_train_steps(schedule)

    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.column) == ("t.grow", 2, 8)
    assert "training length is 2M tokens" in diagnostic.message
    assert "pass tokens_per_step" in diagnostic.message


def test_token_event_without_tokens_per_step() -> None:
    schedule = parse_schedule(schedule_of("4000 steps", "step 100", "1M tokens"), file="t.grow")

    with pytest.raises(ScheduleError) as caught:
        resolve_event_steps(schedule)

    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.column) == (4, 5)
    assert "event at 1M tokens needs the tokens per step" in diagnostic.message


def test_training_shorter_than_one_step() -> None:
    schedule = parse_schedule(schedule_of("1000 tokens"))

    with pytest.raises(ScheduleError, match="shorter than one step of 2048 tokens"):
        resolve_train_steps(schedule, tokens_per_step=2048)


def test_resolved_events_checked_against_length() -> None:
    # Valid before resolution: a step count and a token count cannot be compared.
    schedule = parse_schedule(schedule_of("4M tokens", "step 3000", "1M tokens", "3.5M tokens"))

    with pytest.raises(ScheduleError) as caught:
        resolve_event_steps(schedule, tokens_per_step=1000)

    messages = [d.message for d in caught.value.diagnostics]
    assert len(messages) == 1
    assert "this one (1M tokens, step 1000) fires before the event at step 3000" in messages[0]


def test_resolved_event_after_end_of_training() -> None:
    schedule = parse_schedule(schedule_of("1M tokens", "step 5000"))

    with pytest.raises(ScheduleError, match="fires when training has ended at step 1000"):
        resolve_event_steps(schedule, tokens_per_step=1000)


def test_base_warmup_checked_once_length_known() -> None:
    text = "schedule s {\n train 100k tokens\n lr cosine peak 1 min 0 warmup 200 steps\n}"
    schedule = parse_schedule(text)

    with pytest.raises(ScheduleError, match="base warmup of 200 steps does not end before training ends at step 100"):
        resolve_event_steps(schedule, tokens_per_step=1000)


@pytest.mark.parametrize("tokens_per_step", [0, -5])
def test_tokens_per_step_must_be_positive(tokens_per_step: int) -> None:
    schedule = parse_schedule(schedule_of("100 steps"))

    with pytest.raises(ValueError, match="tokens_per_step must be at least 1"):
        resolve_event_steps(schedule, tokens_per_step)
