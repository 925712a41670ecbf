"""Command-line flags that describe the bundled GPT, shared by `sparkling axes` and `plan`."""

from __future__ import annotations

import argparse

import torch

from sparkling_ir.models.nanogpt import GPT, GPTConfig


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = GPTConfig()
    group = parser.add_argument_group("model (the bundled GPT, random weights)")
    group.add_argument("--n-layer", type=int, default=defaults.n_layer, help="transformer blocks")
    group.add_argument("--n-embd", type=int, default=defaults.n_embd, help="hidden size")
    group.add_argument("--n-head", type=int, default=defaults.n_head, help="attention heads")
    group.add_argument("--head-dim", type=int, default=defaults.head_dim, help="size of one head")
    group.add_argument("--ffn-dim", type=int, default=defaults.ffn_dim, help="MLP inner size")


def config_from_arguments(args: argparse.Namespace) -> GPTConfig:
    """Build the config the flags describe; raise ValueError naming an invalid size."""
    return GPTConfig(
        n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
        head_dim=args.head_dim, ffn_dim=args.ffn_dim,
    )


def model_from_arguments(args: argparse.Namespace) -> tuple[GPT, torch.Tensor]:
    """Build the GPT the flags describe (random weights) and a batch of token ids for tracing.

    Raises ValueError naming an invalid size.
    """
    config = config_from_arguments(args)
    example = torch.zeros(2, min(8, config.block_size), dtype=torch.long)
    return GPT(config), example
