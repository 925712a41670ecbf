"""The base learning-rate schedule that every entry follows until growth changes it.

Linear warmup, then a half-cosine down to the minimum at the last step, as in the
`lr cosine peak P min M warmup W steps` line of a schedule. The Grower keeps old entries on
this schedule after a growth event and gives new entries their own re-warmup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """`peak * (step + 1) / warmup_steps` during warmup, then cosine from `peak` to `min`.

    The warmup covers steps `0 .. warmup_steps - 1` and its first step already has a non-zero
    learning rate, so no step is wasted. The cosine reaches `min` at step `total_steps - 1`.
    """

    peak: float
    min: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        if not self.peak > 0:
            raise ValueError(f"peak learning rate must be positive, got {self.peak}")
        if not 0 <= self.min <= self.peak:
            raise ValueError(f"minimum learning rate must be in [0, {self.peak}], got {self.min}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(
                f"warmup must be shorter than the run of {self.total_steps} steps, "
                f"got {self.warmup_steps}"
            )

    def at(self, step: int) -> float:
        """Return the learning rate of the update made at 0-based `step`."""
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.min + 0.5 * (self.peak - self.min) * (1.0 + math.cos(math.pi * progress))


def set_base_lr(optimizer: torch.optim.Optimizer, lr: float, group_count: int) -> None:
    """Set `lr` on the first `group_count` param groups, the ones the training loop created.

    Groups added later (by a grower that keeps new entries apart) keep the learning rate
    their owner gives them.
    """
    for group in optimizer.param_groups[:group_count]:
        group["lr"] = lr
