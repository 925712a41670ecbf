"""`sparkling train SCHEDULE`: train the bundled GPT and widen it at the schedule's events.

    sparkling train schedules/tinygpt_2x.grow --out runs/demo
    sparkling train my.grow --text corpus.txt --steps 200 --compare scratch

Writes `metrics.json` and `loss.png` to `--out` (default `runs/<schedule name>`). Exit codes:

- 0 on success;
- 1 for a missing, unreadable or invalid schedule file (as in `sparkling check`), a schedule
  that does not bind to the model, or a training text that cannot be used. It is also the
  status of a failed growth event, and of a failure to write the outputs after training;
- 2 for invalid command-line values, including a `--device` that torch cannot allocate on
  and an `--out` that cannot be created or written to;
- 130 when interrupted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from rich.console import Console

from sparkling_ir.errors import BindError, ScheduleError, SparklingError
from sparkling_ir.train.console import ProgressDisplay, print_header, print_summary
from sparkling_ir.train.data import Corpus, load_corpus
from sparkling_ir.train.loop import train
from sparkling_ir.train.metrics import RunResult, comparison, write_json_atomic
from sparkling_ir.train.plan import (
    FLOAT32_MAX,
    Plan,
    UsageError,
    check_flags,
    fit_eval_batches,
    make_plan,
    read_schedule,
)
from sparkling_ir.train.plot import plot_runs

METRICS_FILE = "metrics.json"
PLOT_FILE = "loss.png"


def add_parser(commands: Any) -> None:
    """Add the `train` subcommand to the `sparkling` parser's subcommands."""
    parser = commands.add_parser(
        "train",
        help="train the bundled GPT and widen it at a schedule's growth events",
        description=(
            "Train the bundled GPT on byte-level text and apply the schedule's growth events. "
            "Writes metrics.json and loss.png to --out."
        ),
    )
    parser.add_argument("schedule", type=Path, help=".grow schedule file")
    add_run_arguments(parser)
    add_model_arguments(parser)
    add_lr_arguments(parser)
    parser.set_defaults(run=run)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run")
    group.add_argument(
        "--out", type=output_dir, metavar="DIR",
        help="output directory (default: runs/<schedule name>)",
    )
    group.add_argument(
        "--text", type=Path, metavar="FILE",
        help="training text file, read as bytes (default: the Python standard library source)",
    )
    group.add_argument(
        "--steps", type=positive_int, metavar="N",
        help="number of updates, replacing the schedule's train length; events written as a "
        "percentage move with it, events at a step or token count stay",
    )
    group.add_argument(
        "--compare", choices=["scratch"],
        help="also train the final wide model from scratch on the same batches",
    )
    group.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    group.add_argument(
        "--device", default="cpu", metavar="DEVICE",
        help="torch device to train on, e.g. cpu, cuda or cuda:1; checked by allocating a "
        "tensor on it before the run (default: cpu)",
    )
    group.add_argument(
        "--threads", type=positive_int, metavar="N",
        help="CPU threads for torch (default: the CPUs this process may use)",
    )
    group.add_argument(
        "--eval-every", type=positive_int, metavar="N",
        help="updates between validation evaluations (default: 1/20 of the run)",
    )
    group.add_argument(
        "--eval-batches", type=positive_int, metavar="N",
        help="held-out batches per validation evaluation, at most as many as the validation "
        "holdout fills without overlapping windows (default: 8, or that maximum if lower)",
    )
    group.add_argument(
        "--quiet", action="store_true",
        help="print only the final summary: no progress bar, no growth lines",
    )


# (flag, default, help) of the model sizes; every one is a positive integer.
MODEL_FLAGS: tuple[tuple[str, int | None, str], ...] = (
    ("--n-layer", 4, "transformer blocks (default: 4)"),
    ("--n-embd", 64, "hidden size, the residual stream (default: 64)"),
    ("--n-head", 4, "attention heads (default: 4)"),
    ("--head-dim", 16, "size of one attention head (default: 16)"),
    ("--ffn-dim", None, "MLP inner size (default: 4 x --n-embd)"),
    ("--block-size", 128, "sequence length in bytes (default: 128)"),
    ("--batch-size", 16, "sequences per update (default: 16)"),
)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model and batch (sizes before growth)")
    for flag, default, help_text in MODEL_FLAGS:
        group.add_argument(flag, type=positive_int, default=default, metavar="N", help=help_text)


def add_lr_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "learning rate (each flag replaces its part of the schedule's lr line)"
    )
    group.add_argument(
        "--lr", type=positive_learning_rate, metavar="LR",
        help="peak learning rate (default: 3e-3)",
    )
    group.add_argument(
        "--min-lr", type=non_negative_learning_rate, metavar="LR",
        help="final learning rate, at most the peak (default: 0.1 x peak)",
    )
    group.add_argument(
        "--warmup", type=non_negative_int, metavar="N",
        help="warmup updates (default: 5%% of the run)",
    )


