"""The Dragon Hatchling (BDH), GPU-friendly form, in plain torch.

Notation (per layer, the same weights at every layer):
    x        residual stream, d = n_embd
    x_sparse = relu(x Dx_h)                 N = n_neuron neurons per head, positive and sparse
    a_t      = sum_{s<t} <q_t, q_s> x_s     q = rope(x_sparse), linear attention, diagonal excluded
               (with state_decay: sum_{s<t} gamma^(t-1-s) <q_t, q_s> x_s, gamma per head)
    y_sparse = relu(layernorm(a_t) Dy_h)
    x        = layernorm(x + layernorm(concat_h(x_sparse * y_sparse) E))

The attention has two equal forms. Parallel: a T x T score matrix per head. Recurrent: a state
rho (N x d per head) that is read, a_t = q_t rho, then written, rho += q_t^T x_t. rho is the
Hebbian synapse matrix between neurons and the residual stream, and the only memory of the
context. With `state_decay` the synapses fade, rho = gamma rho + q_t^T x_t, each head at its own
rate: the BDH paper's state transition is RoPE alone (gamma = 1, the default), under which the
state of a long stream is a sum over all of it; a fading state keeps the recent tokens audible,
which training with the state carried across batches needs (docs/training.md).
`forward_recurrent` processes a chunk of any length against that state: scores inside the chunk
plus one read of rho, so chunks of length 1 are the plain recurrence.

The two relus are the model's neurons; `fire_x` and `fire_xy` compute them, so that a variant
with other neurons (spiking_bdh.py) changes those two methods and keeps the rest of the layer.
One-token generation, written for latency, lives in bdh_generation.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from synaptorch.errors import ConfigError
from synaptorch.fields import setting
from synaptorch.models.base import LanguageModel
from synaptorch.models.bdh_generation import BDHGeneration
from synaptorch.models.config import ModelConfig
from synaptorch.models.layers import layer_norm, rope, rope_phasors
from synaptorch.models.linear_attention import (
    auto_chunk_size,
    causal_linear_attention,
    causal_linear_attention_detached_reference,
    causal_linear_attention_reference,
    decay_weights,
)


@dataclass(frozen=True)
class BDHConfig(ModelConfig):
    n_layer: int = setting(6, "Layers (in BDH all share one set of weights).")
    n_embd: int = setting(256, "Width d of the residual stream.")
    n_head: int = setting(4, "Heads.")
    n_neuron: int = setting(8192, "Neurons N per head (even); the paper's 128 * n_embd / n_head.")
    vocab_size: int = 256  # set from the tokenizer
    dropout: float = setting(0.1, "Dropout (BDH: on the neuron activations).")
    locked_dropout: bool = setting(
        False,
        "Draw the dropout mask once per sequence, head and neuron, the same at every position "
        "(locked dropout, Merity et al. 2017), instead of once per token.",
    )
    rope_theta: float = setting(2.0**16, "RoPE base.")
    # The neurons of each head in blocks, each rotated by its own RoPE ladder theta^(-2k/n) over
    # its n neurons; None is one block of n_neuron. A merged model lists its sources' blocks side
    # by side, so that every neuron keeps the frequency it was trained with.
    rope_blocks: tuple[int, ...] | None = None
    state_decay: tuple[float, ...] | None = setting(
        None,
        "Per head, the factor gamma in (0, 1] by which the synapse state fades at each token, "
        "rho = gamma rho + q^T x (comma-separated, one per head); none: the state keeps every token.",
    )

    positive_ints = ("n_layer", "n_embd", "n_head", "n_neuron", "vocab_size")

    def __post_init__(self) -> None:
        self.check()
        if self.n_neuron % 2:
            raise ConfigError(f"n_neuron must be even for RoPE pairs, got {self.n_neuron}")
        if self.rope_blocks is not None:
            blocks = tuple(self.rope_blocks)
            if not blocks or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 or n % 2 for n in blocks):
                raise ConfigError(f"rope_blocks must be positive even neuron counts, got {list(blocks)}")
            if sum(blocks) != self.n_neuron:
                raise ConfigError(f"rope_blocks {list(blocks)} add up to {sum(blocks)}, not n_neuron = {self.n_neuron}")
            # A single block is the plain ladder: one spelling per model keeps configs comparable.
            object.__setattr__(self, "rope_blocks", blocks if len(blocks) > 1 else None)
        if self.state_decay is not None:
            decay = tuple(float(g) for g in self.state_decay)
            if len(decay) != self.n_head or not all(0.0 < g <= 1.0 for g in decay):
                raise ConfigError(
                    f"state_decay must be {self.n_head} factors in (0, 1], one per head, got {list(self.state_decay)}"
                )
            # No fading is spelt one way, as for rope_blocks.
            object.__setattr__(self, "state_decay", None if all(g == 1.0 for g in decay) else decay)

    @property
    def rope_ladders(self) -> tuple[int, ...]:
        """The neuron count of each RoPE block of a head."""
        return self.rope_blocks or (self.n_neuron,)

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


@dataclass
class BDHState:
    """Recurrent state: one synapse matrix per layer and the position of the next token."""

    rho: list[Tensor]  # per layer (B, n_head, N, d)
    position: int


class BDH(BDHGeneration, LanguageModel):
    """BDH language model; the attention kernel is a runtime choice, not part of the checkpoint.

    attention: "chunked" (linear cost, the default) or "naive" (the T x T parallel form).
    chunk_size: chunk length of the chunked form, None to choose it from the shapes.
    recompute: in training, keep only each layer's input and recompute the layer in the backward
        pass: about a third more compute for a fraction of the activation memory.
    detach_kv: no backpropagation through the attention's keys and values (the paper's 7.2): the
        gradient reaches the neurons of a token through its own query only, and never the synapse
        state it writes.
    One-token generation, `step`, with its settings `compiled_step` and `sparse_below`, comes from
    `BDHGeneration` (bdh_generation.py).
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
        self.detach_kv: bool = False
        self._decay_on: dict[tuple[torch.device, torch.dtype], Tensor] = {}
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
        x_sparse=..., q=rope(x_sparse), y_sparse=..., xy=x_sparse * y_sparse), those four
        (nh, B, C, N): the tensors the layer computed, xy before dropout, so that analysis tools
        read them instead of recomputing them.
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
        phasors = rope_phasors(c.rope_ladders, c.rope_theta, start, idx.shape[1], idx.device)
        return layer_norm(self.embed(idx)).unsqueeze(0), phasors

    def _layer(
        self, x: Tensor, phasors: Tensor, rho: Tensor | None, observe: Callable[..., None] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        # Inside a layer heads come first, (nh, B, T, .): the products with Dx, Dy and E are then
        # batched matmuls over heads, and no tensor of neurons is ever transposed.
        c = self.config
        _, B, T, d = x.shape  # (1, B, T, d)
        # x is shared by the heads: expanded to (nh, B T, d) the product is one batched matmul that
        # writes (nh, B T, N) directly; (B T, d) @ (nh, d, N) would compute it transposed and copy it.
        x_heads = x.view(1, B * T, d).expand(c.n_head, -1, -1)
        x_sparse = self.fire_x((x_heads @ self.encoder_x).view(c.n_head, B, T, -1))  # (nh, B, T, N)
        q = rope(x_sparse, phasors)
        a = self._attend(q, x)  # (nh, B, T, d), causal, diagonal excluded
        if rho is not None:
            rho = rho.transpose(0, 1)  # (nh, B, N, d)
            keys, values = (q.detach(), x.detach()) if self.detach_kv else (q, x)
            decay = self.decay_factors(x.device)
            if decay is None:
                a = a + q @ rho  # read before write
                rho = rho + keys.mT @ values  # Hebbian update
            else:
                reads, writes, fade = decay_weights(decay, T)  # (nh, 1, T, 1), (nh, 1, T, 1), (nh, 1, 1, 1)
                a = a + (q * reads.to(q.dtype)) @ rho
                rho = rho * fade + (keys * writes.to(keys.dtype)).mT @ values
            rho = rho.transpose(0, 1).contiguous()  # (B, nh, N, d)
        y_current = (layer_norm(a).view(c.n_head, B * T, d) @ self.encoder_y).view_as(x_sparse)
        xy = self.fire_xy(x_sparse, y_current)
        if observe is not None:
            observe(residual=x, x_sparse=x_sparse, q=q, y_sparse=F.relu(y_current), xy=xy)
        y = (self._drop_neurons(xy).view(c.n_head, B * T, -1) @ self.decoder.view(c.n_head, -1, d)).sum(0)  # (B T, d)
        return layer_norm(x + layer_norm(y.view_as(x))), rho

    def _drop_neurons(self, xy: Tensor) -> Tensor:
        """Dropout on xy (nh, B, T, N); locked, one mask (nh, B, 1, N) silences a neuron for a whole sequence.

        A locked mask holds T times fewer random draws than a mask per token, which keeps the
        regulariser's cost small beside the layer's matmuls."""
        p = self.config.dropout
        if not (self.config.locked_dropout and self.training and p > 0.0):
            return self.drop(xy)
        keep = torch.empty_like(xy[:, :, :1]).bernoulli_(1.0 - p)
        return xy * keep / (1.0 - p)

    def fire_x(self, current: Tensor) -> Tensor:
        """The x neurons of every head, x_sparse = relu(x Dx), from their input x Dx (nh, B, T, N)."""
        return F.relu(current)

    def fire_xy(self, x_sparse: Tensor, y_current: Tensor) -> Tensor:
        """The products x_sparse * y_sparse, y_sparse = relu(layernorm(a) Dy), from y_current = layernorm(a) Dy."""
        return x_sparse * F.relu(y_current)

    def decay_factors(self, device: torch.device | str) -> Tensor | None:
        """`state_decay` as a tensor (nh, 1) on device, which broadcasts over (nh, B); None without it.

        In float32, or float64 for a model in float64, whatever the precision of the products."""
        if self.config.state_decay is None:
            return None
        key = (torch.device(device), torch.promote_types(self.readout.dtype, torch.float32))
        if key not in self._decay_on:
            self._decay_on[key] = torch.tensor(self.config.state_decay, dtype=key[1], device=key[0]).view(-1, 1)
        return self._decay_on[key]

    def _attend(self, q: Tensor, x: Tensor) -> Tensor:
        if q.shape[-2] == 1:
            return q.new_zeros(q.shape[:-1] + x.shape[-1:])  # a lone token sees only the state
        decay = self.decay_factors(q.device)
        if self.attention == "naive":
            if self.detach_kv:
                return causal_linear_attention_detached_reference(q, x, decay)
            return causal_linear_attention_reference(q, x, decay)
        if self.attention != "chunked":
            raise ConfigError(f"attention must be 'chunked' or 'naive', got {self.attention!r}")
        return causal_linear_attention(q, x, self.chunk_size, self.detach_kv, decay)
