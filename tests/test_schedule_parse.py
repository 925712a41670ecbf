"""The schedule language: each construct parses to the IR it documents, prints back in canonical
form, and survives a format-parse round trip."""

from __future__ import annotations

import importlib.resources
import textwrap
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sparkling_ir.schedule import check_schedule, format_schedule, load_schedule, parse_schedule
from sparkling_ir.schedule.format import format_fraction, format_real, format_tokens
from sparkling_ir.schedule.ir import (
    AXIS_NAMES,
    INIT_METHODS,
    AtFraction,
    AtStep,
    AtTokens,
    ByFactor,
    CosineLR,
    GrowthEvent,
    InheritLR,
    InitPolicy,
    OptimizerPolicy,
    RewarmupLR,
    Schedule,
    Span,
    ToSize,
    TrainSteps,
    TrainTokens,
    Widen,
)
from sparkling_ir.schedule.syntax import is_schedule_name, keywords


def parse(body: str, train: str = "train 4000 steps") -> Schedule:
    """Parse `body` as the statements of a schedule named `s` with the length `train`."""
    return parse_schedule(f"schedule s {{\n{train}\n{body}\n}}\n", file="t.grow")


def parse_event(statements: str, train: str = "train 4000 steps") -> GrowthEvent:
    """Parse one event at 50% whose block holds `statements`."""
    return parse(f"at 50% {{\n{statements}\n}}", train).events[0]


# ---- each construct ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train 4000 steps", TrainSteps(steps=4000)),
        ("train 1 step", TrainSteps(steps=1)),
        ("train 2k steps", TrainSteps(steps=2000)),
        ("train 2.5k steps", TrainSteps(steps=2500)),
        ("train 1e3 steps", TrainSteps(steps=1000)),
        ("train 2M tokens", TrainTokens(tokens=2_000_000)),
        ("train 1.5B tokens", TrainTokens(tokens=1_500_000_000)),
        ("train 300K token", TrainTokens(tokens=300_000)),
    ],
    ids=["steps", "one-step", "k-suffix", "decimal-suffix", "exponent", "M-tokens", "B-tokens", "K-token"],
)
def test_train_length(text: str, expected: TrainSteps | TrainTokens) -> None:
    schedule = parse_schedule(f"schedule s {{ {text} }}")

    assert schedule.train.without_spans() == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("at 50%", AtFraction(fraction=0.5)),
        ("at 33.3%", AtFraction(fraction=0.333)),
        ("at 0.25", AtFraction(fraction=0.25)),
        ("at .75", AtFraction(fraction=0.75)),
        ("at step 2000", AtStep(step=2000)),
        ("at 2000 steps", AtStep(step=2000)),
        ("at 1k steps", AtStep(step=1000)),
        ("at 1M tokens", AtTokens(tokens=1_000_000)),
    ],
    ids=["percent", "percent-decimal", "fraction", "leading-dot", "step", "steps-after", "step-suffix", "tokens"],
)
def test_trigger(text: str, expected: AtFraction | AtStep | AtTokens) -> None:
    schedule = parse(f"{text} {{ widen ffn x2 }}", train="train 4M tokens")

    assert schedule.events[0].trigger.without_spans() == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("widen hidden x2", Widen(axis="hidden", amount=ByFactor(factor=2.0))),
        ("widen ffn 2x", Widen(axis="ffn", amount=ByFactor(factor=2.0))),
        ("widen heads x 1.5", Widen(axis="heads", amount=ByFactor(factor=1.5))),
        ("widen kv_heads to 8", Widen(axis="kv_heads", amount=ToSize(size=8))),
        ("widen expert_ffn to 1k", Widen(axis="expert_ffn", amount=ToSize(size=1000))),
    ],
    ids=["x-before", "x-after", "x-spaced", "to-size", "to-size-suffix"],
)
def test_widen(text: str, expected: Widen) -> None:
    event = parse_event(text)

    assert event.widens[0].without_spans() == expected


def test_widen_keeps_order_of_axes() -> None:
    event = parse_event("widen ffn x2\nwiden hidden x2\nwiden head_dim x2")

    assert [widen.axis for widen in event.widens] == ["ffn", "hidden", "head_dim"]


@pytest.mark.parametrize("method", INIT_METHODS)
def test_init_method(method: str) -> None:
    event = parse_event(f"widen ffn x2\ninit {method}")

    assert event.init.method == method


