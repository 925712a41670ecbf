"""Records of a training run, and their form in `metrics.json`.

Step numbers follow one convention everywhere: a `StepRecord.step` is the 0-based index of an
optimizer update, and an event's `step` (like `Grower.event_steps`) is the number of updates
completed when it was applied. An event at step `s` therefore sits between the updates with
index `s - 1` (the last of the narrow model) and `s` (the first of the grown model).

Loss just before and after an event at step `s`, with `k = LOSS_WINDOW`:

* `train_loss_before`: mean training loss of updates `s - k .. s - 1`, each measured on its
  batch before the update, so on the narrow model;
* `train_loss_after`: mean training loss of updates `s .. s + k - 1`, the first `k` batches of
  the grown model (fewer at the end of the run; None if there are none);
* `val_loss_before` / `val_loss_after`: validation loss on the same fixed held-out batches,
  evaluated right before and right after the growth, with no update in between, so their
  difference is the effect of the widening alone.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LOSS_WINDOW = 10  # updates averaged for the train loss around events and at the end
TEMPORARY_NAME_ATTEMPTS = 100


@dataclass(frozen=True)
class StepRecord:
    """One optimizer update: its batch's loss before the update and the learning rates used."""

    step: int
    loss: float
    lr: float  # learning rate of old entries: the base schedule
    lr_new: float | None  # learning rate of the newest entries; None before any growth


@dataclass(frozen=True)
class EvalRecord:
    """Validation loss after `step` completed updates."""

    step: int
    val_loss: float


@dataclass
class EventRecord:
    """One applied growth event, with the losses around it (defined in the module docstring)."""

    index: int
    step: int
    changes: tuple[str, ...]
    summary: str
    params_before: int
    params_after: int
    val_loss_before: float | None
    val_loss_after: float
    train_loss_before: float | None = None
    train_loss_after: float | None = None


@dataclass
class RunResult:
    """Everything one training run measured; `label` is "progressive" or "scratch"."""

    label: str
    model_start: dict[str, Any]
    model_final: dict[str, Any]
    params_start: int
    params_final: int
    tokens: int
    flops: int
    wall_time_s: float
    final_train_loss: float
    final_val_loss: float
    steps: list[StepRecord] = field(default_factory=list)
    evals: list[EvalRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = finite_or_none(asdict(self))
        return document


def mean_loss(steps: list[StepRecord], start: int, stop: int) -> float | None:
    """Return the mean loss of the updates with index in `[start, stop)`, or None if none."""
    losses = [record.loss for record in steps if start <= record.step < stop]
    return sum(losses) / len(losses) if losses else None


def fill_event_train_losses(events: list[EventRecord], steps: list[StepRecord]) -> None:
    """Set `train_loss_before` and `train_loss_after` of every event from the step records."""
    for event in events:
        event.train_loss_before = mean_loss(steps, event.step - LOSS_WINDOW, event.step)
        event.train_loss_after = mean_loss(steps, event.step, event.step + LOSS_WINDOW)


def finite_or_none(value: Any) -> Any:
    """Replace NaN and infinities by None, recursively, so that the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def comparison(progressive: RunResult, scratch: RunResult) -> dict[str, Any]:
    """Compare a progressive run with the wide model trained from scratch on the same batches."""
    document: dict[str, Any] = finite_or_none({
        "flops_saved_fraction": 1.0 - progressive.flops / scratch.flops,
        "final_val_loss_gap": progressive.final_val_loss - scratch.final_val_loss,
        "final_train_loss_gap": progressive.final_train_loss - scratch.final_train_loss,
        "wall_time_ratio": progressive.wall_time_s / scratch.wall_time_s,
    })
    return document


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write `document` to `path` through a temporary file, so that no half file is left."""
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    write_atomic(path, text.encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`.

    The file gets the permissions that `open(path, "w")` gives a new file: 0o666 minus the
    process umask. `tempfile.mkstemp` would create it with 0o600 instead.
    """
    temporary, handle = create_temporary_beside(path)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def create_temporary_beside(path: Path) -> tuple[Path, int]:
    """Create a new, uniquely named file in `path`'s directory; return it and its descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(TEMPORARY_NAME_ATTEMPTS):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            # The kernel applies the umask to 0o666, as for any file that open() creates.
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(
        f"could not create a temporary file beside {path}: "
        f"{TEMPORARY_NAME_ATTEMPTS} random names were all taken"
    )
