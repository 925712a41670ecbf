"""Modules that growth inserts into a model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScaledLinear(nn.Linear):
    """A Linear whose output is multiplied by `logit_scale`, a persistent buffer.

    Growth puts it in place of the output head of a tied embedding: the shared matrix is
    copied unscaled for the embedding, so the head's fan-in alpha moves to its output. Being a
    buffer, the scale is saved in the state dict and never silently dropped.
    """

    logit_scale: torch.Tensor

    @classmethod
    def from_linear(cls, linear: nn.Linear, scale: float) -> ScaledLinear:
        """Wrap the Parameters of `linear` (shared, not copied, so ties survive)."""
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module.in_features = linear.in_features
        module.out_features = linear.out_features
        module.weight = linear.weight
        module.bias = linear.bias
        module.training = linear.training
        module.register_buffer(
            "logit_scale",
            torch.tensor(scale, dtype=linear.weight.dtype, device=linear.weight.device),
        )
        return module

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight, self.bias) * self.logit_scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, logit_scale={float(self.logit_scale):.6g}"
