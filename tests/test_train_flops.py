"""Training-FLOPs estimate: matrix-multiply weights and the attention term."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sparkling_ir.models.nanogpt import GPT, GPTConfig
from sparkling_ir.train.flops import flops_per_token, matmul_params

CONFIG = GPTConfig(block_size=32, n_layer=2, n_embd=24, n_head=2, head_dim=8, ffn_dim=40)


def test_matmul_params_by_hand() -> None:
    d, attn, ffn, vocab = 24, 16, 40, 256
    per_block = d * 3 * attn + attn * d + d * ffn + ffn * d  # c_attn, c_proj, c_fc, c_proj

    # The tied embedding counts once, as the output head; the position embedding not at all.
    assert matmul_params(GPT(CONFIG)) == 2 * per_block + vocab * d


def test_flops_per_token_adds_attention() -> None:
    model = GPT(CONFIG)
    attention = 6 * 2 * 32 * 16  # 6 * n_layer * seq_len * (n_head * head_dim)

    assert flops_per_token(model, seq_len=32) == 6 * matmul_params(model) + attention


def test_flops_follow_live_width() -> None:
    narrow = GPT(CONFIG)
    wide = GPT(replace(CONFIG, n_embd=48, ffn_dim=80))

    assert flops_per_token(wide, 32) > flops_per_token(narrow, 32)


def test_attention_term_is_causal_half() -> None:
    # Exact causal count: the query at position t meets t keys. Q K^T and A V each take
    # n_head * head_dim multiply-adds per key in the forward pass, and training costs 3 times
    # the forward pass.
    seq_len, width = 32, 16  # width = n_head * head_dim of CONFIG
    multiply_adds = sum(2 * t * width for t in range(1, seq_len + 1)) / seq_len
    causal_flops_per_token = 3 * 2 * multiply_adds
    model = GPT(replace(CONFIG, n_layer=1))

    attention = flops_per_token(model, seq_len) - 6 * matmul_params(model)

    assert attention == pytest.approx(causal_flops_per_token * seq_len / (seq_len + 1))
