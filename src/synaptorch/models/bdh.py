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

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from synaptorch.errors import ConfigError
from synaptorch.models.base import LanguageModel
from synaptorch.models.config import ModelConfig
from synaptorch.models.linear_attention import (
    auto_chunk_size,
    causal_linear_attention,
    causal_linear_attention_reference,
)


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

        Per layer: Dx, Dy and E (2 * d * nh * N each), then attention in the cheaper of its two
        exact forms. Parallel: scores over nh * N neurons and a weighted sum of values of width d
        per head against the seq_len / 2 positions a token sees on average under the causal mask.
        Chunked (C = auto_chunk_size): the same against C / 2 positions inside the chunk, plus one
        read and one write of the N x d synapse state per head for every chunk after the first.
        Work on masked scores is not counted; then the readout.
        """
        d, neurons = self.n_embd, self.n_head * self.n_neuron
        chunk = auto_chunk_size(seq_len, self.n_neuron, d)
        n_chunks = -(-seq_len // chunk)
        per_position = 2 * (neurons + self.n_head * d)
        parallel = per_position * seq_len / 2
        chunked = per_position * chunk / 2 + 4 * neurons * d * (n_chunks - 1) / n_chunks
        per_layer = 3 * 2 * d * neurons + min(parallel, chunked)
        return round(self.n_layer * per_layer + 2 * d * self.vocab_size)


# One-token generation touches only the active neurons of a layer whose share of firing neurons is
# below SPARSE_BELOW, once the layer's synapse state holds SPARSE_MIN_SYNAPSES or more; smaller
# states are read faster whole. Both measured by benchmarks/sparsity.py.
SPARSE_BELOW = 0.2
SPARSE_MIN_SYNAPSES = 2**21


@dataclass
class BDHState:
    """Recurrent state: one synapse matrix per layer and the position of the next token."""

    rho: list[Tensor]  # per layer (B, n_head, N, d)
    position: int


def rope_phasors(dim: int, theta: float, start: int, length: int, device: torch.device | str) -> Tensor:
    """Unit complex numbers (length, dim/2) e^{i t / theta**(2k/dim)} for positions start..start+length.

    The phase is reduced modulo one turn in float64, so position 16384 is as exact as position 0
    and every form of the model sees bit-identical rotations for the same position.
    """
    pair = torch.arange(0, dim, 2, device=device, dtype=torch.float64)
    turns_per_step = theta ** (-pair / dim) / (2 * math.pi)
    position = torch.arange(start, start + length, device=device, dtype=torch.float64)
    angle = (torch.outer(position, turns_per_step) % 1.0) * (2 * math.pi)
    return torch.polar(torch.ones_like(angle), angle).to(torch.complex64)


def rope(v: Tensor, phasors: Tensor) -> Tensor:
    """Rotate adjacent pairs (2k, 2k+1) of the last dimension of v (..., T, dim) by phasors (T, dim/2)."""
    if v.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
        # One complex multiply reads and writes v once, forward and backward; compiled code fuses
        # the real form below instead, and half precision has no complex type to lean on.
        rotated = torch.view_as_complex(v.unflatten(-1, (-1, 2))) * phasors.to(v.dtype.to_complex())
        return torch.view_as_real(rotated).flatten(-2)
    pairs = v.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = phasors.real.to(v.dtype), phasors.imag.to(v.dtype)
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


def layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:])


def _generation_layers(
    x: Tensor, phasors: Tensor, rhos: list[Tensor], encoder_x: Tensor, encoder_y: Tensor, decoder: Tensor
) -> Tensor:
    """The layers for one token: x (B, d) -> x (B, d); each synapse state rho is updated in place."""
    B = x.shape[0]
    n_head, n_neuron = rhos[0].shape[1:3]
    for rho in rhos:
        x_sparse = F.relu(x @ encoder_x)  # (B, nh N)
        q = rope(x_sparse, phasors).view(B, n_head, n_neuron, 1)
        if torch.compiler.is_compiling():
            # As elementwise products, the read and the write compile into loops over rho alone.
            a = (q * rho).sum(-2, keepdim=True)  # (B, nh, 1, d), read before write
            rho.add_(q * x[:, None, None, :])
        else:
            a = q.mT @ rho
            x_per_head = x[:, None, None, :].expand(B, n_head, 1, -1)
            rho.view(-1, n_neuron, x.shape[-1]).baddbmm_(q.view(-1, n_neuron, 1), x_per_head.flatten(0, 1))
        y_sparse = F.relu(layer_norm(a) @ encoder_y).view(B, -1)  # (B, nh N)
        x = layer_norm(x + layer_norm((x_sparse * y_sparse) @ decoder))
    return x


def _generation_step(token: Tensor, phasors: Tensor, rhos: list[Tensor], embed: Tensor, *weights: Tensor) -> Tensor:
    """One token (B,) -> logits (B, V), the synapse states updated in place; weights: Dx, Dy, E, readout."""
    *layer_weights, readout = weights
    return _generation_layers(layer_norm(F.embedding(token, embed)), phasors, rhos, *layer_weights) @ readout


class BDH(LanguageModel):
    """BDH language model; the attention kernel is a runtime choice, not part of the checkpoint.

    attention: "chunked" (linear cost, the default) or "naive" (the T x T parallel form).
    chunk_size: chunk length of the chunked form, None to choose it from the shapes.
    recompute: in training, keep only each layer's input and recompute the layer in the backward
        pass: about a third more compute for a fraction of the activation memory.
    compiled_step: whether `step` runs compiled; `compile_step()` turns it on.
    sparse_below: in `step` with one sequence, a layer whose share of firing neurons is below this
        touches only the active neurons; 0 turns it off. By default 0.2 for models whose synapse
        state per layer holds at least 2**21 numbers, else 0.
    """

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
        self.attention: str = "chunked"
        self.chunk_size: int | None = None
        self.recompute: bool = False
        self.sparse_below: float = SPARSE_BELOW if c.n_head * c.n_neuron * c.n_embd >= SPARSE_MIN_SYNAPSES else 0.0
        self._phasor_table: tuple = (None, None)
        self._rearranged_weights: dict = {}
        self.compiled_step = False
        self._compiled_step = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in self.parameters():
            nn.init.normal_(p, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        """Parallel form: idx (B, T) -> logits (B, T, V)."""
        x, phasors = self._inputs(idx, start=0)
        for _ in range(self.config.n_layer):
            if self.recompute and torch.is_grad_enabled():
                x, _ = checkpoint(self._layer, x, phasors, None, use_reentrant=False)
            else:
                x, _ = self._layer(x, phasors, rho=None)
        return x.squeeze(0) @ self.readout

    def forward_recurrent(
        self, idx: Tensor, state: BDHState | None = None, observe: Callable[..., None] | None = None
    ) -> tuple[Tensor, BDHState]:
        """Recurrent form over one chunk: idx (B, C), C >= 1 -> logits (B, C, V) and the new state.

        Feeding a sequence chunk by chunk, in any split, gives the logits of the parallel form.
        observe, when given, is called at every layer as observe(layer, residual=x (1, B, C, d),
        x_sparse=..., q=rope(x_sparse), y_sparse=..., xy=...), those four (nh, B, C, N): the
        tensors the layer computed, so that analysis tools read them instead of recomputing them.
        """
        B, C = idx.shape
        if state is None:
            state = self.initial_state(B, device=idx.device)
        x, phasors = self._inputs(idx, start=state.position)
        new_rho = []
        for layer, rho in enumerate(state.rho):
            layer_observer = None if observe is None else functools.partial(observe, layer)
            x, rho = self._layer(x, phasors, rho=rho, observe=layer_observer)
            new_rho.append(rho)
        return x.squeeze(0) @ self.readout, BDHState(new_rho, state.position + C)

    @torch.no_grad()
    def step(self, token: Tensor, state: BDHState) -> tuple[Tensor, BDHState]:
        """One token of generation: token (B,) -> logits (B, V); `state` is updated in place.

        The recurrent form for a single token, written for latency: each synapse matrix is read and
        written in place. With one sequence, a layer whose neurons fire sparsely enough
        (`sparse_below`) touches only the rows of rho, Dy and E that belong to active neurons.
        `compile_step` compiles the dense path.
        """
        phasors = self._phasors_at(state.position, token.device)
        weights = (self._encoder_x_flat(), self.encoder_y, self.decoder)
        state.position += 1
        if token.shape[0] > 1 or self.sparse_below <= 0:
            step = self._compiled_step if self.compiled_step else _generation_step
            return step(token, phasors, state.rho, self.embed.weight, *weights, self.readout), state
        x = layer_norm(self.embed(token))  # (1, d)
        for rho in state.rho:
            x_sparse = F.relu(x @ weights[0])  # (1, nh N)
            if torch.count_nonzero(x_sparse).item() < self.sparse_below * x_sparse.numel():
                y = self._sparse_neurons(x[0], x_sparse[0], rope(x_sparse, phasors)[0], rho[0])[None]
                x = layer_norm(x + layer_norm(y))
            else:
                x = _generation_layers(x, phasors, [rho], *weights)
        return x @ self.readout, state

    def compile_step(self, enabled: bool = True) -> None:
        """Compile the dense path of `step` (a one-off cost of seconds), or go back to eager.

        The C++ wrapper of the compiled code spares most of the Python overhead of such a small step.
        """
        if enabled and self._compiled_step is None:
            self._compiled_step = torch.compile(_generation_step, dynamic=False, options={"cpp_wrapper": True})
        self.compiled_step = enabled

    def _sparse_neurons(self, x: Tensor, x_sparse: Tensor, q: Tensor, rho: Tensor) -> Tensor:
        """One layer's neurons for one token, touching only active neurons. Shapes without batch.

        rope mixes the two neurons of a pair, so a pair is active when either of them fires.
        """
        c = self.config
        pair_active = x_sparse.view(-1, 2).amax(-1) > 0
        active = torch.stack((pair_active, pair_active), -1).view(-1).nonzero().squeeze(-1)  # (k,)
        head = torch.div(active, c.n_neuron, rounding_mode="floor")
        rho_rows = rho.view(-1, c.n_embd)  # (nh N, d)
        q_active = q[active]
        a = torch.zeros(c.n_head, c.n_embd, dtype=x.dtype, device=x.device)
        a.index_add_(0, head, q_active[:, None] * rho_rows[active])  # (nh, d)
        rho_rows.index_add_(0, active, q_active[:, None] * x[None, :])  # in place
        encoder_y_rows = self._rearranged(
            "encoder_y rows", self.encoder_y, lambda w: w.transpose(1, 2).reshape(-1, c.n_embd)
        )
        y_active = F.relu_((layer_norm(a)[head] * encoder_y_rows[active]).sum(-1))
        return (x_sparse[active] * y_active) @ self.decoder[active]  # (d,)

    def _encoder_x_flat(self) -> Tensor:
        """Dx as one (d, nh N) matrix, head after head."""
        return self._rearranged(
            "encoder_x flat", self.encoder_x, lambda w: w.transpose(0, 1).reshape(self.config.n_embd, -1)
        )

    def _rearranged(self, name: str, weight: Tensor, rearrange) -> Tensor:
        """rearrange(weight), kept under name between generated tokens until the weight changes."""
        if torch.is_grad_enabled():
            return rearrange(weight)
        version = (weight.data_ptr(), weight._version)
        cached = self._rearranged_weights.get(name)
        if cached is None or cached[0] != version:
            cached = (version, rearrange(weight.detach()).contiguous())
            self._rearranged_weights[name] = cached
        return cached[1]

    def _phasors_at(self, position: int, device) -> Tensor:
        """RoPE phasors (1, nh N/2) of one position, heads side by side, from a table of 1024 positions."""
        block, offset = divmod(position, 1024)
        key = (block, str(device))
        if self._phasor_table[0] != key:
            c = self.config
            table = rope_phasors(c.n_neuron, c.rope_theta, block * 1024, 1024, device).repeat(1, c.n_head)
            self._phasor_table = (key, table)
        return self._phasor_table[1][offset : offset + 1]

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> BDHState:
        c = self.config
        dtype = self.readout.dtype
        device = self.readout.device if device is None else device
        shape = (batch_size, c.n_head, c.n_neuron, c.n_embd)
        return BDHState([torch.zeros(shape, dtype=dtype, device=device) for _ in range(c.n_layer)], 0)

    @torch.no_grad()
    def neuron_density(self, idx: Tensor) -> list[dict[str, float]]:
        """Per layer, the share of neurons firing over idx (B, T): in x_sparse, y_sparse and both."""
        x, phasors = self._inputs(idx, start=0)
        activity: list[dict[str, float]] = []

        def record(residual: Tensor, x_sparse: Tensor, q: Tensor, y_sparse: Tensor, xy: Tensor) -> None:
            firing = {"x": x_sparse, "y": y_sparse, "xy": xy}
            activity.append({name: (t > 0).float().mean().item() for name, t in firing.items()})

        for _ in range(self.config.n_layer):
            x, _ = self._layer(x, phasors, None, record)
        return activity

    def _inputs(self, idx: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """The residual stream (1, B, T, d) of tokens idx (B, T) and their RoPE phasors from position start."""
        c = self.config
        phasors = rope_phasors(c.n_neuron, c.rope_theta, start, idx.shape[1], idx.device)
        return layer_norm(self.embed(idx)).unsqueeze(0), phasors

    def _layer(
        self, x: Tensor, phasors: Tensor, rho: Tensor | None, observe: Callable[..., None] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        # Inside a layer heads come first, (nh, B, T, .): the per-head products with Dy and E are
        # then plain batched matmuls, and no tensor of neurons is ever transposed but x_sparse.
        c = self.config
        _, B, T, d = x.shape  # (1, B, T, d)
        x_sparse = F.relu(x.view(B * T, d) @ self._encoder_x_flat()).view(B * T, c.n_head, -1)
        x_sparse = x_sparse.transpose(0, 1).contiguous().view(c.n_head, B, T, -1)  # (nh, B, T, N)
        q = rope(x_sparse, phasors)
        a = self._attend(q, x)  # (nh, B, T, d), causal, diagonal excluded
        if rho is not None:
            rho = rho.transpose(0, 1)  # (nh, B, N, d)
            a = a + q @ rho  # read before write
            rho = (rho + q.mT @ x).transpose(0, 1).contiguous()  # Hebbian update, (B, nh, N, d)
        y_sparse = F.relu(layer_norm(a).view(c.n_head, B * T, d) @ self.encoder_y).view_as(x_sparse)
        xy = self.drop(x_sparse * y_sparse)
        if observe is not None:
            observe(residual=x, x_sparse=x_sparse, q=q, y_sparse=y_sparse, xy=xy)
        y = (xy.view(c.n_head, B * T, -1) @ self.decoder.view(c.n_head, -1, d)).sum(0)  # (B T, d)
        return layer_norm(x + layer_norm(y.view_as(x))), rho

    def _attend(self, q: Tensor, x: Tensor) -> Tensor:
        if q.shape[-2] == 1:
            return q.new_zeros(q.shape[:-1] + x.shape[-1:])  # a lone token sees only the state
        if self.attention == "naive":
            return causal_linear_attention_reference(q, x)
        if self.attention != "chunked":
            raise ConfigError(f"attention must be 'chunked' or 'naive', got {self.attention!r}")
        return causal_linear_attention(q, x, self.chunk_size)
