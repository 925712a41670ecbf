"""A schedule's file name and text, for building located diagnostics.

Every stage of the schedule package reports errors as `Diagnostic`s that point at a line and
column of the file. `Source` turns a `Span` (or a line and column) into a `Diagnostic` with
the source line filled in, so the message prints with a caret under the mistake.
"""

from __future__ import annotations

from sparkling_ir.errors import Diagnostic
from sparkling_ir.schedule.ir import Span

STRING_FILE = "<string>"  # the file name of schedule text that was not read from a file


class Source:
    """The text of one schedule file, or only its name when the text is not at hand.

    Lines are split on `\\n` alone, as lark counts them, so that line numbers agree with the
    parser's. A trailing `\\r` is dropped from each line before it is shown.
    """

    def __init__(self, file: str, text: str | None = None) -> None:
        self.file = file
        self.text = text
        self._lines = text.split("\n") if text is not None else []

    def line_text(self, line: int) -> str:
        """Return line `line` (1-based) without its line break, or "" if there is none."""
        if 1 <= line <= len(self._lines):
            return self._lines[line - 1].rstrip("\r")
        return ""

    def diagnostic(self, line: int, column: int, message: str) -> Diagnostic:
        """Build a diagnostic at `line:column` of this file."""
        return Diagnostic(self.file, line, column, message, self.line_text(line))

    def at(self, span: Span | None, message: str) -> Diagnostic:
        """Build a diagnostic at `span`, or at line 1 column 1 when the node has no span
        (it was built in Python rather than parsed)."""
        if span is None:
            return Diagnostic(self.file, 1, 1, message)
        return Diagnostic(span.file, span.line, span.column, message, self.line_text(span.line))

    def span(self, line: int, column: int) -> Span:
        return Span(file=self.file, line=line, column=column)

    def end_position(self) -> tuple[int, int]:
        """Return the line and column just after the last non-blank character, where a
        message about a missing `}` or statement should point."""
        for index in range(len(self._lines) - 1, -1, -1):
            content = self._lines[index].rstrip()
            if content:
                return index + 1, len(content) + 1
        return 1, 1
