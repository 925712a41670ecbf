"""Schedule text to parse tree: the lark parser built from `grow.lark`, and its syntax errors.

`parse_tree` is the only way in. It returns lark's tree or raises `ScheduleSyntaxError` with
one diagnostic. The message names, in the language's own words, what was expected and what
was found ("expected 'steps' or 'tokens', got '}'"), often followed by a hint. Lark's exceptions and
terminal names (`RBRACE`, `_NL`) never leave this module.

The grammar is read with `importlib.resources`, so the same file serves a checkout and an
installed wheel; see `grammar/grow.lark` for the language itself.
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import unicodedata
from collections.abc import Iterable

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import Pattern, PatternStr

from sparkling_ir.errors import Diagnostic, ScheduleSyntaxError
from sparkling_ir.schedule.ir import AXIS_NAMES
from sparkling_ir.schedule.source import Source

GRAMMAR_PACKAGE = "sparkling_ir.grammar"
GRAMMAR_FILE = "grow.lark"

# Terminals that are not keywords, as a message names them.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "FACTOR": "a factor such as x2",
    "_NL": "end of line",
    "$END": "end of file",
}
# Keywords that start a statement. Where one of them is expected, "end of line" is noise,
# because a blank line is allowed there but is never what is missing.
_STATEMENT_KEYWORDS = {"SCHEDULE", "TRAIN", "LR", "AT", "WIDEN", "INIT", "OPTIMIZER"}
_SEPARATORS = {"_NL", "SEMICOLON"}
_AXIS_TERMINALS = {axis.upper() for axis in AXIS_NAMES}
_LONGEST_SHOWN = 30  # characters of an unexpected token quoted in a message


@functools.cache
def schedule_parser() -> Lark:
    """Return the LALR parser of the schedule language (built once per process)."""
    grammar = importlib.resources.files(GRAMMAR_PACKAGE).joinpath(GRAMMAR_FILE)
    return Lark(
        grammar.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="basic",
        propagate_positions=True,
        maybe_placeholders=True,
    )


@functools.cache
def keywords() -> frozenset[str]:
    """Return the reserved words of the language: every word-like string in the grammar."""
    return frozenset(
        terminal.pattern.value
        for terminal in schedule_parser().terminals
        if isinstance(terminal.pattern, PatternStr) and terminal.pattern.value.isidentifier()
    )


def is_schedule_name(name: str) -> bool:
    """Return whether `name` lexes as one NAME token, so that it can be written as a
    schedule name. Such a name is an identifier and no keyword, and does not start with `x`
    and a digit, which the lexer reads as a factor."""
    try:
        tokens = list(schedule_parser().lex(name, dont_ignore=True))
    except UnexpectedInput:
        return False
    return len(tokens) == 1 and tokens[0].type == "NAME" and str(tokens[0]) == name


@functools.cache
def _terminal_patterns() -> dict[str, Pattern]:
    """Map each terminal's name to its pattern, in the order the grammar defines them."""
    return {terminal.name: terminal.pattern for terminal in schedule_parser().terminals}


def parse_tree(source: Source) -> Tree[Token]:
    """Parse `source.text` into lark's tree; raise ScheduleSyntaxError if it does not parse."""
    assert source.text is not None, "parse_tree needs the text, not only the file name"
    try:
        return schedule_parser().parse(source.text)
    except UnexpectedInput as error:
        raise ScheduleSyntaxError([_diagnose(error, source)]) from error


# ---- turning lark's errors into diagnostics ---------------------------------------------------


def _diagnose(error: UnexpectedInput, source: Source) -> Diagnostic:
    """Describe a lark syntax error as "expected X, got Y", plus a hint where one applies."""
    text = source.text or ""
    if isinstance(error, UnexpectedCharacters):
        line, column = error.line, error.column
        expected = _expected_before(text, error.pos_in_stream or 0)
        got = _describe_character(error.char)
        hint = _character_hint(error.char, expected)
    elif isinstance(error, UnexpectedToken) and error.token.type != "$END":
        token = error.token
        line, column = token.line or 1, token.column or 1
        expected = set(error.accepts or error.expected)
        got = _describe_token(token)
        hint = _token_hint(token, expected, text)
    else:
        # LALR reports the end of the text as a `$END` token placed on the last token, but
        # the place a user must edit is just after the last thing they wrote.
        line, column = source.end_position()
        if isinstance(error, UnexpectedToken):
            expected = set(error.accepts or error.expected)
        else:
            expected = set(getattr(error, "expected", None) or ())
        got = "end of file"
        hint = _end_hint(expected)
    message = f"expected {_describe_expected(expected)}, got {got}"
    if hint:
        message = f"{message}. {hint}"
    return source.diagnostic(line, column, message)


def _expected_before(text: str, position: int) -> set[str]:
    """Return the terminals that the parser accepts at `position`, where the lexer failed.

    With the basic lexer, lark's UnexpectedCharacters lists every terminal of the grammar,
    so the text up to the bad character is parsed again to learn what the parser expected.
    """
    try:
        interactive = schedule_parser().parse_interactive(text[:position])
        interactive.exhaust_lexer()
        accepted: set[str] = interactive.accepts()  # type: ignore[no-untyped-call]
        return accepted
    except UnexpectedInput:
        return set()


