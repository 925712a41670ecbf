"""Fuzzing the parser: for any input string, `parse_schedule` returns a Schedule or raises
ScheduleError (ScheduleSyntaxError included), with well-formed diagnostics, and never
anything else.

Inputs come from the grammar itself (`hypothesis.extra.lark`), from arbitrary text, from soups
of the language's tokens, and from small edits of valid files.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark.lexer import PatternStr

from sparkling_ir.errors import ScheduleError, ScheduleSyntaxError
from sparkling_ir.schedule import format_schedule, parse_schedule
from sparkling_ir.schedule.ir import Schedule
from sparkling_ir.schedule.syntax import is_schedule_name, keywords, schedule_parser

SCHEDULES = Path(__file__).resolve().parent.parent / "schedules"
FUZZ = settings(max_examples=200, deadline=None)

PARSER = schedule_parser()
TERMINALS = {terminal.name: terminal for terminal in PARSER.terminals}

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True).filter(is_schedule_name)
numbers = st.one_of(
    st.integers(min_value=0, max_value=5000).map(str),
    st.sampled_from(["50", "0.5", ".25", "1.5", "2k", "1M", "2.5M", "6e-4", "-1", "+3", "1e999", "2.5", "0", "1e19"]),
    st.from_regex(TERMINALS["NUMBER"].pattern.to_regexp(), fullmatch=True),
)


def spaced_tokens() -> dict[str, st.SearchStrategy[str]]:
    """Strategies for every terminal, each token followed by a space so none run together,
    with comments left out (one would swallow the rest of its line)."""
    explicit: dict[str, st.SearchStrategy[str]] = {
        "NAME": names,
        "NUMBER": numbers,
        "FACTOR": numbers.map(lambda number: "x" + number),
        "_NL": st.sampled_from(["\n", "\r\n"]),
        "COMMENT": st.just(""),
        "WS": st.sampled_from([" ", "\t"]),
    }
    for name, terminal in TERMINALS.items():
        if isinstance(terminal.pattern, PatternStr):
            explicit[name] = st.just(terminal.pattern.value)
    return {name: strategy.map(lambda token: token + " ") for name, strategy in explicit.items()}


def parse_or_schedule_error(text: str) -> Schedule | None:
    """Parse `text`; return the schedule, or None after checking the error it raised.

    A valid schedule must also survive a format-parse round trip.
    """
    try:
        schedule = parse_schedule(text, file="fuzz.grow")
    except ScheduleError as error:
        check_diagnostics(error, text)
        return None
    reparsed = parse_schedule(format_schedule(schedule), file="fuzz.grow")
    assert reparsed.without_spans() == schedule.without_spans()
    return schedule


def check_diagnostics(error: ScheduleError, text: str) -> None:
    assert error.diagnostics
    if isinstance(error, ScheduleSyntaxError):
        assert len(error.diagnostics) == 1
    lines = text.count("\n") + 1
    for diagnostic in error.diagnostics:
        assert diagnostic.file == "fuzz.grow"
        assert 1 <= diagnostic.line <= lines
        assert diagnostic.column >= 1
        assert diagnostic.message
        assert diagnostic.format().startswith(f"fuzz.grow:{diagnostic.line}:{diagnostic.column}: error: ")


@FUZZ
@given(from_lark(PARSER, explicit=spaced_tokens()))
def test_grammar_strings_are_never_syntax_errors(text: str) -> None:
    try:
        parse_or_schedule_error(text)
    except ScheduleSyntaxError as error:  # pragma: no cover - the failure message
        raise AssertionError(f"grammar-generated text did not parse:\n{text}\n{error}") from error


@FUZZ
@given(from_lark(PARSER))
def test_raw_grammar_strings_parse_or_raise_schedule_error(text: str) -> None:
    # Tokens run together and comments swallow lines here, so many of these do not parse.
    parse_or_schedule_error(text)


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_raises_schedule_error(text: str) -> None:
    parse_or_schedule_error(text)


soup_tokens = st.sampled_from(
    sorted(keywords()) + ["{", "}", "%", ";", "\n", "#", "x2", "2x", "50", "0.5", "1M", "-3", "@", "s"]
)


@FUZZ
@given(
    st.sampled_from(["", "schedule s {\n train 1000 steps\n"]),
    st.lists(soup_tokens, max_size=60).map(" ".join),
)
def test_token_soup_parses_or_raises_schedule_error(prefix: str, soup: str) -> None:
    # The prefix takes half of the soups past the first token, to the statements.
    parse_or_schedule_error(prefix + soup)


SEEDS = [path.read_text(encoding="utf-8") for path in sorted(SCHEDULES.glob("*.grow"))] + [
    "schedule s { train 2M tokens; at 1M tokens { widen ffn x1.5; lr new rewarmup to 1.2x } }",
    "schedule s {\n train 4k steps\n at step 2000 { widen kv_heads to 8; optimizer copy; init zero }\n}\n",
]
inserted = st.one_of(st.sampled_from(list("{}%;#\n x0.-kM")), st.characters())


@st.composite
def edited_files(draw: st.DrawFn) -> str:
    """A valid file with one to three characters deleted, inserted or replaced, or a line
    deleted or repeated."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        edit = draw(st.sampled_from(["delete", "insert", "replace", "drop-line", "repeat-line"]))
        position = draw(st.integers(min_value=0, max_value=len(text)))
        if edit == "delete":
            text = text[:position] + text[position + 1:]
        elif edit == "insert":
            text = text[:position] + draw(inserted) + text[position:]
        elif edit == "replace":
            text = text[:position] + draw(inserted) + text[position + 1:]
        else:
            lines = text.split("\n")
            index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[index:index + 1] = [] if edit == "drop-line" else [lines[index]] * 2
            text = "\n".join(lines)
    return text


@FUZZ
@given(edited_files())
def test_edited_files_parse_or_raise_schedule_error(text: str) -> None:
    parse_or_schedule_error(text)


def test_seeds_are_valid() -> None:
    for text in SEEDS:
        assert parse_or_schedule_error(text) is not None
