"""The exceptions of sparkling_ir: one small tree, rooted at `SparklingError`.

User mistakes (a malformed schedule, an impossible width, an op without a rule, an optimizer
state that cannot be remapped) raise a subclass of `SparklingError` whose message names the
value and the fix. Anything else escaping the library is a bug in it.

    SparklingError
    ├── ScheduleError            schedule text or content is invalid (carries diagnostics)
    │   └── ScheduleSyntaxError  the text does not parse
    ├── TraceError               the model cannot be traced or run on the example inputs
    ├── GrowthError              a growth event cannot be applied to this model
    │   ├── BindError            a schedule's axes or sizes do not fit the model (located)
    │   └── OptimizerStateError  the optimizer state cannot be remapped to the new shapes
    └── DataError                the training text cannot be read or is too short
"""

from __future__ import annotations

from dataclasses import dataclass


class SparklingError(Exception):
    """Base class of every error that sparkling_ir raises for bad input."""


@dataclass(frozen=True)
class Diagnostic:
    """One located error in a schedule file: `FILE:LINE:COL: error: MESSAGE`, then a caret."""

    file: str
    line: int
    column: int
    message: str
    source_line: str = ""

    def format(self) -> str:
        head = f"{self.file}:{self.line}:{self.column}: error: {self.message}"
        if not self.source_line:
            return head
        # The caret sits under the column; tabs are kept so that it lines up in a terminal.
        prefix = "".join(c if c == "\t" else " " for c in self.source_line[: self.column - 1])
        return f"{head}\n    {self.source_line}\n    {prefix}^"


class ScheduleError(SparklingError):
    """A schedule is invalid; `diagnostics` lists every error found in it, in source order."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))
        super().__init__("\n".join(d.format() for d in self.diagnostics))


class ScheduleSyntaxError(ScheduleError):
    """The schedule text does not parse; it carries exactly one diagnostic."""


class TraceError(SparklingError):
    """The model cannot be traced, or fails to run on the example inputs."""


class GrowthError(SparklingError):
    """A growth event cannot be applied to this model; the model and optimizer are unchanged."""


class BindError(GrowthError):
    """The schedule does not fit this model; `diagnostics` locates every problem in the file."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))
        super().__init__("\n".join(d.format() for d in self.diagnostics))


class OptimizerStateError(GrowthError):
    """An optimizer state tensor has a layout that cannot be remapped to the grown shapes."""


class DataError(SparklingError):
    """The training text is missing, unreadable or too short for the requested run."""
