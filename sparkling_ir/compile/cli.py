"""`sparkling plan SCHEDULE`: print the growth plan of every event on the bundled GPT.

The schedule is bound to a GPT with random weights of the given sizes and its events are
applied in order, without an optimizer, so each plan is printed for the model as the earlier
events left it. Nothing is trained and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sparkling_ir.errors import SparklingError
from sparkling_ir.models.arguments import add_model_arguments, model_from_arguments
from sparkling_ir.runtime import Grower
from sparkling_ir.schedule import load_schedule


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "plan",
        help="print what each growth event changes on the bundled GPT",
        description=__doc__,
    )
    parser.add_argument("schedule", type=Path, help=".grow schedule file")
    add_model_arguments(parser)
    parser.add_argument(
        "--batch-size", type=int, default=16,
        help="sequences per update, to turn token counts into steps as train does (default: 16)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        model, example = model_from_arguments(args)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        schedule = load_schedule(args.schedule)
        tokens_per_step = args.batch_size * model.block_size
        grower = Grower(model, None, schedule, example_inputs=(example,), tokens_per_step=tokens_per_step)
        for index, step in enumerate(grower.event_steps):
            report = grower.apply_event(index, step)
            print(f"# {report.summary()}")
            print(grower.plans[-1].format())
    except SparklingError as error:
        print(error, file=sys.stderr)
        return 1
    return 0
