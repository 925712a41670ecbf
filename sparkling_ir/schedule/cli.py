"""`sparkling check FILE...`: validate `.grow` schedule files.

Every file is checked, even after one fails. For each valid file the command prints
`FILE: ok` to stdout, or with `--print` its canonical form after a `# FILE` comment line
(and a blank line between files).
For each invalid file it prints every error to stderr as `FILE:LINE:COL: error: MESSAGE`,
followed by the source line and a caret under the column. The exit status is 0 when every
file is valid and 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

from sparkling_ir.errors import ScheduleError
from sparkling_ir.schedule.format import format_schedule
from sparkling_ir.schedule.parse import load_schedule


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `check` subcommand to the `sparkling` command line."""
    parser = commands.add_parser(
        "check",
        help="validate .grow schedule files",
        description=(
            "Parse and validate .grow schedule files. Prints 'FILE: ok' for each valid "
            "file and every error of each invalid one; exits with 1 if any file is invalid."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="a .grow schedule file")
    parser.add_argument(
        "--print",
        dest="print_canonical",
        action="store_true",
        help="print the canonical form of each valid file instead of 'FILE: ok'",
    )
    parser.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Check every file in `args.files`; return 0 if all are valid, else 1."""
    all_valid = True
    for index, file in enumerate(args.files):
        try:
            schedule = load_schedule(file)
        except ScheduleError as error:
            all_valid = False
            for diagnostic in error.diagnostics:
                print(diagnostic.format(), file=sys.stderr)
            continue
        if args.print_canonical:
            if index > 0:
                print()
            print(f"# {file}")
            print(format_schedule(schedule), end="")
        else:
            print(f"{file}: ok")
    return 0 if all_valid else 1