@pytest.mark.parametrize(
    "text, kind",
    [("optimizer reset new", "reset_new"), ("optimizer reset all", "reset_all"), ("optimizer copy", "copy")],
)
def test_optimizer_policy(text: str, kind: str) -> None:
    event = parse_event(f"widen ffn x2\n{text}")

    assert event.optimizer.kind == kind


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lr new rewarmup 100 steps to 1.25x", RewarmupLR(warmup_steps=100, peak_factor=1.25)),
        ("lr new rewarmup 100 steps to x1.25", RewarmupLR(warmup_steps=100, peak_factor=1.25)),
        ("lr new rewarmup 100 steps", RewarmupLR(warmup_steps=100, peak_factor=1.3)),
        ("lr new rewarmup to 1.1x", RewarmupLR(warmup_steps=250, peak_factor=1.1)),
        ("lr new rewarmup", RewarmupLR()),
        ("lr new rewarmup 0 steps to 1x", RewarmupLR(warmup_steps=0, peak_factor=1.0)),
        ("lr new same", InheritLR()),
    ],
    ids=["full", "x-before", "steps-only", "factor-only", "defaults", "no-ramp", "same"],
)
def test_new_entry_lr(text: str, expected: RewarmupLR | InheritLR) -> None:
    event = parse_event(f"widen ffn x2\n{text}")

    assert event.lr.without_spans() == expected


def test_event_defaults() -> None:
    event = parse_event("widen ffn x2")

    assert event.init.without_spans() == InitPolicy(method="sparkling")
    assert event.optimizer.without_spans() == OptimizerPolicy(kind="reset_new")
    assert event.lr.without_spans() == RewarmupLR(warmup_steps=250, peak_factor=1.3)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lr cosine peak 6e-4 min 6e-5 warmup 100 steps", CosineLR(peak=6e-4, min=6e-5, warmup_steps=100)),
        ("lr cosine peak 0.001 min 0", CosineLR(peak=1e-3, min=0.0, warmup_steps=0)),
        ("lr cosine peak 3e-3 min 3e-3 warmup 1 step", CosineLR(peak=3e-3, min=3e-3, warmup_steps=1)),
    ],
    ids=["full", "no-warmup", "flat"],
)
def test_base_lr(text: str, expected: CosineLR) -> None:
    schedule = parse(text)

    assert schedule.base_lr is not None
    assert schedule.base_lr.without_spans() == expected


def test_base_lr_absent_is_none() -> None:
    assert parse("").base_lr is None


def test_statements_in_any_order() -> None:
    schedule = parse_schedule(
        "schedule s {\n at 50% { lr new same; widen ffn x2 }\n lr cosine peak 1 min 0\n train 10 steps\n}"
    )

    assert schedule.train == TrainSteps(steps=10, span=schedule.train.span)
    assert schedule.base_lr is not None
    assert isinstance(schedule.events[0].lr, InheritLR)


def test_empty_schedule_has_no_events() -> None:
    schedule = parse_schedule("schedule s { train 10 steps }")

    assert schedule.events == ()
    assert schedule.name == "s"


def test_comments_blank_lines_and_semicolons() -> None:
    text = textwrap.dedent(
        """\
        # title

        schedule s {   # after the brace
            # a full-line comment
            train 1000 steps;;  # empty statements between separators

            at step 10 {  widen ffn x2 ; init zero  }   # one line
            at step 20 {
                # nothing but a comment

                widen hidden x2
            }
        }
        # trailing comment without a newline"""
    )

    schedule = parse_schedule(text)

    assert [event.trigger.without_spans() for event in schedule.events] == [AtStep(step=10), AtStep(step=20)]
    assert schedule.events[0].init.method == "zero"


def test_crlf_line_endings() -> None:
    text = "schedule s {\r\n    train 1000 steps\r\n    at 50% {\r\n        widen ffn x2\r\n    }\r\n}\r\n"

    schedule = parse_schedule(text)

    assert schedule.events[0].widens[0].span == Span(file="<string>", line=4, column=9)


