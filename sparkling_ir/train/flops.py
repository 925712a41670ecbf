"""Training-compute estimate of the bundled GPT, counted per step on the live model.

Per token, one training step (forward and backward) costs an estimated

    6 * N_matmul + 6 * n_layer * seq_len * (n_head * head_dim)

FLOPs. `N_matmul` is the number of weights used in a matrix multiply for every token: all
2-D parameters except the position embedding (a lookup). The token embedding is tied to the
output head, so it is counted once, as the head's matrix multiply. Biases and norm gains are
left out. The factor 6 is 2 FLOPs per multiply-add times 3 for the forward pass plus a
backward pass that costs twice as much.

The second term counts the two attention products without weights, the scores `Q K^T` and
the weighted sum of values `A V`, over the causal half of the `seq_len x seq_len` score
matrix. Per token and layer, each product takes about `seq_len / 2 x d` multiply-adds
(`d = n_head * head_dim`), so both together take `2 * seq_len * d` FLOPs forward and 3 times
that in training. The causal mask keeps `seq_len * (seq_len + 1) / 2` scores, not
`seq_len**2 / 2`, so the term is low by a factor `seq_len / (seq_len + 1)`. Softmax, scaling
and masking are not counted.

Growth changes `N_matmul`, so the training loop recomputes the estimate after every growth
event and sums `tokens_per_step * flops_per_token` over steps.
"""

from __future__ import annotations

from torch import nn

from sparkling_ir.models.nanogpt import GPT

POSITION_EMBEDDING = "wpe.weight"


def matmul_params(model: nn.Module) -> int:
    """Count the weights that take part in a matrix multiply for every token (`N_matmul`)."""
    return sum(
        param.numel()
        for name, param in model.named_parameters()
        if param.dim() >= 2 and name != POSITION_EMBEDDING
    )


def flops_per_token(model: GPT, seq_len: int) -> int:
    """Estimate the training FLOPs per token of `model` at sequence length `seq_len`."""
    config = model.current_config()
    attention = 6 * config.n_layer * seq_len * config.n_head * config.head_dim
    return 6 * matmul_params(model) + attention
