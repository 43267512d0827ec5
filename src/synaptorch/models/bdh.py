"""The Dragon Hatchling (BDH), GPU-friendly form, in plain torch.

Notation (per layer, the same weights at every layer):
    x        residual stream, d = n_embd
    x_sparse = relu(x Dx_h)                 N = n_neuron neurons per head, positive and sparse
    a_t      = sum_{s<t} <q_t, q_s> x_s     q = rope(x_sparse), linear attention, diagonal excluded
    y_sparse = relu(layernorm(a_t) Dy_h)
    x        = layernorm(x + layernorm(concat_h(x_sparse * y_sparse) E))

The attention has two equal forms. Parallel: a T x T score matrix per head. Recurrent: a state
rho (N x d per head) that is read, a_t = q_t rho, then written, rho += q_t^T x_t. rho is the
Hebbian synapse matrix between neurons and the residual stream, and the only memory of the
context. `forward_recurrent` processes a chunk of any length against that state: scores inside
the chunk plus one read of rho, so chunks of length 1 are the plain recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.models.base import LanguageModel
from synaptorch.models.config import ModelConfig


@dataclass(frozen=True)
class BDHConfig(ModelConfig):
    n_layer: int = 6
    n_embd: int = 256
    n_head: int = 4
    n_neuron: int = 8192  # per head; the paper's 128 * n_embd / n_head
    vocab_size: int = 256
    dropout: float = 0.1
    rope_theta: float = 2.0**16

    positive_ints = ("n_layer", "n_embd", "n_head", "n_neuron", "vocab_size")

    def __post_init__(self) -> None:
        self.check()
        if self.n_neuron % 2:
            raise ConfigError(f"n_neuron must be even for RoPE pairs, got {self.n_neuron}")

    @property
    def n_params(self) -> int:
        d, neurons = self.n_embd, self.n_head * self.n_neuron
        return 2 * self.vocab_size * d + 3 * neurons * d

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs (2 per multiply-add) per token of a sequence of seq_len; training is 3x.

        Per layer: Dx, Dy and E (2 * d * nh * N each), then scores over nh * N neurons and the
        weighted sum of values of width d per head against seq_len / 2 positions, the mean number
        a token sees under the causal mask; then the readout. Work on masked scores is not counted.
        """
        d, neurons, seen = self.n_embd, self.n_head * self.n_neuron, seq_len / 2
        per_layer = 3 * 2 * d * neurons + 2 * seen * neurons + 2 * seen * self.n_head * d
        return round(self.n_layer * per_layer + 2 * d * self.vocab_size)


@dataclass
class BDHState:
    """Recurrent state: one synapse matrix per layer and the position of the next token."""

    rho: list[Tensor]  # per layer (B, n_head, N, d)
    position: int


def rope_angles(n_neuron: int, theta: float, start: int, length: int, device) -> tuple[Tensor, Tensor]:
    """cos and sin (length, N/2) of the angle t / theta**(2k/N) for positions start..start+length.

    The phase is reduced modulo one turn in float64, so position 16384 is as exact as position 0
    and every form of the model sees bit-identical rotations for the same position.
    """
    pair = torch.arange(0, n_neuron, 2, device=device, dtype=torch.float64)
    turns_per_step = theta ** (-pair / n_neuron) / (2 * math.pi)
    position = torch.arange(start, start + length, device=device, dtype=torch.float64)
    angle = (torch.outer(position, turns_per_step) % 1.0) * (2 * math.pi)
    return torch.cos(angle).float(), torch.sin(angle).float()


def rope(v: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs (2k, 2k+1) of the last dimension of v (..., T, N)."""
    pairs = v.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.to(v.dtype), sin.to(v.dtype)
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


def layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:])


class BDH(LanguageModel):
    architecture = "bdh"
    config_class = BDHConfig

    def __init__(self, config: BDHConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        self.encoder_x = nn.Parameter(torch.empty(c.n_head, c.n_embd, c.n_neuron))  # Dx
        self.encoder_y = nn.Parameter(torch.empty(c.n_head, c.n_embd, c.n_neuron))  # Dy
        self.decoder = nn.Parameter(torch.empty(c.n_head * c.n_neuron, c.n_embd))  # E
        self.readout = nn.Parameter(torch.empty(c.n_embd, c.vocab_size))
        self.drop = nn.Dropout(c.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            nn.init.normal_(p, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        """Parallel form: idx (B, T) -> logits (B, T, V)."""
        cos, sin = rope_angles(self.config.n_neuron, self.config.rope_theta, 0, idx.shape[1], idx.device)
        x = layer_norm(self.embed(idx)).unsqueeze(1)  # (B, 1, T, d)
        for _ in range(self.config.n_layer):
            x, _ = self._layer(x, cos, sin, rho=None)
        return x.squeeze(1) @ self.readout

    def forward_recurrent(self, idx: Tensor, state: BDHState | None = None) -> tuple[Tensor, BDHState]:
        """Recurrent form over one chunk: idx (B, C), C >= 1 -> logits (B, C, V) and the new state.

        Feeding a sequence chunk by chunk, in any split, gives the logits of the parallel form.
        """
        c = self.config
        B, C = idx.shape
        if state is None:
            state = self.initial_state(B, device=idx.device)
        cos, sin = rope_angles(c.n_neuron, c.rope_theta, state.position, C, idx.device)
        x = layer_norm(self.embed(idx)).unsqueeze(1)
        new_rho = []
        for rho in state.rho:
            x, rho = self._layer(x, cos, sin, rho=rho)
            new_rho.append(rho)
        return x.squeeze(1) @ self.readout, BDHState(new_rho, state.position + C)

    def initial_state(self, batch_size: int, device=None) -> BDHState:
        c = self.config
        dtype = self.readout.dtype
        device = self.readout.device if device is None else device
        shape = (batch_size, c.n_head, c.n_neuron, c.n_embd)
        return BDHState([torch.zeros(shape, dtype=dtype, device=device) for _ in range(c.n_layer)], 0)

    def _layer(self, x: Tensor, cos: Tensor, sin: Tensor, rho: Tensor | None) -> tuple[Tensor, Tensor | None]:
        B, _, T, _ = x.shape
        x_sparse = F.relu(x @ self.encoder_x)  # (B, nh, T, N)
        q = rope(x_sparse, cos, sin)
        a = (q @ q.mT).tril(diagonal=-1) @ x  # (B, nh, T, d), causal, diagonal excluded
        if rho is not None:
            a = a + q @ rho  # read before write
            rho = rho + q.mT @ x  # Hebbian update, (B, nh, N, d)
        y_sparse = F.relu(layer_norm(a) @ self.encoder_y)  # (B, nh, T, N)
        xy = self.drop(x_sparse * y_sparse)
        y = xy.transpose(1, 2).reshape(B, 1, T, -1) @ self.decoder  # (B, 1, T, d)
        return layer_norm(x + layer_norm(y)), rho
