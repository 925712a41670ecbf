"""`sparkling train` through the real Grower: one growth event on a tiny GPT, with a scratch run.

One module-scoped run (24 updates, hidden and MLP doubled after 12) serves every check below.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sparkling_ir.cli import main

SCHEDULE = """\
# e2e_2x: the demo schedule, shrunk to a few updates
schedule e2e_2x {
    train 24 steps
    lr cosine peak 1e-2 min 1e-3 warmup 4 steps
    at 50% {
        widen hidden x2
        widen ffn x2
        init sparkling
        optimizer reset new
        lr new rewarmup 4 steps to 1.3x
    }
}
"""
FLAGS = [
    "--n-layer", "2", "--n-embd", "16", "--n-head", "2", "--head-dim", "8",
    "--block-size", "16", "--batch-size", "4", "--eval-batches", "2", "--quiet",
]


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    schedule = root / "e2e_2x.grow"
    schedule.write_text(SCHEDULE)
    text = root / "text.txt"
    text.write_bytes(b"class Point:\n    def __init__(self, x, y):\n        self.x = x\n" * 100)
    code = main([
        "train", str(schedule), "--text", str(text), "--out", str(root / "run"),
        "--compare", "scratch", *FLAGS,
    ])
    assert code == 0
    return root / "run"


@pytest.fixture(scope="module")
def metrics(out: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return document


def test_outputs_written(out: Path) -> None:
    assert (out / "metrics.json").is_file()
    assert (out / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_event_recorded_with_growth(metrics: dict[str, Any]) -> None:
    run = metrics["runs"]["progressive"]
    (event,) = run["events"]

    assert event["step"] == 12
    assert event["params_after"] > event["params_before"]
    assert event["params_before"] == run["params_start"]
    assert event["params_after"] == run["params_final"]
    assert (run["model_final"]["n_embd"], run["model_final"]["ffn_dim"]) == (32, 128)


def test_growth_preserves_validation_loss(metrics: dict[str, Any]) -> None:
    # At exactly 2x with copied units, the SPARKLING fan-in scale 1/2 preserves the function,
    # so the loss on the same held-out batches must not move at the growth step.
    (event,) = metrics["runs"]["progressive"]["events"]

    assert event["val_loss_after"] == pytest.approx(event["val_loss_before"], rel=1e-4)
    assert event["train_loss_before"] is not None
    assert event["train_loss_after"] is not None


def test_new_entry_lr_from_event(metrics: dict[str, Any]) -> None:
    steps = metrics["runs"]["progressive"]["steps"]

    assert all(record["lr_new"] is None for record in steps[:12])
    assert all(record["lr_new"] is not None for record in steps[12:])
    # The re-warmup starts at the base rate of the growth step and rises above it.
    assert steps[12]["lr_new"] == pytest.approx(steps[12]["lr"])
    assert steps[15]["lr_new"] > steps[15]["lr"]


def test_flops_between_narrow_and_wide(metrics: dict[str, Any]) -> None:
    progressive = metrics["runs"]["progressive"]
    scratch = metrics["runs"]["scratch"]

    assert scratch["model_start"] == progressive["model_final"]
    assert scratch["events"] == []
    assert 0 < progressive["flops"] < scratch["flops"]
    saved = metrics["comparison"]["flops_saved_fraction"]
    assert saved == pytest.approx(1 - progressive["flops"] / scratch["flops"])
    assert 0.2 < saved < 0.5  # half the updates at roughly a quarter to a third of the cost
