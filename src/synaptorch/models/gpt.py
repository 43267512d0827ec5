"""A standard decoder-only Transformer, the baseline that every BDH figure is measured against.

Pre-norm blocks of causal self-attention (`scaled_dot_product_attention`, RoPE on queries and
keys) and a GELU MLP, a final layer norm, and output weights tied to the token embedding.
Generation keeps a key/value cache, so it shares `forward_recurrent(idx, state)` with BDH; unlike
BDH's fixed-size synapse state, the cache grows by one key and one value per token and layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from synaptorch.errors import ConfigError
from synaptorch.fields import setting
from synaptorch.models.base import LanguageModel
from synaptorch.models.config import ModelConfig
from synaptorch.models.layers import rope, rope_phasors


@dataclass(frozen=True)
class GPTConfig(ModelConfig):
    n_layer: int = setting(6, "Layers.")
    n_embd: int = setting(384, "Width d of the residual stream.")
    n_head: int = setting(6, "Heads.")
    vocab_size: int = 256  # set from the tokenizer
    mlp_ratio: int = setting(4, "Width of the MLP over n_embd.")
    dropout: float = setting(0.0, "Dropout.")
    rope_theta: float = setting(10_000.0, "RoPE base.")

    positive_ints = ("n_layer", "n_embd", "n_head", "vocab_size", "mlp_ratio")

    def __post_init__(self) -> None:
        self.check()
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ConfigError(f"n_embd / n_head must be an even integer, got {self.n_embd} / {self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_params(self) -> int:
        d, hidden = self.n_embd, self.mlp_ratio * self.n_embd
        block = 4 * d * d + 2 * d * hidden + 2 * d  # attention, MLP, two norm gains
        return self.vocab_size * d + self.n_layer * block + d

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs (2 per multiply-add) per token of a sequence of seq_len; training is 3x.

        Per layer: the q, k, v and output projections (4 d^2 weights) and the MLP (2 mlp_ratio d^2)
        at 2 FLOPs per weight, then scores and weighted values (2 * 2 * d) against seq_len / 2
        positions, the mean number a token sees under the causal mask; then the tied readout.
        """
        d = self.n_embd
        per_layer = 2 * (4 + 2 * self.mlp_ratio) * d * d + 4 * (seq_len / 2) * d
        return round(self.n_layer * per_layer + 2 * d * self.vocab_size)


@dataclass
class GPTState:
    """Key/value cache per layer, (B, n_head, T, head_dim) each, and the position of the next token."""

    keys: list[Tensor]
    values: list[Tensor]
    position: int


class Block(nn.Module):
    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.c = c
        self.norm_attn = nn.LayerNorm(c.n_embd, bias=False)
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)
        self.proj = nn.Linear(c.n_embd, c.n_embd, bias=False)
        self.norm_mlp = nn.LayerNorm(c.n_embd, bias=False)
        self.fc = nn.Linear(c.n_embd, c.mlp_ratio * c.n_embd, bias=False)
        self.fc_out = nn.Linear(c.mlp_ratio * c.n_embd, c.n_embd, bias=False)
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self, x: Tensor, phasors: Tensor, cache: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        B, T, _ = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).view(B, T, 3, self.c.n_head, -1).permute(2, 0, 3, 1, 4)
        q, k = rope(q, phasors), rope(k, phasors)  # (B, nh, T, hd)
        if cache is None:
            attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self._attn_dropout())
        else:
            past = cache[0].shape[2]
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            # Query i of the chunk sees the past and the chunk up to itself.
            visible = torch.arange(past + T, device=x.device) <= past + torch.arange(T, device=x.device)[:, None]
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=self._attn_dropout())
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(B, T, -1)))
        x = x + self.drop(self.fc_out(F.gelu(self.fc(self.norm_mlp(x)))))
        return x, (k, v)

    def _attn_dropout(self) -> float:
        return self.c.dropout if self.training else 0.0


class GPT(LanguageModel):
    architecture = "gpt"
    config_class = GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_out = nn.LayerNorm(config.n_embd, bias=False)
        self.drop = nn.Dropout(config.dropout)
        self.recompute: bool = False  # in training, recompute each block in the backward pass
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 L)."""
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("proj.weight", "fc_out.weight")):
                nn.init.normal_(p, std=0.02 / (2 * self.config.n_layer) ** 0.5)
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        """idx (B, T) -> logits (B, T, V)."""
        logits, _ = self._run(idx, None)
        return logits

    def forward_recurrent(self, idx: Tensor, state: GPTState | None = None) -> tuple[Tensor, GPTState]:
        """Process a chunk against the key/value cache: idx (B, C) -> logits (B, C, V), new state."""
        if state is None:
            state = self.initial_state(idx.shape[0], device=idx.device)
        return self._run(idx, state)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> GPTState:
        c = self.config
        device = self.embed.weight.device if device is None else device
        empty = torch.zeros(batch_size, c.n_head, 0, c.head_dim, dtype=self.embed.weight.dtype, device=device)
        return GPTState([empty] * c.n_layer, [empty] * c.n_layer, 0)

    def _run(self, idx: Tensor, state: GPTState | None) -> tuple[Tensor, GPTState]:
        c = self.config
        start = 0 if state is None else state.position
        phasors = rope_phasors(c.head_dim, c.rope_theta, start, idx.shape[1], idx.device)
        x = self.drop(self.embed(idx))
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            cache = None if state is None else (state.keys[i], state.values[i])
            if self.recompute and torch.is_grad_enabled():
                x, (k, v) = checkpoint(block, x, phasors, cache, use_reentrant=False)
            else:
                x, (k, v) = block(x, phasors, cache)
            keys.append(k)
            values.append(v)
        logits = self.norm_out(x) @ self.embed.weight.T
        return logits, GPTState(keys, values, start + idx.shape[1])
