"""Run records: loss windows around events, JSON without NaN, atomic writes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from sparkling_ir.train.metrics import (
    LOSS_WINDOW,
    EventRecord,
    StepRecord,
    fill_event_train_losses,
    finite_or_none,
    mean_loss,
    write_atomic,
    write_json_atomic,
)


def steps_with_losses(losses: list[float]) -> list[StepRecord]:
    return [StepRecord(step=i, loss=loss, lr=1e-3, lr_new=None) for i, loss in enumerate(losses)]


def test_mean_loss_over_half_open_range() -> None:
    steps = steps_with_losses([1.0, 2.0, 3.0, 4.0])

    assert mean_loss(steps, 1, 3) == pytest.approx(2.5)
    assert mean_loss(steps, -5, 1) == pytest.approx(1.0)
    assert mean_loss(steps, 4, 9) is None


def test_event_losses_use_windows_around_step() -> None:
    # Updates 0..29 have loss 5, updates 30.. have loss 7: an event after 30 updates gets
    # exactly the narrow model's losses before and the grown model's after.
    steps = steps_with_losses([5.0] * 30 + [7.0] * 30)
    event = EventRecord(
        index=0, step=30, changes=("hidden 8 -> 16",), summary="", params_before=1,
        params_after=2, val_loss_before=5.0, val_loss_after=5.0,
    )

    fill_event_train_losses([event], steps)

    assert event.train_loss_before == pytest.approx(5.0)
    assert event.train_loss_after == pytest.approx(7.0)
    assert LOSS_WINDOW <= 30


def test_event_at_end_has_short_after_window() -> None:
    steps = steps_with_losses([1.0] * 20 + [3.0] * 2)
    event = EventRecord(
        index=0, step=20, changes=(), summary="", params_before=1, params_after=2,
        val_loss_before=None, val_loss_after=1.0,
    )

    fill_event_train_losses([event], steps)

    assert event.train_loss_after == pytest.approx(3.0)


def test_non_finite_values_become_null() -> None:
    document = {"a": [1.0, math.nan], "b": {"c": math.inf}, "d": (2, "x")}

    assert finite_or_none(document) == {"a": [1.0, None], "b": {"c": None}, "d": [2, "x"]}


def test_json_write_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"

    write_json_atomic(path, {"loss": 1.5})

    assert json.loads(path.read_text()) == {"loss": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failed_json_write_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text("old")

    with pytest.raises(ValueError):
        write_json_atomic(path, {"loss": math.nan})  # NaN is rejected before writing

    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_mode_follows_umask(tmp_path: Path, umask: int, mode: int) -> None:
    path = tmp_path / "loss.png"
    old_umask = os.umask(umask)
    try:
        write_atomic(path, b"data")
    finally:
        os.umask(old_umask)

    assert path.stat().st_mode & 0o777 == mode
    assert path.read_bytes() == b"data"
