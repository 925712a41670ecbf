"""`loss.png`: the figure of a run."""

from __future__ import annotations

import matplotlib.pyplot as plt

from sparkling_ir.train.metrics import EvalRecord, RunResult, StepRecord
from sparkling_ir.train.plot import draw_figure


def short_run(steps: int) -> RunResult:
    return RunResult(
        label="progressive", model_start={}, model_final={}, params_start=1, params_final=1,
        tokens=steps, flops=steps, wall_time_s=1.0, final_train_loss=2.0, final_val_loss=2.0,
        steps=[StepRecord(step=i, loss=3.0 - 0.1 * i, lr=1e-3, lr_new=None) for i in range(steps)],
        evals=[EvalRecord(step=steps, val_loss=2.0)],
    )


def test_short_run_has_integer_update_ticks() -> None:
    figure = draw_figure([short_run(3)], title="short")
    try:
        figure.canvas.draw()
        for axes in figure.axes:
            ticks = axes.get_xticks()
            assert len(ticks) >= 2
            assert all(float(tick).is_integer() for tick in ticks), ticks
    finally:
        plt.close(figure)