def test_spans_point_at_keywords_and_values() -> None:
    text = textwrap.dedent(
        """\
        schedule s {
            train 4k steps
            lr cosine peak 6e-4 min 6e-5 warmup 100 steps
            at step 2000 {
                widen ffn x2
                init random
                optimizer copy
                lr new rewarmup 50 steps to 1.2x
            }
        }
        """
    )

    schedule = parse_schedule(text, file="a.grow")
    event = schedule.events[0]

    def at(line: int, column: int) -> Span:
        return Span(file="a.grow", line=line, column=column)

    assert schedule.source == "a.grow"
    assert schedule.span == at(1, 1)
    assert schedule.train.span == at(2, 11)
    assert schedule.base_lr is not None
    assert schedule.base_lr.span == at(3, 5)
    assert schedule.base_lr.peak_span == at(3, 20)
    assert schedule.base_lr.min_span == at(3, 29)
    assert schedule.base_lr.warmup_steps_span == at(3, 41)
    assert event.span == at(4, 5)
    assert event.trigger.span == at(4, 13)
    assert event.widens[0].span == at(5, 9)
    assert event.widens[0].axis_span == at(5, 15)
    assert event.widens[0].amount.span == at(5, 19)
    assert event.init.span == at(6, 9)
    assert event.optimizer.span == at(7, 9)
    assert isinstance(event.lr, RewarmupLR)
    assert event.lr.span == at(8, 9)
    assert event.lr.warmup_steps_span == at(8, 25)
    assert event.lr.peak_factor_span == at(8, 37)


def test_default_file_name() -> None:
    schedule = parse_schedule("schedule s { train 10 steps }")

    assert schedule.source == "<string>"
    assert schedule.train.span == Span(file="<string>", line=1, column=20)


def test_schedule_name_may_contain_keywords() -> None:
    assert parse_schedule("schedule train_2x { train 10 steps }").name == "train_2x"
    assert parse_schedule("schedule _x9 { train 10 steps }").name == "_x9"


def test_load_schedule_reads_utf8_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.grow"
    path.write_bytes(b"\xef\xbb\xbfschedule s { train 10 steps }  # caf\xc3\xa9\n")

    schedule = load_schedule(path)

    assert schedule.source == str(path)
    assert schedule.train.span == Span(file=str(path), line=1, column=20)


# ---- the grammar and the IR agree -------------------------------------------------------------


def test_grammar_is_package_data() -> None:
    grammar = importlib.resources.files("sparkling_ir.grammar").joinpath("grow.lark")

    assert grammar.is_file()
    assert "schedule" in grammar.read_text(encoding="utf-8")


def test_grammar_axes_match_ir() -> None:
    for axis in AXIS_NAMES:
        assert parse_event(f"widen {axis} x2").widens[0].axis == axis
    assert set(AXIS_NAMES) <= keywords()


def test_grammar_init_methods_match_ir() -> None:
    assert set(INIT_METHODS) <= keywords()


@pytest.mark.parametrize(
    "name, valid",
    [("s", True), ("tiny_gpt2", True), ("x", False), ("x2", False), ("x2b", False), ("train", False),
     ("2x", False), ("my-run", False), ("", False), ("a b", False), ("xa", True)],
)
def test_schedule_name_rules(name: str, valid: bool) -> None:
    assert is_schedule_name(name) == valid


# ---- canonical text ---------------------------------------------------------------------------

GOLDEN_SOURCE = """\
# messy but valid
schedule golden {
  at 25% { widen ffn 2x; widen hidden x1.5; init random; lr new rewarmup 100 steps; optimizer reset all }
  lr cosine peak 0.0006 min 6e-05 warmup 1e2 steps
  train 3M tokens
  at 1.5M tokens { lr new same ; widen experts to 16; optimizer copy }
  at 2.5M tokens { widen head_dim x2 }
}
"""

GOLDEN_CANONICAL = """\
schedule golden {
    train 3M tokens
    lr cosine peak 6e-4 min 6e-5 warmup 100 steps

    at 25% {
        widen ffn x2
        widen hidden x1.5
        init random
        optimizer reset all
        lr new rewarmup 100 steps to 1.3x
    }

    at 1.5M tokens {
        widen experts to 16
        init sparkling
        optimizer copy
        lr new same
    }

    at 2.5M tokens {
        widen head_dim x2
        init sparkling
        optimizer reset new
        lr new rewarmup 250 steps to 1.3x
    }
}
"""


def test_format_golden() -> None:
    schedule = parse_schedule(GOLDEN_SOURCE)

    assert format_schedule(schedule) == GOLDEN_CANONICAL


