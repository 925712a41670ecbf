"""`loss.png`: the loss curves of a run, its growth events, and the learning rates.

The top panel shows the training loss of every update (faint) with a moving average over
`LOSS_WINDOW` updates, the validation evaluations as markers, and a dashed vertical line at each
growth event. With a from-scratch comparison, both runs share the axes. The bottom panel shows
the learning rate of old entries and, after growth, of the new entries.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render to a file; no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sparkling_ir.train.metrics import LOSS_WINDOW, RunResult, write_atomic  # noqa: E402

_COLORS = {"progressive": "tab:blue", "scratch": "tab:orange"}


def plot_runs(runs: list[RunResult], path: Path, title: str) -> None:
    """Draw `runs` (a progressive run, maybe a scratch run) and write the PNG to `path`."""
    figure = draw_figure(runs, title)
    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(figure)
    write_atomic(path, buffer.getvalue())


def draw_figure(runs: list[RunResult], title: str) -> Figure:
    """Draw `runs` on a new figure; the caller closes it with `plt.close`."""
    figure, (loss_axes, lr_axes) = plt.subplots(
        2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        for run in runs:
            draw_losses(loss_axes, run)
        draw_events(loss_axes, runs[0])
        loss_axes.set_ylim(top=upper_loss_limit(runs))
        draw_lrs(lr_axes, runs[0])
        loss_axes.set_title(title)
        loss_axes.set_ylabel("cross-entropy (nats per byte)")
        loss_axes.legend(loc="lower left", fontsize="small")  # the event labels sit at the top
        loss_axes.grid(alpha=0.3)
        lr_axes.set_xlabel("update")
        # Updates are whole; the shared x axis of both panels takes this locator.
        lr_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        lr_axes.set_ylabel("learning rate")
        lr_axes.legend(loc="upper right", fontsize="small")
        lr_axes.grid(alpha=0.3)
        figure.tight_layout()
    except BaseException:
        plt.close(figure)
        raise
    return figure


def draw_losses(axes: Axes, run: RunResult) -> None:
    color = _COLORS.get(run.label, "tab:gray")
    steps = np.array([record.step for record in run.steps])
    losses = np.array([record.loss for record in run.steps])
    axes.plot(steps, losses, color=color, alpha=0.2, linewidth=0.8)
    axes.plot(steps, moving_average(losses, LOSS_WINDOW), color=color, label=f"{run.label} train")
    eval_steps = [record.step for record in run.evals]
    eval_losses = [record.val_loss for record in run.evals]
    axes.plot(eval_steps, eval_losses, "o", color=color, markersize=4, label=f"{run.label} val")


def draw_events(axes: Axes, run: RunResult) -> None:
    for event in run.events:
        label = "growth" if event is run.events[0] else None
        axes.axvline(event.step, color="black", linestyle="--", linewidth=1, label=label)
        axes.annotate(
            ", ".join(event.changes), xy=(event.step, 1.0), xycoords=("data", "axes fraction"),
            xytext=(4, -12), textcoords="offset points", fontsize="small",
        )


def draw_lrs(axes: Axes, run: RunResult) -> None:
    steps = [record.step for record in run.steps]
    axes.plot(steps, [record.lr for record in run.steps], color="tab:blue", label="old entries")
    new = [(record.step, record.lr_new) for record in run.steps if record.lr_new is not None]
    if new:
        new_steps, new_lrs = zip(*new)
        axes.plot(new_steps, new_lrs, color="tab:red", label="new entries")


def upper_loss_limit(runs: list[RunResult]) -> float:
    """Return a y-axis top that cuts the first tenth of the run, where the loss falls fastest.

    With the whole initial drop in view (5.5 nats for random bytes), the differences that
    matter after growth would take a few pixels.
    """
    tops = []
    for run in runs:
        losses = np.array([record.loss for record in run.steps])
        later = moving_average(losses, LOSS_WINDOW)[len(losses) // 10 :]
        finite = later[np.isfinite(later)]
        if finite.size:
            tops.append(float(finite.max()))
    return 1.1 * max(tops) if tops else 1.0


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Return the mean of the last `window` values at each position (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    ends = np.arange(1, len(values) + 1)
    averages: np.ndarray = (sums[ends] - sums[ends - counts]) / counts
    return averages
