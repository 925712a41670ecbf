"""A small GPT in the style of nanoGPT, the model that `sparkling train` widens.

Pre-norm transformer blocks with a fused q/k/v projection, a GELU MLP and an output head tied
to the token embedding. Unlike nanoGPT, the attention width `n_head * head_dim` is independent
of the residual width `n_embd`, so that the hidden size can grow while heads stay as they are.

Every module reads its sizes from its own attributes or weights at forward time, never from a
shared config object, so a widened module runs at its new sizes. `GPT.current_config()` reads
the sizes back from the live modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 256
    block_size: int = 128
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    head_dim: int = 16
    ffn_dim: int = 256
    bias: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "head_dim", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        inner = config.n_head * config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * inner, bias=config.bias)
        self.c_proj = nn.Linear(inner, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        inner = self.n_head * self.head_dim
        q, k, v = self.c_attn(x).split(inner, dim=2)
        # (batch, seq, n_head * head_dim) -> (batch, n_head, seq, head_dim)
        q = q.view(batch, seq, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq, self.n_head, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        # (batch, n_head, seq, head_dim) -> (batch, seq, n_head * head_dim)
        y = y.transpose(1, 2).contiguous().view(batch, seq, inner)
        out: torch.Tensor = self.c_proj(y)
        return out


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ffn_dim, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(config.ffn_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.dropout(self.c_proj(self.gelu(self.c_fc(x))))
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    """Token ids `(batch, seq)` in, logits `(batch, seq, vocab_size)` out."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.block_size = config.block_size
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix, embedding and output head
        self._init_weights(config)

    def _init_weights(self, config: GPTConfig) -> None:
        # GPT-2 initialisation: N(0, 0.02), with residual projections scaled by 1/sqrt(2 n_layer)
        # so that the residual stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(param)
            elif param.dim() >= 2:
                std = 0.02
                if name.endswith("c_proj.weight"):
                    std = 0.02 / math.sqrt(2 * config.n_layer)
                nn.init.normal_(param, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        seq = idx.size(1)
        positions = torch.arange(0, seq, dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.lm_head(self.ln_f(x))
        return logits

    def current_config(self) -> GPTConfig:
        """Read the model's current sizes from its live modules, so growth shows up here."""
        first = self.blocks[0]
        assert isinstance(first, Block)
        return replace(
            self.config,
            n_embd=self.wte.embedding_dim,
            n_head=first.attn.n_head,
            head_dim=first.attn.head_dim,
            ffn_dim=first.mlp.c_fc.out_features,
        )
