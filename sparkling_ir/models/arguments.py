"""Command-line flags that describe the bundled GPT, shared by `sparkling axes` and `plan`.

The defaults equal those of `sparkling train`, so `plan` shows what `train` will do.
"""

from __future__ import annotations

import argparse

import torch

from sparkling_ir.models.nanogpt import GPT, GPTConfig


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (the bundled GPT, random weights)")
    group.add_argument("--n-layer", type=int, default=4, help="transformer blocks (default: 4)")
    group.add_argument("--n-embd", type=int, default=64, help="hidden size (default: 64)")
    group.add_argument("--n-head", type=int, default=4, help="attention heads (default: 4)")
    group.add_argument("--head-dim", type=int, default=16, help="size of one head (default: 16)")
    group.add_argument("--ffn-dim", type=int, help="MLP inner size (default: 4 x --n-embd)")
    group.add_argument("--block-size", type=int, default=128, help="sequence length (default: 128)")


def config_from_arguments(args: argparse.Namespace) -> GPTConfig:
    """Build the config the flags describe; raise ValueError naming the invalid flag."""
    values = {
        "n_layer": args.n_layer, "n_embd": args.n_embd, "n_head": args.n_head,
        "head_dim": args.head_dim, "block_size": args.block_size,
        "ffn_dim": args.ffn_dim if args.ffn_dim is not None else 4 * args.n_embd,
    }
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    return GPTConfig(**values)


def model_from_arguments(args: argparse.Namespace) -> tuple[GPT, torch.Tensor]:
    """Build the GPT the flags describe (random weights) and a batch of token ids for tracing.

    Raises ValueError naming an invalid flag.
    """
    config = config_from_arguments(args)
    example = torch.zeros(2, min(8, config.block_size), dtype=torch.long)
    return GPT(config), example