def test_format_is_idempotent_on_golden() -> None:
    canonical = parse_schedule(GOLDEN_CANONICAL)

    assert format_schedule(canonical) == GOLDEN_CANONICAL


def test_format_omits_zero_base_warmup() -> None:
    schedule = parse("lr cosine peak 1e-3 min 0")

    assert "    lr cosine peak 1e-3 min 0\n" in format_schedule(schedule)


@pytest.mark.parametrize(
    "value, text",
    [(2.0, "2"), (1.3, "1.3"), (0.05, "0.05"), (6e-4, "6e-4"), (6.5e-5, "6.5e-5"), (0.0, "0"),
     (-1.0, "-1"), (1e16, "1e+16"), (123456.0, "123456"), (float("inf"), "inf")],
)
def test_format_real(value: float, text: str) -> None:
    assert format_real(value) == text


@pytest.mark.parametrize(
    "value, text",
    [(0.5, "50%"), (0.333, "33.3%"), (0.0125, "1.25%"), (0.123456, "0.123456"), (1e-9, "1e-9")],
)
def test_format_fraction(value: float, text: str) -> None:
    assert format_fraction(value) == text


@pytest.mark.parametrize(
    "value, text",
    [(2_000_000, "2M"), (1_500_000, "1.5M"), (250_000, "250k"), (1_234_567, "1234567"),
     (3_000_000_000, "3B"), (999, "999"), (1000, "1k"), (0, "0")],
)
def test_format_tokens(value: int, text: str) -> None:
    assert format_tokens(value) == text


# ---- round trip -------------------------------------------------------------------------------

axes_lists = st.lists(st.sampled_from(AXIS_NAMES), min_size=1, max_size=3, unique=True)
amounts = st.one_of(
    st.builds(ByFactor, factor=st.floats(min_value=1, max_value=16, exclude_min=True)),
    st.builds(ToSize, size=st.integers(min_value=1, max_value=10**6)),
)
new_entry_lrs = st.one_of(
    st.builds(
        RewarmupLR,
        warmup_steps=st.integers(min_value=0, max_value=300),
        peak_factor=st.floats(min_value=0.01, max_value=4, allow_subnormal=False),
    ),
    st.just(InheritLR()),
)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True).filter(is_schedule_name)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    """Valid-looking schedules: events in firing order, with triggers of every kind."""
    in_steps = draw(st.booleans())
    length = draw(st.integers(min_value=2, max_value=10**6 if in_steps else 10**12))
    train: TrainSteps | TrainTokens = TrainSteps(steps=length) if in_steps else TrainTokens(tokens=length)
    times = draw(st.lists(st.integers(1, length - 1), max_size=3, unique=True).map(sorted))
    events = []
    for time in times:
        # A time in the training unit, written as that unit, as a fraction, or (not comparable,
        # so free) in the other unit.
        kind = draw(st.sampled_from(["unit", "fraction", "other"]))
        trigger: AtStep | AtFraction | AtTokens
        if kind == "fraction":
            trigger = AtFraction(fraction=time / length)
        elif (kind == "unit") == in_steps:
            trigger = AtStep(step=time)
        else:
            trigger = AtTokens(tokens=time)
        widens = tuple(Widen(axis=axis, amount=draw(amounts)) for axis in draw(axes_lists))
        events.append(GrowthEvent(
            trigger=trigger,
            widens=widens,
            init=InitPolicy(method=draw(st.sampled_from(INIT_METHODS))),
            optimizer=OptimizerPolicy(kind=draw(st.sampled_from(["reset_new", "reset_all", "copy"]))),
            lr=draw(new_entry_lrs),
        ))
    base_lr = None
    if draw(st.booleans()):
        peak = draw(st.floats(min_value=1e-6, max_value=1.0))
        base_lr = CosineLR(
            peak=peak,
            min=draw(st.floats(min_value=0, max_value=peak)),
            warmup_steps=draw(st.integers(0, min(100, length - 1))),
        )
    return Schedule(name=draw(names), train=train, base_lr=base_lr, events=tuple(events))


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_format_then_parse_round_trips(schedule: Schedule) -> None:
    assume(not check_schedule(schedule))

    text = format_schedule(schedule)
    parsed = parse_schedule(text)

    assert parsed.without_spans().model_copy(update={"source": None}) == schedule
    assert format_schedule(parsed) == text
