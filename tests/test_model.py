"""The bundled GPT: shapes, weight tying, causality, config checks, sizes read back."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sparkling_ir.models.nanogpt import GPT, Block, GPTConfig

TINY = GPTConfig(block_size=16, n_layer=2, n_embd=24, n_head=3, head_dim=8, ffn_dim=40)


def tiny_model(config: GPTConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def first_block(model: GPT) -> Block:
    block = model.blocks[0]
    assert isinstance(block, Block)
    return block


def test_forward_returns_logits_per_position() -> None:
    model = tiny_model()
    idx = torch.randint(0, TINY.vocab_size, (2, 11))

    logits = model(idx)

    assert logits.shape == (2, 11, TINY.vocab_size)
    assert torch.isfinite(logits).all()


def test_embedding_and_head_are_tied() -> None:
    model = tiny_model()

    assert model.lm_head.weight is model.wte.weight
    names = [name for name, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # one tensor, listed once, under its first name


def test_attention_width_independent_of_hidden() -> None:
    # n_head * head_dim = 24 = n_embd here would hide a mix-up, so use 3 * 8 against 20.
    config = GPTConfig(block_size=8, n_layer=1, n_embd=20, n_head=3, head_dim=8, ffn_dim=32)
    model = tiny_model(config)
    attn = first_block(model).attn

    assert attn.c_attn.weight.shape == (3 * 3 * 8, 20)
    assert attn.c_proj.weight.shape == (20, 3 * 8)
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 256)


def test_output_ignores_future_tokens() -> None:
    model = tiny_model().eval()
    idx = torch.randint(0, TINY.vocab_size, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % TINY.vocab_size

    with torch.no_grad():
        before, after = model(idx), model(changed)

    torch.testing.assert_close(before[0, :8], after[0, :8])
    assert not torch.allclose(before[0, 8:], after[0, 8:])


def test_same_seed_gives_same_weights() -> None:
    first, second = tiny_model(seed=3), tiny_model(seed=3)

    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name


def test_residual_projections_have_smaller_init() -> None:
    config = GPTConfig(n_layer=8, n_embd=256, ffn_dim=1024, n_head=4, head_dim=64)
    model = tiny_model(config)

    projection = first_block(model).mlp.c_proj.weight.std().item()
    expansion = first_block(model).mlp.c_fc.weight.std().item()

    assert projection == pytest.approx(0.02 / 4, rel=0.05)  # 0.02 / sqrt(2 * 8)
    assert expansion == pytest.approx(0.02, rel=0.05)


def test_current_config_reads_live_sizes() -> None:
    model = tiny_model()
    assert model.current_config() == TINY

    # Replacing modules by hand, as growth does, changes what current_config reports.
    model.wte = torch.nn.Embedding(TINY.vocab_size, 48)
    first_block(model).mlp.c_fc = torch.nn.Linear(48, 80)

    current = model.current_config()
    assert current.n_embd == 48
    assert current.ffn_dim == 80
    assert current == replace(TINY, n_embd=48, ffn_dim=80)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_embd", 0),
        ("n_layer", -1),
        ("head_dim", 2.5),
        ("block_size", 0),
        ("dropout", 1.0),
    ],
    ids=["zero-hidden", "negative-layers", "fractional-head-dim", "zero-block", "dropout-one"],
)
def test_config_rejects_invalid_sizes(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        GPTConfig(**{field: value})  # type: ignore[arg-type]
