"""`sparkling axes`: print the width axes of the bundled GPT, as a table or JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sparkling_ir.analysis import analyse_model
from sparkling_ir.errors import SparklingError
from sparkling_ir.models.arguments import add_model_arguments, model_from_arguments


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "axes",
        help="print the width axes of the bundled GPT",
        description=(
            "Trace the bundled GPT (random weights), build its dimension graph and print its "
            "width axes: each axis with its role, size and the parameters that follow it."
        ),
    )
    add_model_arguments(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--format", choices=("table", "json"), default="table", help="output format of the axes")
    output.add_argument("--graph", action="store_true", help="print the whole dimension graph instead")
    parser.add_argument("--members", action="store_true", help="list the parameter dims of each axis")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        model, example = model_from_arguments(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        analysis = analyse_model(model, (example,))
    except SparklingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.graph:
        print(analysis.graph.format())
        return 0
    if args.format == "json":
        print(analysis.axes.to_json())
        return 0
    print(analysis.axes.format_table())
    if args.members:
        for axis in analysis.axes.axes:
            print(f"\n{axis.name}:")
            for member in axis.members:
                print(f"  {member}")
    return 0
