"""Console output of `sparkling train`: a header, progress, growth lines and a summary.

On a terminal the progress is a rich progress bar; elsewhere (a log file, CI) it is one plain
line every tenth of the run. `--quiet` leaves only the summary.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sparkling_ir.train.counts import count_noun
from sparkling_ir.train.data import Corpus
from sparkling_ir.train.metrics import LOSS_WINDOW, EventRecord, RunResult, StepRecord
from sparkling_ir.train.plan import Plan

PLAIN_LINES_PER_RUN = 10
THROUGHPUT_WINDOW = 20  # updates over which tokens per second are measured


def print_header(console: Console, plan: Plan, corpus: Corpus) -> None:
    config = plan.config
    model = config.model
    console.print(
        f"training {plan.schedule.name}: {count_noun(model.n_layer, 'layer')}, "
        f"hidden {model.n_embd}, ffn {model.ffn_dim}, "
        f"{count_noun(model.n_head, 'head')} x {model.head_dim}; "
        f"{count_noun(config.steps, 'update')} of {count_noun(config.tokens_per_step, 'token')} "
        f"on {corpus.source} ({corpus.total_bytes / 2**20:.1f} MiB); "
        f"{growth_steps_text(plan.event_steps)}",
        highlight=False, soft_wrap=True,
    )


def growth_steps_text(event_steps: tuple[int, ...]) -> str:
    if not event_steps:
        return "no growth events"
    steps = ", ".join(str(step) for step in event_steps)
    return f"growth after update{'s' if len(event_steps) > 1 else ''} {steps}"


class ProgressDisplay:
    """The loop's observer on the console; use it as a context manager around `train`."""

    def __init__(self, console: Console, plan: Plan, label: str, quiet: bool) -> None:
        self.console = console
        self.label = label
        self.quiet = quiet
        self.total = plan.config.steps
        self.tokens_per_step = plan.config.tokens_per_step
        self.live = console.is_terminal and not quiet
        self.losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self.times: deque[float] = deque(maxlen=THROUGHPUT_WINDOW)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TextColumn("lr {task.fields[lr]}"),
            TextColumn("new {task.fields[lr_new]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(
            label, total=self.total, loss="-", speed="", lr="-", lr_new="-"
        )

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live:
            self.progress.stop()

    def on_step(self, record: StepRecord) -> None:
        self.losses.append(record.loss)
        self.times.append(time.perf_counter())
        loss = f"{sum(self.losses) / len(self.losses):.4f}"
        speed = self.speed_text()
        lr = f"{record.lr:.2e}"
        lr_new = "-" if record.lr_new is None else f"{record.lr_new:.2e}"
        completed = record.step + 1
        if self.live:
            self.progress.update(
                self.task, completed=completed, loss=loss, speed=speed, lr=lr, lr_new=lr_new
            )
        elif not self.quiet and self.is_plain_line_due(completed):
            parts = [f"{self.label} update {completed}/{self.total}", f"loss {loss}", speed,
                     f"lr {lr}", f"lr new {lr_new}"]
            self.console.print(
                "  ".join(part for part in parts if part), highlight=False, soft_wrap=True
            )

    def on_growth(self, event: EventRecord) -> None:
        if self.quiet:
            return
        before = "-" if event.val_loss_before is None else f"{event.val_loss_before:.4f}"
        self.console.print(
            f"{self.label} growth: {event.summary}; "
            f"validation loss {before} -> {event.val_loss_after:.4f}",
            highlight=False, soft_wrap=True,
        )

    def tokens_per_second(self) -> float | None:
        """Return the throughput over the last updates, or None before two have finished."""
        if len(self.times) < 2 or self.times[-1] == self.times[0]:
            return None
        return self.tokens_per_step * (len(self.times) - 1) / (self.times[-1] - self.times[0])

    def speed_text(self) -> str:
        """Return the throughput as `12,345 tok/s`, or "" while it cannot be measured."""
        rate = self.tokens_per_second()
        return "" if rate is None else f"{rate:,.0f} tok/s"

    def is_plain_line_due(self, completed: int) -> bool:
        every = max(1, self.total // PLAIN_LINES_PER_RUN)
        return completed % every == 0 or completed == self.total


def print_summary(console: Console, runs: list[RunResult], out: Path, files: list[str]) -> None:
    """Print the events table, the per-run results table and the written files."""
    for run in runs:
        if run.events:
            console.print(events_table(run))
    console.print(results_table(runs))
    if len(runs) == 2:
        progressive, scratch = runs
        saved = 1.0 - progressive.flops / scratch.flops
        console.print(
            f"FLOPs saved by growing: {saved:.1%}; final validation loss "
            f"{progressive.final_val_loss:.4f} (progressive) vs "
            f"{scratch.final_val_loss:.4f} (scratch)",
            highlight=False, soft_wrap=True,
        )
    written = ", ".join(str(out / name) for name in files)
    console.print(f"wrote {written}", highlight=False)


def events_table(run: RunResult) -> Table:
    table = Table(title=f"growth events ({run.label})", title_justify="left")
    for column in ("step", "changes", "parameters", "train loss", "val loss"):
        table.add_column(column)
    for event in run.events:
        table.add_row(
            str(event.step),
            ", ".join(event.changes),
            f"{event.params_before:,} -> {event.params_after:,}",
            f"{loss_text(event.train_loss_before)} -> {loss_text(event.train_loss_after)}",
            f"{loss_text(event.val_loss_before)} -> {loss_text(event.val_loss_after)}",
        )
    table.caption = (
        f"train loss: mean of the {LOSS_WINDOW} updates before and after; "
        "val loss: same held-out batches right before and right after"
    )
    return table


def results_table(runs: list[RunResult]) -> Table:
    table = Table(title="results", title_justify="left")
    table.add_column("")
    for run in runs:
        table.add_column(run.label, justify="right")
    rows = {
        "parameters": [f"{run.params_start:,} -> {run.params_final:,}" for run in runs],
        "tokens": [f"{run.tokens:,}" for run in runs],
        f"final train loss ({LOSS_WINDOW} updates)": [
            loss_text(run.final_train_loss) for run in runs
        ],
        "final validation loss": [loss_text(run.final_val_loss) for run in runs],
        "training FLOPs": [f"{run.flops:.3e}" for run in runs],
        "wall time": [f"{run.wall_time_s:.1f} s" for run in runs],
    }
    for name, values in rows.items():
        table.add_row(name, *values)
    return table


def loss_text(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"
