"""Invalid schedules: each mistake raises the right error class at the offending token, with a
message that names what was expected and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkling_ir.errors import Diagnostic, ScheduleError, ScheduleSyntaxError
from sparkling_ir.schedule import load_schedule, parse_schedule, validate_schedule
from sparkling_ir.schedule.ir import AtFraction, ByFactor, GrowthEvent, Schedule, TrainSteps, Widen

# Most cases are one line, so that the column can be checked by counting. The prefix
# "schedule s { train 4000 steps; " is 31 characters, so the next statement starts at 32.
S = "schedule s { train 4000 steps; "

SYNTAX_ERRORS = [
    ("empty-file", "", 1, 1, "expected 'schedule', got end of file"),
    ("missing-unit", "schedule s { train 4000 }", 1, 25, "expected 'steps' or 'tokens', got '}'"),
    ("unknown-unit", "schedule s { train 4000 epochs }", 1, 25, "got 'epochs'"),
    ("misspelled-axis", "schedule s {\n train 10 steps\n at 50% { widen hiden x2 }\n}", 3, 17,
     "expected an axis (hidden, ffn, heads, kv_heads, head_dim, experts, expert_ffn), got 'hiden'. "
     "Did you mean 'hidden'?"),
    ("unknown-statement", S + "foo }", 1, 32, "expected 'train', 'lr', 'at' or '}', got 'foo'"),
    ("unknown-event-statement", S + "at 50% { grow ffn x2 } }", 1, 41,
     "expected 'lr', 'widen', 'init', 'optimizer' or '}', got 'grow'"),
    ("widen-outside-event", S + "widen ffn x2 }", 1, 32, "'widen' goes inside an event"),
    ("train-inside-event", S + "at 50% { train 5 steps } }", 1, 41, "'train' goes at the top level"),
    ("new-lr-at-top-level", S + "lr new same }", 1, 35, "expected 'cosine', got 'new'"),
    ("base-lr-in-event", S + "at 50% { lr cosine peak 1 min 0 } }", 1, 44, "expected 'new', got 'cosine'"),
    ("missing-closing-brace", "schedule s {\n train 10 steps\n", 2, 16,
     "got end of file. A '}' is missing"),
    ("brace-on-next-line", "schedule s { train 10 steps\n at 50%\n { widen ffn x2 } }", 2, 8,
     "expected '{', got end of line. Put the '{' on the same line"),
    ("two-statements-one-line", "schedule s {\n train 10 steps lr cosine peak 1 min 0\n}", 2, 17,
     "got 'lr'. Put each statement on its own line, or separate them with ';'"),
    ("keyword-as-name", "schedule train { train 10 steps }", 1, 10, "'train' is a keyword"),
    ("hyphen-in-name", "schedule my-run { train 10 steps }", 1, 12,
     "expected '{', got '-'. A schedule name contains only letters, digits and '_'"),
    ("name-like-factor", "schedule x2 { train 10 steps }", 1, 10, "expected a name, got 'x2'"),
    ("stray-character", "schedule s { train 10 steps @ }", 1, 29, "expected '}' or end of line, got '@'"),
    ("no-break-space", "schedule s {\u00a0train 10 steps }", 1, 13, "U+00A0 NO-BREAK SPACE"),
    ("unknown-suffix", "schedule s { train 2m tokens }", 1, 21,
     "k (thousand), M (million) or B (billion)"),
    ("thousands-separator", "schedule s { train 4,000 steps }", 1, 21, "got ','"),
    ("second-schedule", "schedule s { train 10 steps }\nschedule t { train 10 steps }", 2, 1,
     "A file contains one schedule"),
    ("slash-comment", "schedule s { train 10 steps } // note", 1, 31, "Comments start with '#'"),
    ("percent-without-number", S + "at % { widen ffn x2 } }", 1, 35, "expected a number or 'step', got '%'"),
    ("factor-without-x", S + "at 50% { widen ffn 2 } }", 1, 53, "expected 'x', got '}'"),
    ("base-lr-without-min", S + "lr cosine peak 1 }", 1, 49, "expected 'min', got '}'"),
    ("missing-schedule-keyword", "train 10 steps", 1, 1, "A file starts with `schedule NAME {`"),
]


@pytest.mark.parametrize(
    "text, line, column, message",
    [case[1:] for case in SYNTAX_ERRORS],
    ids=[case[0] for case in SYNTAX_ERRORS],
)
def test_syntax_error(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(ScheduleSyntaxError) as caught:
        parse_schedule(text, file="bad.grow")

    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.file == "bad.grow"
    assert (diagnostic.line, diagnostic.column) == (line, column)
    assert message in diagnostic.message


SEMANTIC_ERRORS = [
    ("fraction-looks-like-step", S + "at 2000 { widen ffn x2 } }", 1, 35,
     "between 0 and 1 (0% and 100%), exclusive, got 2000; to fire after step 2000, write `at step 2000`"),
    ("fraction-looks-like-percent", S + "at 50 { widen ffn x2 } }", 1, 35, "or for 50% write `at 50%`"),
    ("zero-percent", S + "at 0% { widen ffn x2 } }", 1, 35,
     "a percentage of training must be above 0% and below 100%, got 0%"),
    ("hundred-percent", S + "at 100% { widen ffn x2 } }", 1, 35,
     "a percentage of training must be above 0% and below 100%, got 100%"),
    ("above-hundred-percent", S + "at 150% { widen ffn x2 } }", 1, 35, "below 100%, got 150%"),
    ("negative-percent", S + "at -5% { widen ffn x2 } }", 1, 35, "below 100%, got -5%"),
    ("percent-as-written", S + "at 1e2 % { widen ffn x2 } }", 1, 35, "below 100%, got 1e2%"),
    ("fraction-one", S + "at 1 { widen ffn x2 } }", 1, 35,
     "exclusive, got 1; to fire after step 1, write `at step 1`, or for 1% write `at 1%`"),
    ("fraction-above-one", S + "at 1.5 { widen ffn x2 } }", 1, 35, "exclusive, got 1.5 (150%)"),
    ("step-zero", S + "at step 0 { widen ffn x2 } }", 1, 40, "event step must be at least 1, got 0"),
    ("step-at-end", S + "at step 4000 { widen ffn x2 } }", 1, 40,
     "event at step 4000 fires when training has ended at step 4000"),
    ("fraction-rounds-to-zero", "schedule s { train 10 steps; at 1% { widen ffn x2; lr new same } }", 1, 33,
     "event at 1%, step 0 fires before the first optimizer step"),
    ("tokens-at-end", "schedule s { train 1M tokens; at 2M tokens { widen ffn x2 } }", 1, 34,
     "event at 2M tokens fires when training has ended at 1M tokens"),
    ("train-not-whole", "schedule s { train 2.5 steps }", 1, 20, "a step count must be a whole number, got 2.5"),
    ("train-zero", "schedule s { train 0 steps }", 1, 20, "training must last at least 1 step, got 0"),
    ("train-zero-tokens", "schedule s { train 0 tokens }", 1, 20, "training must last at least 1 token"),
    ("train-too-long", "schedule s { train 1e19 steps }", 1, 20, "a step count must be at most 1e18, got 1e19"),
    ("exponent-out-of-range", "schedule s { train 1e99999999999 steps }", 1, 20, "is out of range"),
    ("factor-one", S + "at 50% { widen ffn x1 } }", 1, 51, "widening ffn by x1 leaves it unchanged"),
    ("factor-below-one", S + "at 50% { widen ffn x0.5 } }", 1, 51,
     "got x0.5; narrowing a model is not supported"),
    ("factor-with-suffix", S + "at 50% { widen ffn x2k } }", 1, 51, "the suffix k is for counts"),
    ("size-zero", S + "at 50% { widen ffn to 0 } }", 1, 54, "target size of ffn must be at least 1, got 0"),
    ("size-not-whole", S + "at 50% { widen ffn to 1.5 } }", 1, 54, "a size must be a whole number, got 1.5"),
    ("axis-twice", S + "at 50% { widen ffn x2; widen ffn x4 } }", 1, 61,
     "axis ffn is widened twice in this event (first on line 1)"),
    ("event-without-widen", S + "at 50% { init zero } }", 1, 32, "event has no `widen` statement"),
    ("duplicate-init", S + "at 50% { widen ffn x2; init zero; init random } }", 1, 66,
     "duplicate `init` statement: an event has one"),
    ("duplicate-optimizer", S + "at 50% { widen ffn x2; optimizer copy; optimizer copy } }", 1, 71,
     "duplicate `optimizer` statement"),
    ("duplicate-event-lr", S + "at 50% { widen ffn x2; lr new same; lr new same } }", 1, 68,
     "duplicate `lr` statement"),
    ("duplicate-train", "schedule s {\n train 10 steps\n train 20 steps\n}", 3, 2,
     "duplicate `train` statement: a schedule has one, and the first is on line 2"),
    ("duplicate-base-lr", S + "lr cosine peak 1 min 0; lr cosine peak 1 min 0 }", 1, 56,
     "duplicate `lr` statement: a schedule has one"),
    ("missing-train", "schedule s { at 50% { widen ffn x2 } }", 1, 1, "schedule s has no `train` statement"),
    ("min-above-peak", S + "lr cosine peak 1e-3 min 1e-2 }", 1, 56, "min learning rate 0.01 is above the peak 1e-3"),
    ("negative-peak", S + "lr cosine peak -1 min 0 }", 1, 47,
     "peak learning rate must be a finite number >= 0, got -1"),
    ("infinite-min", S + "lr cosine peak 1 min 1e999 }", 1, 53, "a learning rate is too large"),
    ("suffix-on-learning-rate", S + "lr cosine peak 6e-4k min 0 }", 1, 47,
     "the suffix k is for counts of steps, tokens or sizes, not for a learning rate"),
    ("base-warmup-too-long", "schedule s { train 100 steps; lr cosine peak 1 min 0 warmup 100 steps }", 1, 61,
     "base warmup of 100 steps does not end before training ends at step 100"),
    ("negative-base-warmup", S + "lr cosine peak 1 min 0 warmup -1 steps }", 1, 62,
     "base warmup must be at least 0 steps, got -1"),
    ("negative-rewarmup", S + "at 50% { widen ffn x2; lr new rewarmup -5 steps } }", 1, 71,
     "re-warmup must last at least 0 steps, got -5"),
    ("zero-peak-factor", S + "at 50% { widen ffn x2; lr new rewarmup to 0x } }", 1, 74,
     "re-warmup peak factor must be a finite number greater than 0, got 0x"),
    ("rewarmup-past-end", "schedule s { train 1000 steps; at step 900 { widen ffn x2; lr new rewarmup 200 steps } }",
     1, 76, "re-warmup of 200 steps from step 900 runs to step 1100, past the end of training at step 1000; "
     "shorten it to at most 99 steps"),
    ("default-rewarmup-past-end", "schedule s { train 100 steps; at 50% { widen ffn x2 } }", 1, 31,
     "the default re-warmup of new entries (250 steps) from step 50 runs to step 300"),
    ("events-out-of-order", "schedule s {\n train 4000 steps\n at step 3000 { widen ffn x2 }\n"
     " at 50% { widen hidden x2 }\n}", 4, 5,
     "events must be listed in the order they fire, but this one (50%, step 2000) fires before "
     "the event at step 3000 on line 3"),
    ("events-at-same-time", "schedule s {\n train 4000 steps\n at step 2000 { widen ffn x2 }\n"
     " at 50% { widen hidden x2 }\n}", 4, 5, "fires at the same time as the event at step 2000 on line 3; "
     "merge them into one `at` block"),
    ("token-events-out-of-order", "schedule s {\n train 4M tokens\n at 75% { widen ffn x2 }\n"
     " at 1M tokens { widen hidden x2 }\n}", 4, 5,
     "this one (1M tokens) fires before the event at 75%, 3M tokens on line 3"),
]


@pytest.mark.parametrize(
    "text, line, column, message",
    [case[1:] for case in SEMANTIC_ERRORS],
    ids=[case[0] for case in SEMANTIC_ERRORS],
)
def test_semantic_error(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text, file="bad.grow")

    assert not isinstance(caught.value, ScheduleSyntaxError)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.column) == (line, column)
    assert message in diagnostic.message


MANY_ERRORS = """\
schedule s {
    train 4000 steps
    lr cosine peak 1e-3 min 1e-2
    at 2000 {
        widen ffn x1
        widen ffn to 0
    }
    at step 10 {
        init zero
        init random
    }
    at step 5 { widen hidden x2 }
}
"""


def test_semantic_errors_reported_together() -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(MANY_ERRORS, file="many.grow")

    positions = [(d.line, d.column) for d in caught.value.diagnostics]
    assert positions == [
        (3, 29),   # min above peak
        (4, 8),    # fraction 2000
        (5, 19),   # factor x1
        (6, 15),   # ffn widened twice
        (6, 22),   # size 0
        (8, 5),    # no widen
        (10, 9),   # duplicate init
        (12, 13),  # step 5 before step 10
    ]
    assert all(d.file == "many.grow" for d in caught.value.diagnostics)


def test_one_diagnostic_per_position() -> None:
    # `2.5` is not whole, and its stand-in (2) is also out of range; only the first is reported.
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(S + "at step 0.5 { widen ffn x2 } }")

    assert [d.message for d in caught.value.diagnostics] == [
        "a step count must be a whole number, got 0.5"
    ]


def test_diagnostic_shows_source_line_and_caret() -> None:
    with pytest.raises(ScheduleSyntaxError) as caught:
        parse_schedule("schedule s {\n\ttrain 4000\n}\n", file="tab.grow")

    assert str(caught.value) == (
        "tab.grow:2:12: error: expected 'steps' or 'tokens', got end of line\n"
        "    \ttrain 4000\n"
        "    \t          ^"
    )


def test_syntax_error_line_with_tab_keeps_caret_aligned() -> None:
    with pytest.raises(ScheduleSyntaxError) as caught:
        parse_schedule("schedule s {\n\ttrain 4000 @\n}\n", file="tab.grow")

    assert caught.value.diagnostics[0].format().splitlines()[1:] == ["    \ttrain 4000 @", "    \t           ^"]


def test_syntax_error_message_has_no_lark_names() -> None:
    for case in SYNTAX_ERRORS:
        with pytest.raises(ScheduleSyntaxError) as caught:
            parse_schedule(case[1])
        message = caught.value.diagnostics[0].message
        assert "__ANON" not in message
        assert "RBRACE" not in message
        assert "_NL" not in message


# ---- validate_schedule on IR built in Python --------------------------------------------------


def test_validate_schedule_without_spans_reports_line_one() -> None:
    schedule = Schedule(
        name="s",
        train=TrainSteps(steps=100),
        events=(GrowthEvent(trigger=AtFraction(fraction=2.0), widens=(Widen(axis="ffn", amount=ByFactor(factor=2.0)),)),),
    )

    with pytest.raises(ScheduleError) as caught:
        validate_schedule(schedule)

    assert [(d.file, d.line, d.column) for d in caught.value.diagnostics] == [("<string>", 1, 1)]


def test_validate_schedule_rejects_unwritable_name() -> None:
    schedule = Schedule(name="my run", train=TrainSteps(steps=100))

    with pytest.raises(ScheduleError, match="schedule name 'my run' cannot be written"):
        validate_schedule(schedule)


# ---- files that cannot be read ----------------------------------------------------------------


def only_diagnostic(error: ScheduleError) -> Diagnostic:
    (diagnostic,) = error.diagnostics
    return diagnostic


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.grow"

    with pytest.raises(ScheduleError) as caught:
        load_schedule(path)

    diagnostic = only_diagnostic(caught.value)
    assert (diagnostic.file, diagnostic.line, diagnostic.column) == (str(path), 1, 1)
    assert "cannot read the schedule file: No such file or directory" in diagnostic.message


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="cannot read the schedule file"):
        load_schedule(tmp_path)


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.grow"
    path.write_bytes(b"schedule s {\n  # caf\xe9\n  train 10 steps\n}\n")

    with pytest.raises(ScheduleError) as caught:
        load_schedule(str(path))

    diagnostic = only_diagnostic(caught.value)
    assert (diagnostic.line, diagnostic.column) == (2, 8)
    assert "not valid UTF-8 (byte 0xe9 at offset 20)" in diagnostic.message


def test_load_reports_syntax_error_with_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.grow"
    path.write_text("schedule s { train 10 }\n", encoding="utf-8")

    with pytest.raises(ScheduleSyntaxError) as caught:
        load_schedule(path)

    assert str(caught.value).startswith(f"{path}:1:23: error: expected 'steps' or 'tokens'")


def test_load_non_utf8_after_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.grow"
    path.write_bytes(b"\xef\xbb\xbfschedule s\xe9 { train 10 steps }\n")

    with pytest.raises(ScheduleError) as caught:
        load_schedule(path)

    diagnostic = only_diagnostic(caught.value)
    assert (diagnostic.line, diagnostic.column) == (1, 11)
    assert "byte 0xe9 at offset 13" in diagnostic.message
