"""The base learning-rate schedule: linear warmup, then cosine to the minimum."""

from __future__ import annotations

import pytest
import torch

from sparkling_ir.train.lr import WarmupCosine, set_base_lr

SCHEDULE = WarmupCosine(peak=1e-3, min=1e-4, warmup_steps=10, total_steps=110)


def test_warmup_is_linear_from_first_step() -> None:
    assert SCHEDULE.at(0) == pytest.approx(1e-4)
    assert SCHEDULE.at(4) == pytest.approx(5e-4)
    assert SCHEDULE.at(9) == pytest.approx(1e-3)


def test_cosine_runs_from_peak_to_min() -> None:
    assert SCHEDULE.at(10) == pytest.approx(1e-3)
    assert SCHEDULE.at(59) == pytest.approx((1e-3 + 1e-4) / 2, rel=2e-2)  # near mid-decay
    assert SCHEDULE.at(109) == pytest.approx(1e-4)
    assert SCHEDULE.at(500) == pytest.approx(1e-4)  # held at the minimum past the end


def test_decay_is_monotonic() -> None:
    rates = [SCHEDULE.at(step) for step in range(10, 110)]

    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_no_warmup_starts_at_peak() -> None:
    schedule = WarmupCosine(peak=2e-3, min=0.0, warmup_steps=0, total_steps=5)

    assert schedule.at(0) == pytest.approx(2e-3)
    assert schedule.at(4) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "peak, minimum, warmup, message",
    [
        (0.0, 0.0, 0, "peak learning rate must be positive"),
        (1e-3, 2e-3, 0, "minimum learning rate must be in"),
        (1e-3, -1e-4, 0, "minimum learning rate must be in"),
        (1e-3, 0.0, 100, "warmup must be shorter than the run of 100 steps"),
    ],
    ids=["zero-peak", "min-above-peak", "negative-min", "warmup-too-long"],
)
def test_invalid_schedule_raises(peak: float, minimum: float, warmup: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WarmupCosine(peak=peak, min=minimum, warmup_steps=warmup, total_steps=100)


def test_set_base_lr_leaves_later_groups() -> None:
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    optimizer = torch.optim.SGD([{"params": [p]} for p in params], lr=0.5)

    set_base_lr(optimizer, 0.1, group_count=2)

    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.1, 0.5]