def _describe_expected(names: Iterable[str]) -> str:
    """Name a set of terminals as a user would: `'steps', 'tokens' or a number`."""
    names = set(names)
    if names & _STATEMENT_KEYWORDS or "$END" in names:
        names -= _SEPARATORS
    if "_NL" in names:
        names.discard("SEMICOLON")  # "end of line" stands for both ways to end a statement
    if {"STEP", "STEPS"} <= names:
        names.discard("STEP")  # `step` and `steps` are one unit, spelled two ways
    if {"TOKEN", "TOKENS"} <= names:
        names.discard("TOKEN")
    words: list[str] = []
    if _AXIS_TERMINALS <= names:
        names -= _AXIS_TERMINALS
        words.append(f"an axis ({', '.join(AXIS_NAMES)})")
    words += [_describe_terminal(name) for name in sorted(names, key=_terminal_order)]
    if not words:
        return "nothing more"
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _terminal_order(name: str) -> tuple[int, int]:
    """Sort key that lists keywords in grammar order, then `}`, separators and end of file."""
    closing = {"RBRACE": 1, "_NL": 2, "SEMICOLON": 2, "$END": 3}
    if name in closing:
        return closing[name], 0
    order = list(_terminal_patterns())
    return 0, order.index(name) if name in order else len(order)


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    pattern = _terminal_patterns().get(name)
    if isinstance(pattern, PatternStr):
        return f"'{pattern.value}'"
    return name.lower()


def _describe_token(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    value = str(token)
    if len(value) > _LONGEST_SHOWN:
        value = value[:_LONGEST_SHOWN] + "..."
    return f"'{value}'"


def _describe_character(char: str) -> str:
    if char.isprintable() and not char.isspace():
        return f"'{char}'"
    name = unicodedata.name(char, "")
    return f"the character U+{ord(char):04X} {name}".rstrip()


# ---- hints: the likely fix for common mistakes -------------------------------------------------


def _token_hint(token: Token, expected: set[str], text: str) -> str:
    """Return the likely fix when a whole token is out of place, or ""."""
    kind, value = token.type, str(token)
    start = token.start_pos or 0
    if kind == "NAME" and start > 0 and (text[start - 1].isdigit() or text[start - 1] == "."):
        return "A number may end in k (thousand), M (million) or B (billion) and nothing else"
    if "NAME" in expected and value in keywords():
        return f"'{value}' is a keyword of the language; choose another schedule name"
    if expected == {"LBRACE"} and kind == "_NL":
        return "Put the '{' on the same line"
    if kind in {"WIDEN", "INIT", "OPTIMIZER"} and "AT" in expected:
        return f"'{value}' goes inside an event: `at 50% {{ {value} ... }}`"
    if kind == "NEW" and "COSINE" in expected:
        return "`lr new ...` goes inside an event; at the top level `lr` sets the base schedule"
    if kind == "COSINE" and "NEW" in expected:
        return "`lr cosine ...` is the base schedule and goes at the top level"
    if kind in {"TRAIN", "AT"} and "WIDEN" in expected:
        return f"'{value}' goes at the top level of the schedule; events do not nest"
    if kind == "SCHEDULE" and "$END" in expected:
        return "A file contains one schedule"
    if "SCHEDULE" in expected:
        return "A file starts with `schedule NAME {`"
    if expected <= _SEPARATORS | {"RBRACE"} and kind in _STATEMENT_KEYWORDS:
        return "Put each statement on its own line, or separate them with ';'"
    return _did_you_mean(value, expected) if kind == "NAME" else ""


def _did_you_mean(word: str, expected: set[str]) -> str:
    patterns = _terminal_patterns()
    candidates = [
        pattern.value
        for name in expected
        if isinstance(pattern := patterns.get(name), PatternStr)
    ]
    matches = difflib.get_close_matches(word.lower(), candidates, n=1, cutoff=0.6)
    return f"Did you mean '{matches[0]}'?" if matches else ""


def _character_hint(char: str, expected: set[str]) -> str:
    """Return the likely fix for a character that no token can start with, or ""."""
    if char == "/":
        return "Comments start with '#'"
    if char in "\"'":
        return "Names are written without quotes"
    if char == "-" and "LBRACE" in expected:
        return "A schedule name contains only letters, digits and '_'"
    if char in "×*":
        return "Write a factor as x2 or 2x"
    if char == ",":
        return "Write numbers without thousands separators, or use a suffix such as 4k"
    if char == "=":
        return "Statements take no '=', for example `train 4000 steps`"
    return ""


def _end_hint(expected: set[str]) -> str:
    if "RBRACE" in expected:
        return "A '}' is missing: close every '{'"
    if "SCHEDULE" in expected:
        return "A file starts with `schedule NAME {`"
    return ""
