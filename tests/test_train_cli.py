"""`sparkling train` from the command line: outputs, printing, and errors without tracebacks.

These runs use schedules without growth events or a fake grower; growth through the real
Grower is in tests/test_train_end_to_end.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import torch
from torch import nn

from sparkling_ir.cli import main
from sparkling_ir.errors import GrowthError
from sparkling_ir.runtime import GrowthReport
from sparkling_ir.schedule.ir import Schedule
from sparkling_ir.train import loop

TINY_FLAGS = [
    "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--head-dim", "8",
    "--block-size", "16", "--batch-size", "4", "--eval-batches", "2",
]
NO_EVENTS = """\
# cli_test: a schedule without growth
schedule cli_test {
    train 12 steps
    lr cosine peak 1e-2 min 1e-3 warmup 2 steps
}
"""
ONE_EVENT = NO_EVENTS.replace("}\n", "    at 50% {\n        widen hidden x2\n"
                              "        lr new rewarmup 2 steps to 1.3x\n    }\n}\n", 1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ReportingGrower:
    """Reports one growth event at its scheduled step without changing the model."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        schedule: Schedule,
        *,
        example_inputs: Sequence[Any],
        tokens_per_step: int | None = None,
        min_lr: float | None = None,
    ) -> None:
        self.event_steps = (schedule.train.steps // 2,) if schedule.train.kind == "steps" else ()
        self.completed = 0

    def step(self) -> list[GrowthReport]:
        self.completed += 1
        if self.completed not in self.event_steps:
            return []
        return [GrowthReport(
            event_index=0, step=self.completed, changes=("hidden 16 -> 32",),
            params_before=1, params_after=2,
        )]

    def new_entry_lr(self, group: int = 0) -> float | None:
        return None


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "text.txt"
    text.write_bytes(b"def add(a, b):\n    return a + b\n\n" * 200)
    schedule = tmp_path / "cli_test.grow"
    schedule.write_text(NO_EVENTS)
    growing = tmp_path / "growing.grow"
    growing.write_text(ONE_EVENT)
    return {"text": text, "schedule": schedule, "growing": growing, "out": tmp_path / "out"}


def run_cli(files: dict[str, Path], *flags: str, schedule: str = "schedule") -> int:
    return main([
        "train", str(files[schedule]), "--text", str(files["text"]), "--out", str(files["out"]),
        *TINY_FLAGS, *flags,
    ])


def read_metrics(files: dict[str, Path]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((files["out"] / "metrics.json").read_text())
    return document


def test_run_writes_metrics_and_plot(files: dict[str, Path]) -> None:
    assert run_cli(files) == 0

    metrics = read_metrics(files)
    run = metrics["runs"]["progressive"]
    assert metrics["schedule"]["name"] == "cli_test"
    assert metrics["config"]["corpus"]["source"] == str(files["text"])
    assert [record["step"] for record in run["steps"]] == list(range(12))
    assert run["events"] == []
    assert run["final_val_loss"] == run["evals"][-1]["val_loss"]
    assert run["flops"] > 0
    assert "comparison" not in metrics
    assert (files["out"] / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in files["out"].iterdir()) == ["loss.png", "metrics.json"]


def test_outputs_get_umask_mode(files: dict[str, Path]) -> None:
    old_umask = os.umask(0o027)
    try:
        assert run_cli(files) == 0
    finally:
        os.umask(old_umask)

    for name in ("metrics.json", "loss.png"):
        assert (files["out"] / name).stat().st_mode & 0o777 == 0o640, name


def test_output_lists_progress_and_files(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(files)

    out = capsys.readouterr().out
    assert "training cli_test: 1 layer, hidden 16, ffn 64, 2 heads x 8; 12 updates of 64 tokens" in out
    assert "no growth events" in out
    assert "progressive update 12/12" in out
    progress = [line for line in out.splitlines() if line.startswith("progressive update")]
    assert progress[0].startswith("progressive update 1/12  loss ")
    assert "tok/s" not in progress[0]  # no rate from a single update
    assert re.search(r"  [1-9][\d,]* tok/s  ", progress[1]), progress[1]
    assert "final validation loss" in out
    assert f"wrote {files['out'] / 'metrics.json'}" in out


def test_quiet_prints_only_summary(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run_cli(files, "--quiet")

    out = capsys.readouterr().out
    assert "training cli_test" not in out
    assert "progressive update" not in out
    assert "final validation loss" in out


def test_default_out_named_after_schedule(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    code = main(["train", str(files["schedule"]), "--text", str(files["text"]), *TINY_FLAGS])

    assert code == 0
    assert (tmp_path / "runs" / "cli_test" / "metrics.json").is_file()


def test_same_seed_same_metrics(files: dict[str, Path]) -> None:
    run_cli(files, "--seed", "3")
    first = read_metrics(files)["runs"]["progressive"]
    run_cli(files, "--seed", "3")
    second = read_metrics(files)["runs"]["progressive"]

    assert first["steps"] == second["steps"]
    assert first["evals"] == second["evals"]


def test_scratch_comparison_sees_same_batches(files: dict[str, Path]) -> None:
    # Without growth the scratch model equals the progressive one, so with the same seed and
    # the same batches every loss must match exactly.
    assert run_cli(files, "--compare", "scratch") == 0

    metrics = read_metrics(files)
    progressive, scratch = metrics["runs"]["progressive"], metrics["runs"]["scratch"]
    assert scratch["model_start"] == progressive["model_final"]
    assert scratch["steps"] == progressive["steps"]
    assert metrics["comparison"]["flops_saved_fraction"] == 0.0


def test_growth_line_printed_per_event(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "Grower", ReportingGrower)

    assert run_cli(files, "--steps", "20", schedule="growing") == 0

    out = capsys.readouterr().out
    assert "growth after update 10\n" in out
    assert "progressive growth: step 10: grew hidden 16 -> 32" in out
    assert "validation loss" in out
    assert read_metrics(files)["runs"]["progressive"]["events"][0]["step"] == 10


def test_growth_error_reported_without_output(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_grower(*args: Any, **kwargs: Any) -> Any:
        raise GrowthError("axis hidden cannot grow: test failure")

    monkeypatch.setattr(loop, "Grower", failing_grower)

    assert run_cli(files, schedule="growing") == 1

    assert "error: axis hidden cannot grow: test failure" in capsys.readouterr().err
    assert not files["out"].exists()  # created for this run, left empty, removed again


def test_failed_run_removes_created_parents(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_grower(*args: Any, **kwargs: Any) -> Any:
        raise GrowthError("axis hidden cannot grow: test failure")

    monkeypatch.setattr(loop, "Grower", failing_grower)
    monkeypatch.chdir(tmp_path)
    existing = tmp_path / "existing"
    (existing / "a").mkdir(parents=True)
    (existing / "a" / "other.txt").write_text("not from this run")
    (tmp_path / "empty").mkdir()

    default_out = main(["train", str(files["growing"]), "--text", str(files["text"]), *TINY_FLAGS])
    nested_out = main([
        "train", str(files["growing"]), "--text", str(files["text"]),
        "--out", "existing/a/b/c", *TINY_FLAGS,
    ])
    in_empty_out = main([
        "train", str(files["growing"]), "--text", str(files["text"]),
        "--out", "empty/run", *TINY_FLAGS,
    ])

    assert (default_out, nested_out, in_empty_out) == (1, 1, 1)
    assert not (tmp_path / "runs").exists()
    assert not (existing / "a" / "b").exists()
    assert (existing / "a" / "other.txt").is_file()
    assert list((tmp_path / "empty").iterdir()) == []  # kept: this run did not create it


def test_bind_error_printed_like_check(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = tmp_path / "bind.grow"
    schedule.write_text(ONE_EVENT.replace("widen hidden x2", "widen experts x2"))
    files["schedule"] = schedule

    assert run_cli(files) == 1

    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"{schedule}:6:9: error: cannot widen experts"), lines
    assert lines[1:] == ["            widen experts x2", "            ^"]
    assert not files["out"].exists()


@pytest.mark.parametrize(
    "change, code, message",
    [
        (
            {"schedule": "missing.grow"}, 1,
            r"missing.grow:1:1: error: cannot read the schedule file: No such file",
        ),
        ({"text": "missing.txt"}, 1, "training text .*missing.txt not found"),
        ({"text_bytes": b"short"}, 1, "is 5 bytes, but --block-size 16 needs at least 170"),
        (
            {"schedule_text": "schedule bad {\n    train ten steps\n}\n"}, 1,
            r"bad.grow:2:\d+: error",
        ),
        ({"out_is_file": True}, 2, "--out .* is not a directory"),
    ],
    ids=["missing-schedule", "missing-text", "short-text", "schedule-syntax", "out-is-file"],
)
def test_user_errors_exit_without_traceback(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    code: int,
    message: str,
) -> None:
    if "schedule" in change:
        files["schedule"] = tmp_path / change["schedule"]
    if "text" in change:
        files["text"] = tmp_path / change["text"]
    if "text_bytes" in change:
        files["text"].write_bytes(change["text_bytes"])
    if "schedule_text" in change:
        files["schedule"] = tmp_path / "bad.grow"
        files["schedule"].write_text(change["schedule_text"])
    if "out_is_file" in change:
        files["out"].write_text("a file")

    assert run_cli(files) == code

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err
    if "out_is_file" not in change:
        assert not files["out"].exists()


@pytest.mark.parametrize(
    "flags",
    [
        ["--steps", "0"], ["--lr", "-1"], ["--n-embd", "wide"], ["--compare", "teacher"],
        ["--lr", "1e300"], ["--min-lr", "1e300"], ["--lr", "nan"], ["--min-lr", "inf"],
        ["--min-lr", "-1e-3"], ["--out", ""],
    ],
    ids=[
        "zero-steps", "negative-lr", "word-for-size", "unknown-compare", "lr-overflows-float32",
        "min-lr-overflows-float32", "nan-lr", "infinite-min-lr", "negative-min-lr", "empty-out",
    ],
)
def test_invalid_flag_values_exit_2(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        run_cli(files, *flags)

    assert caught.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--device", "meta"],
            "--device meta: the meta device stores shapes but no data, so no model can train "
            "on it; use --device cpu or cuda",
        ),
        (["--lr", "1e-3", "--min-lr", "1e-2"], "--min-lr 0.01 is above --lr 0.001"),
        (["--lr", "1e38"], "learning rate 1e+38 (peak 1e+38) is too large"),
        (["--eval-batches", "12"], "pass --eval-batches 11 or fewer"),
    ],
    ids=["meta-device", "min-lr-above-lr", "lr-overflows-adamw", "eval-batches-above-holdout"],
)
def test_invalid_run_values_exit_2_in_one_line(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert run_cli(files, *flags) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("sparkling train: error: ")
    assert message in err
    assert not files["out"].exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_exits_2(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(files, "--device", "cuda") == 2

    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_eval_batches_at_holdout_maximum_runs(files: dict[str, Path]) -> None:
    # 6,600 bytes of text hold out 660, which fill 41 windows of 16 bytes: 11 batches of 4.
    assert run_cli(files, "--eval-batches", "11", "--steps", "3") == 0

    assert read_metrics(files)["config"]["eval_batches"] == 11
