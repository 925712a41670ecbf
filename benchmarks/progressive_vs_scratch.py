"""Time the main job against its peer: the wide model trained from scratch on the same tokens.

Runs `sparkling train SCHEDULE --compare scratch` once, so both runs share the machine state,
the batches and the seed, and prints a Markdown table for docs/benchmarks.md:

    .venv/bin/python benchmarks/progressive_vs_scratch.py [SCHEDULE] [-- extra train flags]

The wall time of each run comes from metrics.json and covers the training loop, Grower
included. This script measures the command's own wall time: start-up, data loading, both runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("schedule", nargs="?", default="schedules/tinygpt_2x.grow",
                        help="schedule to train (default: schedules/tinygpt_2x.grow)")
    parser.add_argument("train_flags", nargs=argparse.REMAINDER,
                        help="flags passed on to sparkling train, after --")
    args = parser.parse_args(argv)
    schedule = args.schedule
    extra = [flag for flag in args.train_flags if flag != "--"]
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "sparkling_ir", "train", schedule,
                   "--compare", "scratch", "--quiet", "--out", out, *extra]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        total = time.perf_counter() - started
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    print(f"date: {date.today()}; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, torch {torch.__version__}")
    print(f"command: sparkling train {schedule} --compare scratch {' '.join(extra)}".rstrip())
    print(f"whole command: {total:.1f} s\n")
    print("| run | parameters (start -> end) | tokens | training FLOPs | loop wall time | final val loss |")
    print("|---|---|---|---|---|---|")
    for label, run in metrics["runs"].items():
        print(f"| {label} | {run['params_start']:,} -> {run['params_final']:,} | {run['tokens']:,} "
              f"| {run['flops']:.3e} | {run['wall_time_s']:.1f} s | {run['final_val_loss']:.4f} |")
    print(f"\nscratch validation loss at the progressive run's FLOPs: "
          f"{scratch_loss_at_equal_flops(metrics['runs']):.4f}")
    return 0


def scratch_loss_at_equal_flops(runs: dict[str, dict[str, object]]) -> float:
    """Interpolate the scratch run's validation loss at the FLOPs the progressive run used.

    The scratch model never changes size, so its FLOPs grow linearly with the step.
    """
    progressive, scratch = runs["progressive"], runs["scratch"]
    steps = len(scratch["steps"])  # type: ignore[arg-type]
    step = float(progressive["flops"]) / float(scratch["flops"]) * steps  # type: ignore[arg-type]
    evals = scratch["evals"]
    points = [(float(e["step"]), float(e["val_loss"])) for e in evals]  # type: ignore[attr-defined, index]
    for (s0, l0), (s1, l1) in zip(points, points[1:]):
        if s0 <= step <= s1:
            return l0 + (l1 - l0) * (step - s0) / (s1 - s0)
    return points[-1][1]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
