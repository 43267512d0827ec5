"""BDH's generation fast path: the recurrent form for one token, written for latency.

`BDH.forward_recurrent` on a chunk of one token gives the same logits, but builds a new synapse
state per layer and token. The step here reads and writes each synapse matrix rho in place, keeps
the weights rearranged for one-token products between tokens, and, for one sequence, touches
only the rows of rho, Dy and E that belong to active neurons when few neurons fire. `BDH`
inherits it as a mixin, so this module imports bdh.py for type checking only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from synaptorch.models.layers import layer_norm, rope, rope_phasors

if TYPE_CHECKING:
    from synaptorch.models.bdh import BDHState

# One-token generation touches only the active neurons of a layer whose share of firing neurons is
# below SPARSE_BELOW, once the layer's synapse state holds SPARSE_MIN_SYNAPSES or more; smaller
# states are read faster whole. Both measured on the CPU by benchmarks/sparsity.py. Choosing the
# path reads the layer's count of firing neurons on the host, which on a GPU waits for the device
# at every layer, so there the default is the dense path.
SPARSE_BELOW = 0.2
SPARSE_MIN_SYNAPSES = 2**21
GPU_DEVICE_TYPES = ("cuda", "mps", "xpu")

PHASOR_BLOCK = 1024  # positions per table of `_phasors_at`


def _generation_layers(
    x: Tensor,
    phasors: Tensor,
    rhos: list[Tensor],
    encoder_x: Tensor,
    encoder_y: Tensor,
    decoder: Tensor,
    decay: Tensor | None = None,
) -> Tensor:
    """The layers for one token: x (B, d) -> x (B, d); each synapse state rho is updated in place,
    after fading by decay (1, nh, 1, 1) when given."""
    B = x.shape[0]
    n_head, n_neuron = rhos[0].shape[1:3]
    for rho in rhos:
        x_sparse = F.relu(x @ encoder_x)  # (B, nh N)
        q = rope(x_sparse, phasors).view(B, n_head, n_neuron, 1)
        if torch.compiler.is_compiling():
            # As elementwise products, the read and the write compile into loops over rho alone.
            a = (q * rho).sum(-2, keepdim=True)  # (B, nh, 1, d), read before write
            if decay is not None:
                rho.mul_(decay)
            rho.add_(q * x[:, None, None, :])
        else:
            a = q.mT @ rho
            if decay is not None:
                rho.mul_(decay)
            x_per_head = x[:, None, None, :].expand(B, n_head, 1, -1)
            rho.view(-1, n_neuron, x.shape[-1]).baddbmm_(q.view(-1, n_neuron, 1), x_per_head.flatten(0, 1))
        y_sparse = F.relu(layer_norm(a) @ encoder_y).view(B, -1)  # (B, nh N)
        x = layer_norm(x + layer_norm((x_sparse * y_sparse) @ decoder))
    return x


def _generation_step(
    token: Tensor, phasors: Tensor, rhos: list[Tensor], embed: Tensor, *weights: Tensor, decay: Tensor | None = None
) -> Tensor:
    """One token (B,) -> logits (B, V), the synapse states updated in place; weights: Dx, Dy, E, readout."""
    *layer_weights, readout = weights
    x = layer_norm(F.embedding(token, embed))
    return _generation_layers(x, phasors, rhos, *layer_weights, decay=decay) @ readout


class BDHGeneration:
    """The one-token `step` of BDH, mixed into the model: it reads BDH's config and weights.

    compiled_step: whether `step` runs compiled; `compile_step()` turns it on.
    sparse_below: in `step` with one sequence, a layer whose share of firing neurons is below this
        touches only the active neurons; 0 turns it off. Unless set, it is 0.2 for models whose
        synapse state per layer holds at least 2**21 numbers, and 0 for smaller ones and for models
        whose parameters are on a GPU when the step runs, as the choice syncs with the host at
        every layer.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.compiled_step = False
        self._sparse_below: float | None = None  # None: the default of the model's size and device
        self._compiled_steps: dict[str, Callable[..., Tensor]] = {}  # per device type
        self._phasor_table: tuple = (None, None)
        self._rearranged_weights: dict = {}

    @property
    def sparse_below(self) -> float:
        if self._sparse_below is not None:
            return self._sparse_below
        c = self.config
        large = c.n_head * c.n_neuron * c.n_embd >= SPARSE_MIN_SYNAPSES
        return SPARSE_BELOW if large and self.readout.device.type not in GPU_DEVICE_TYPES else 0.0

    @sparse_below.setter
    def sparse_below(self, value: float) -> None:
        self._sparse_below = value

    @torch.no_grad()
    def step(self, token: Tensor, state: BDHState) -> tuple[Tensor, BDHState]:
        """One token of generation: token (B,) -> logits (B, V); `state` is updated in place.

        The recurrent form for a single token: each synapse matrix is read and written in place.
        With one sequence, a layer whose neurons fire sparsely enough (`sparse_below`, off by
        default on a GPU) touches only the rows of rho, Dy and E that belong to active neurons,
        unless the state fades (`state_decay`), which touches all of it. `compile_step` compiles
        the dense path.
        """
        phasors = self._phasors_at(state.position, token.device)
        weights = (self._encoder_x_flat(), self.encoder_y, self.decoder)
        state.position += 1
        sparse_below = self.sparse_below
        decay = self.decay_factors(token.device)
        if token.shape[0] > 1 or sparse_below <= 0 or decay is not None:
            step = self._compiled_for(token.device) if self.compiled_step else _generation_step
            decay = None if decay is None else decay.view(1, -1, 1, 1).to(state.rho[0].dtype)
            return step(token, phasors, state.rho, self.embed.weight, *weights, self.readout, decay=decay), state
        x = layer_norm(self.embed(token))  # (1, d)
        for rho in state.rho:
            x_sparse = F.relu(x @ weights[0])  # (1, nh N)
            if torch.count_nonzero(x_sparse).item() < sparse_below * x_sparse.numel():
                y = self._sparse_neurons(x[0], x_sparse[0], rope(x_sparse, phasors)[0], rho[0])[None]
                x = layer_norm(x + layer_norm(y))
            else:
                x = _generation_layers(x, phasors, [rho], *weights)
        return x @ self.readout, state

    def compile_step(self, enabled: bool = True) -> None:
        """Run the dense path of `step` compiled (a one-off cost of seconds at the next token), or eager again."""
        self.compiled_step = enabled

    def _compiled_for(self, device: torch.device) -> Callable[..., Tensor]:
        """The dense step compiled for tokens on `device`, compiled once per device type.

        On the CPU, the C++ wrapper of the compiled code spares most of the Python overhead of
        such a small step; on a GPU the time goes to kernel launches, which it does not save, for
        a build against the GPU toolkit.
        """
        if device.type not in self._compiled_steps:
            options = {"cpp_wrapper": True} if device.type == "cpu" else None
            self._compiled_steps[device.type] = torch.compile(_generation_step, dynamic=False, options=options)
        return self._compiled_steps[device.type]

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

    def _rearranged(self, name: str, weight: Tensor, rearrange: Callable[[Tensor], Tensor]) -> Tensor:
        """rearrange(weight), kept under name between generated tokens until the weight changes."""
        if torch.is_grad_enabled():
            return rearrange(weight)
        version = (weight.data_ptr(), weight._version)
        cached = self._rearranged_weights.get(name)
        if cached is None or cached[0] != version:
            cached = (version, rearrange(weight.detach()).contiguous())
            self._rearranged_weights[name] = cached
        return cached[1]

    def _phasors_at(self, position: int, device: torch.device | str) -> Tensor:
        """RoPE phasors (1, nh N/2) of one position, heads side by side, from a table of PHASOR_BLOCK positions."""
        block, offset = divmod(position, PHASOR_BLOCK)
        key = (block, str(device))
        if self._phasor_table[0] != key:
            c = self.config
            phasors = rope_phasors(c.rope_ladders, c.rope_theta, block * PHASOR_BLOCK, PHASOR_BLOCK, device)
            self._phasor_table = (key, phasors.repeat(1, c.n_head))
        return self._phasor_table[1][offset : offset + 1]
