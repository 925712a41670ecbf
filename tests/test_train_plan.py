"""From a schedule and the `sparkling train` flags to the plan of one run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from sparkling_ir.cli import build_parser
from sparkling_ir.errors import ScheduleError
from sparkling_ir.schedule.ir import TrainSteps
from sparkling_ir.train.plan import Plan, UsageError, make_plan, read_schedule

SCHEDULE = """\
schedule plan_test {
    train 200 steps
    lr cosine peak 1e-2 min 1e-3 warmup 10 steps
    at 50% {
        widen hidden x2
        lr new rewarmup 20 steps to 1.3x
    }
}
"""


def write_schedule(tmp_path: Path, text: str = SCHEDULE) -> Path:
    path = tmp_path / "plan_test.grow"
    path.write_text(text)
    return path


def plan_for(path: Path, *flags: str) -> Plan:
    args = parse_flags(path, *flags)
    return make_plan(read_schedule(args.schedule), args)


def parse_flags(path: Path, *flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", str(path), *flags])


def test_schedule_sets_length_and_lr(tmp_path: Path) -> None:
    plan = plan_for(write_schedule(tmp_path))

    assert plan.config.steps == 200
    assert plan.event_steps == (100,)
    assert (plan.config.lr.peak, plan.config.lr.min, plan.config.lr.warmup_steps) == (
        1e-2, 1e-3, 10,
    )
    assert plan.config.lr.total_steps == 200


def test_steps_flag_moves_percentage_events(tmp_path: Path) -> None:
    plan = plan_for(write_schedule(tmp_path), "--steps", "80")

    assert plan.config.steps == 80
    assert plan.event_steps == (40,)
    assert plan.schedule.train == TrainSteps(steps=80)  # what the Grower will see


def test_steps_flag_keeps_step_events(tmp_path: Path) -> None:
    path = write_schedule(tmp_path, SCHEDULE.replace("at 50%", "at step 150"))

    assert plan_for(path).event_steps == (150,)
    with pytest.raises(ScheduleError, match="training has ended at step 120") as caught:
        plan_for(path, "--steps", "120")

    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.file, diagnostic.line) == (str(path), 4)


def test_lr_flags_replace_their_part(tmp_path: Path) -> None:
    plan = plan_for(write_schedule(tmp_path), "--lr", "5e-3", "--warmup", "4")

    assert (plan.config.lr.peak, plan.config.lr.min, plan.config.lr.warmup_steps) == (
        5e-3, 1e-3, 4,
    )
    assert plan.schedule.base_lr is not None
    assert plan.schedule.base_lr.peak == 5e-3
    assert plan.schedule.base_lr.peak_span is None  # no longer from the file


def test_defaults_without_lr_line(tmp_path: Path) -> None:
    text = SCHEDULE.replace("    lr cosine peak 1e-2 min 1e-3 warmup 10 steps\n", "")

    plan = plan_for(write_schedule(tmp_path, text))

    assert (plan.config.lr.peak, plan.config.lr.warmup_steps) == (3e-3, 10)  # 5% of 200
    assert plan.config.lr.min == pytest.approx(3e-4)
    assert plan.schedule.base_lr is not None  # written in, so the Grower decays to this min
    assert plan.schedule.base_lr.min == pytest.approx(3e-4)


def test_token_length_uses_batch_tokens(tmp_path: Path) -> None:
    text = SCHEDULE.replace("train 200 steps", "train 409600 tokens")

    plan = plan_for(write_schedule(tmp_path, text), "--batch-size", "16", "--block-size", "128")

    assert plan.config.tokens_per_step == 2048
    assert plan.config.steps == 200


def test_model_sizes_from_flags(tmp_path: Path) -> None:
    plan = plan_for(write_schedule(tmp_path), "--n-embd", "32", "--n-layer", "2")

    model = plan.config.model
    assert (model.n_embd, model.ffn_dim, model.n_layer, model.vocab_size) == (32, 128, 2, 256)
    assert plan.config.eval_interval == 10  # 1/20 of 200 updates


def test_warmup_flag_too_long_raises(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="warmup must be shorter than the run of 200 steps"):
        plan_for(write_schedule(tmp_path), "--warmup", "200")


def test_min_lr_above_peak_raises(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="minimum learning rate must be in"):
        plan_for(write_schedule(tmp_path), "--min-lr", "0.5")


def test_invalid_device_raises(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="invalid --device 'gpu0'"):
        plan_for(write_schedule(tmp_path), "--device", "gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_raises(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="CUDA is not available.*use --device cpu"):
        plan_for(write_schedule(tmp_path), "--device", "cuda")


def test_missing_schedule_raises(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="schedule file .*nothing.grow not found"):
        read_schedule(tmp_path / "nothing.grow")
