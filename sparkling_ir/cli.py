"""The `sparkling` command line: check schedules, inspect a model's axes, train with growth.

    sparkling check FILE...          validate .grow files (located errors and exit 1 if invalid)
    sparkling axes [MODEL OPTIONS]   print the width axes of the bundled model
    sparkling plan SCHEDULE          print the changes of each growth event on that model
    sparkling train SCHEDULE         train the bundled GPT and widen it as the schedule says
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from sparkling_ir.compile import cli as plan_cli
    from sparkling_ir.graph import cli as axes_cli
    from sparkling_ir.schedule import cli as check_cli
    from sparkling_ir.train import cli as train_cli

    parser = argparse.ArgumentParser(
        prog="sparkling",
        description="Declarative width-progressive training: widen a model mid-training.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every stage (INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    check_cli.add_parser(commands)
    axes_cli.add_parser(commands)
    plan_cli.add_parser(commands)
    train_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.run(args)
    except BrokenPipeError:
        # The reader went away (`sparkling plan ... | head`): stop quietly, as Unix tools do.
        # Point stdout at /dev/null so that the flush at exit cannot fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
