"""Console output of `sparkling train`: the header and the plain progress lines."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sparkling_ir.train import console as console_module
from sparkling_ir.train.console import ProgressDisplay, growth_steps_text
from sparkling_ir.train.counts import count_noun
from sparkling_ir.train.metrics import StepRecord


class FakePlan:
    """The part of a `Plan` that `ProgressDisplay` reads."""

    class config:
        steps = 3
        tokens_per_step = 1000


def test_count_noun_plural() -> None:
    assert count_noun(1, "layer") == "1 layer"
    assert count_noun(4, "layer") == "4 layers"
    assert count_noun(2048, "token") == "2,048 tokens"
    assert count_noun(2, "batch", "batches") == "2 batches"


def test_growth_steps_text_plural() -> None:
    assert growth_steps_text(()) == "no growth events"
    assert growth_steps_text((300,)) == "growth after update 300"
    assert growth_steps_text((300, 450)) == "growth after updates 300, 450"


def test_first_progress_line_has_no_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 10.5, 11.0])
    monkeypatch.setattr(console_module.time, "perf_counter", lambda: next(clock))
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=200)

    with ProgressDisplay(console, FakePlan(), "progressive", quiet=False) as display:  # type: ignore[arg-type]
        for step in range(3):
            display.on_step(StepRecord(step=step, loss=2.0, lr=1e-3, lr_new=None))

    lines = output.getvalue().splitlines()
    assert lines[0] == "progressive update 1/3  loss 2.0000  lr 1.00e-03  lr new -"
    assert lines[1] == "progressive update 2/3  loss 2.0000  2,000 tok/s  lr 1.00e-03  lr new -"
