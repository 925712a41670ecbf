"""From a schedule and the `sparkling train` flags to the plan of one run."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from sparkling_ir.cli import build_parser
from sparkling_ir.errors import ScheduleError
from sparkling_ir.schedule.ir import TrainSteps
from sparkling_ir.train.data import split_corpus
from sparkling_ir.train.plan import (
    Plan,
    UsageError,
    check_device,
    check_flags,
    fit_eval_batches,
    make_plan,
    read_schedule,
)

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


def test_invalid_device_raises() -> None:
    with pytest.raises(UsageError, match="invalid --device 'gpu0'"):
        check_device("gpu0")


def test_meta_device_raises() -> None:
    with pytest.raises(UsageError, match="--device meta: the meta device stores shapes but no"):
        check_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_raises() -> None:
    with pytest.raises(UsageError, match="CUDA is not available.*use --device cpu"):
        check_device("cuda")


def test_device_without_kernels_raises() -> None:
    # The torch builds on PyPI are built without Vulkan, so they cannot allocate there.
    with pytest.raises(UsageError, match="--device vulkan: torch .* cannot allocate") as caught:
        check_device("vulkan")

    assert "\n" not in str(caught.value)


def test_min_lr_above_lr_flag_raises(tmp_path: Path) -> None:
    args = parse_flags(write_schedule(tmp_path), "--lr", "1e-3", "--min-lr", "2e-3")

    with pytest.raises(UsageError, match="--min-lr 0.002 is above --lr 0.001"):
        check_flags(args)


def test_lr_overflowing_adamw_raises(tmp_path: Path) -> None:
    # AdamW divides by 1 - beta1 = 0.1 at the first update; float32 ends at 3.4e38.
    path = write_schedule(tmp_path)

    assert plan_for(path, "--lr", "2.5e37").config.lr.peak == 2.5e37
    with pytest.raises(UsageError, match=r"peak 2\.7e\+37 x re-warmup factor 1\.3"):
        plan_for(path, "--lr", "2.7e37")


def test_missing_schedule_raises_located_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.grow"

    with pytest.raises(ScheduleError) as caught:
        read_schedule(path)

    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.column) == (str(path), 1, 1)
    assert diagnostic.message.startswith("cannot read the schedule file")


def test_eval_batches_fit_holdout(tmp_path: Path) -> None:
    path = write_schedule(tmp_path)
    # 900 bytes hold out 90, which fill 5 windows of 16 bytes: 2 batches of 4.
    corpus = split_corpus(bytes(900), "zeros")
    flags = ("--block-size", "16", "--batch-size", "4")

    default = fit_eval_batches(plan_for(path, *flags), corpus, requested=None)
    at_maximum = fit_eval_batches(plan_for(path, *flags), corpus, requested=2)

    assert default.config.eval_batches == 2
    assert at_maximum.config.eval_batches == 2
    with pytest.raises(UsageError, match="its 90 bytes fill at most 2 batches of 4 non-overlap"):
        fit_eval_batches(plan_for(path, *flags), corpus, requested=3)
