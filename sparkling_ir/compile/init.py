"""Initialisation of widened parameters: `sparkling`, `random` and `zero`.

Each method builds the new tensor of one parameter from the old one and its `ParamChange`:

- `sparkling`: every new entry copies its source entry (new rows duplicate old rows, new
  columns duplicate old columns), then the whole tensor is multiplied by the fan-in alpha.
- `random`: new entries of matrices and fan-out biases are drawn from a normal distribution
  with the mean and standard deviation of the tensor's old entries. Fan-in alpha applies.
- `zero`: new entries of matrices and fan-out biases are zero. Fan-in alpha applies.

Element-wise parameters (norm gains and biases) always copy, so new gains start like their
source units under every method. Copied and random gains train alike, while zero gains would
switch the new units off.
"""

from __future__ import annotations

import torch

from sparkling_ir.compile.plan import ParamChange
from sparkling_ir.schedule.ir import InitMethod


def init_param(old: torch.Tensor, change: ParamChange, method: InitMethod, generator: torch.Generator | None = None) -> torch.Tensor:
    """Build the widened tensor for `old`, with its dtype and device; `old` is not modified."""
    with torch.no_grad():
        elementwise = not change.fan_in_dims and not change.fan_out_dims
        if method == "sparkling" or elementwise:
            new = change.remap.gather_sources(old)
        elif method == "random":
            new = change.remap.place_old(old, _sample_like(old, change, generator))
        else:
            zeros = torch.zeros(change.remap.new_shape, dtype=old.dtype, device=old.device)
            new = change.remap.place_old(old, zeros)
        if change.scale != 1.0:
            new = new * change.scale
        return new.contiguous()


def _sample_like(old: torch.Tensor, change: ParamChange, generator: torch.Generator | None) -> torch.Tensor:
    values = old.detach().double()
    std = float(values.std()) if values.numel() > 1 else 0.0
    mean = float(values.mean())
    noise = torch.randn(change.remap.new_shape, generator=generator, dtype=torch.float64)
    return (noise * std + mean).to(dtype=old.dtype, device=old.device)