def run(args: argparse.Namespace) -> int:
    """Run `sparkling train`; print errors as messages, never as tracebacks."""
    # Off a terminal rich would wrap at 80 columns; log files take longer lines.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    out = args.out
    created: list[Path] = []
    succeeded = False
    try:
        check_flags(args)
        schedule = read_schedule(args.schedule)
        plan = make_plan(schedule, args)
        corpus = load_corpus(args.text, plan.config.model.block_size)
        plan = fit_eval_batches(plan, corpus, requested=args.eval_batches)
        out = out or Path("runs") / schedule.name
        created = prepare_out_dir(out)
        configure_threads(args.threads)

        if not args.quiet:
            print_header(console, plan, corpus)
        runs = train_all(console, plan, corpus, quiet=args.quiet, compare=args.compare)
        write_outputs(out, plan, corpus, runs)
        print_summary(console, runs, out, [METRICS_FILE, PLOT_FILE])
        succeeded = True
        return 0
    except UsageError as error:
        print(f"sparkling train: error: {error}", file=sys.stderr)
        return 2
    except (ScheduleError, BindError) as error:
        # Located diagnostics, printed as `sparkling check` prints them.
        print(error, file=sys.stderr)
        return 1
    except SparklingError as error:
        print(f"sparkling train: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"sparkling train: error: cannot write output to {out}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sparkling train: interrupted; no output written", file=sys.stderr)
        return 130
    finally:
        if not succeeded:
            remove_empty_dirs(created)


def train_all(
    console: Console, plan: Plan, corpus: Corpus, *, quiet: bool, compare: str | None
) -> list[RunResult]:
    """Train the progressive run, then, with `--compare scratch`, the wide model from scratch.

    The scratch run uses the progressive run's final sizes, the same seed and so the same
    batches, and the same base learning-rate schedule.
    """
    with ProgressDisplay(console, plan, "progressive", quiet) as display:
        progressive = train(plan.schedule, corpus, plan.config, observer=display)
    if compare != "scratch":
        return [progressive]

    wide = replace(plan.config.model, **progressive.model_final)
    scratch_config = replace(plan.config, model=wide)
    scratch_schedule = plan.schedule.model_copy(update={"events": ()})
    with ProgressDisplay(console, plan, "scratch", quiet) as display:
        scratch = train(
            scratch_schedule, corpus, scratch_config, observer=display, label="scratch"
        )
    return [progressive, scratch]


def write_outputs(out: Path, plan: Plan, corpus: Corpus, runs: list[RunResult]) -> None:
    """Write `loss.png`, then `metrics.json`, each through a temporary file."""
    document: dict[str, Any] = {
        "format": 1,
        "schedule": {"name": plan.schedule.name, "source": plan.schedule.source},
        "config": plan.describe(corpus),
        "runs": {run.label: run.to_json() for run in runs},
    }
    if len(runs) == 2:
        document["comparison"] = comparison(runs[0], runs[1])
    plot_runs(runs, out / PLOT_FILE, title=f"sparkling train {plan.schedule.name}")
    write_json_atomic(out / METRICS_FILE, document)


def prepare_out_dir(out: Path) -> list[Path]:
    """Create `out` and its missing parents, and check that files can be written in it.

    Returns the directories this call created, deepest first, so that a failed run can remove
    them again. Raises `UsageError` if `out` is not a directory or not writable; the
    directories created before the failure are removed again first.
    """
    created: list[Path] = []
    try:
        make_dirs(out, created)
        check_writable(out)
    except BaseException:
        remove_empty_dirs(created)
        raise
    return created


def make_dirs(out: Path, created: list[Path]) -> None:
    """Create `out` and its missing parents, top down, inserting each one created at the
    front of `created`. A directory that another process creates meanwhile is not listed."""
    missing = []
    for directory in [out, *out.parents]:
        if directory.exists():
            break
        missing.append(directory)
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError as error:
            if directory.is_dir():
                continue
            raise UsageError(
                f"--out {out} is not a directory: {directory} exists and is not a directory"
            ) from error
        except NotADirectoryError as error:
            raise UsageError(f"--out {out} is not a directory: {error.strerror}") from error
        except OSError as error:
            raise UsageError(
                f"cannot create --out directory {out}: {error.strerror}"
            ) from error
        created.insert(0, directory)
    if not out.is_dir():
        raise UsageError(f"--out {out} is not a directory; pass a directory path")


def check_writable(out: Path) -> None:
    probe = out / ".sparkling-write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to --out directory {out}: {error.strerror}") from error


def remove_empty_dirs(directories: list[Path]) -> None:
    """Remove `directories` in order (deepest first); stop at the first that is not empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            # Not empty, because something else was put there: keep it and its parents,
            # which then are not empty either.
            return


def configure_threads(threads: int | None) -> None:
    """Use `threads` CPU threads, or as many as the CPUs this process may run on."""
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if threads is not None:
        torch.set_num_threads(threads)


def positive_int(text: str) -> int:
    value = int_value(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int_value(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def int_value(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def output_dir(text: str) -> Path:
    # Path("") is the current directory, which a user who typed an empty value did not mean.
    if not text:
        raise argparse.ArgumentTypeError(
            "expected a directory path, got an empty string; pass --out . to write to the "
            "current directory"
        )
    return Path(text)


def positive_learning_rate(text: str) -> float:
    value = learning_rate(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive learning rate, got {text}")
    return value


def non_negative_learning_rate(text: str) -> float:
    value = learning_rate(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative learning rate, got {text}")
    return value + 0.0  # turns -0.0 into 0.0


def learning_rate(text: str) -> float:
    """Parse a finite learning rate that fits in float32, in which torch's AdamW applies it."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    if abs(value) > FLOAT32_MAX:
        raise argparse.ArgumentTypeError(
            f"{text} overflows float32, whose maximum is {FLOAT32_MAX:.4g}; "
            "pass a learning rate such as 3e-3"
        )
    return value

