"""BDH run with integrate-and-fire neurons: each ReLU neuron becomes a spiking one, rate coded.

For every token, each neuron population integrates a constant input current for T time steps
(non-leaky integrate-and-fire, reset by subtraction, membrane starting at half the threshold) and
passes on its firing rate: threshold * spikes / T. That is ReLU quantised to T levels and clipped
at the threshold, so the spiking model approaches the ReLU model as T grows.

BDH has two neuron populations per head and layer:
    x neurons    x_sparse = relu(x Dx)              -> IF neurons driven by x Dx
    xy neurons   x_sparse * relu(layernorm(a) Dy)   -> IF neurons driven by x_rate * (layernorm(a) Dy)
The product of a positive x_sparse with a ReLU equals the ReLU of the product, so the second
population is one spiking neuron per pair whose input is gated by the x neuron's rate. Layer
norms, the residual stream and the read-out stay analog; the populations run layer after layer,
each reading the rates of the one before.

Thresholds are calibrated on the ReLU model (a percentile of its positive activations per head and
population, shared by the layers as their weights are), which keeps the rare large activations
from setting a scale that the common small ones cannot reach in few steps.

Gradients, for training with the spikes in the loop (`gradient`):
    surrogate     through every one of the T steps, each spike with a surrogate derivative
    equilibrium   through the rate IF neurons tend to, a* = clamp(I / threshold, 0, 1) (SpikingBERT,
                  Bal and Sengupta; neurons/equilibrium.py), while the forward pass runs the spikes.
                  Within a token no population feeds back into its own current: the attention
                  reads earlier tokens only, its diagonal excluded, and the xy neurons read the x
                  rates of the layer, which do not read them. So each a* is a function of its
                  input alone and plain backpropagation through it is exact; no fixed point is
                  solved, and the spike counts come from their closed form, no step loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from synaptorch.errors import ConfigError, DataError
from synaptorch.models.base import LanguageModel
from synaptorch.models.bdh import BDH, BDHConfig
from synaptorch.neurons.equilibrium import equilibrium_gradient, equilibrium_rate
from synaptorch.neurons.lif import LIFState, lif_step
from synaptorch.neurons.parameters import LIFParameters

POPULATIONS = ("x", "xy")
GRADIENTS = ("surrogate", "equilibrium")


def integrate_and_fire(current: Tensor, steps: int, v_init: float = 0.5, surrogate: str = "superspike") -> Tensor:
    """Spike counts of IF neurons (threshold 1, reset by subtraction) held at `current` for `steps` steps.

    Starting the membrane at v_init = 0.5 rounds the rate to the nearest of the T levels instead of
    flooring it. Differentiable through the surrogate gradient of each step.
    """
    if not (torch.is_grad_enabled() and current.requires_grad):
        # A constant input fires once each time v_init + t * current passes an integer, at most once
        # per step: the count has a closed form, equal to the step loop except where T * current +
        # v_init is an exact integer and float rounding decides either way.
        return (torch.ceil(steps * current + v_init) - 1).clamp(0, steps)
    p = LIFParameters(beta=1.0, threshold=1.0, reset="subtract", surrogate=surrogate)
    state = LIFState(torch.full_like(current, v_init), torch.zeros_like(current))
    counts = torch.zeros_like(current)
    for _ in range(steps):
        spikes, state = lif_step(current, state, p)
        counts = counts + spikes
    return counts


def _silent_without_gradient(rates: Tensor, dims: tuple[int, ...]) -> Tensor:
    """`rates` with no gradient where all of them along `dims` are 0.

    A layer norm of an exact 0 jumps with the direction of its input, and its derivative there is
    1 / sqrt(eps). Where the spikes leave a group at 0, the surrogate and equilibrium gradients of
    the silent neurons would pass that on, compounding over the layers (at T = 1 to float32
    overflow); the ReLU model gives silent neurons no gradient at all.
    """
    if not rates.requires_grad:
        return rates
    silent = (rates.detach() == 0).all(dim=dims[0], keepdim=True)
    for dim in dims[1:]:
        silent = silent.all(dim=dim, keepdim=True)
    return torch.where(silent, rates.detach(), rates)


def check_gradient(gradient: str) -> None:
    if gradient not in GRADIENTS:
        raise ConfigError(f"the gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")


class SpikingBDH(BDH):
    """A BDH whose neurons spike. steps = 0 runs the ReLU neurons, which gives the BDH it came from.

    steps: time steps per token. thresholds (2, n_head): per population (x, xy) and head, set by
    `calibrate`. gradient: "surrogate" or "equilibrium", how training differentiates the spikes.
    Not a checkpoint format of its own: build it from a BDH with `from_relu`.
    """

    def __init__(
        self,
        config: BDHConfig,
        steps: int = 16,
        v_init: float = 0.5,
        surrogate: str = "superspike",
        gradient: str = "surrogate",
    ) -> None:
        if not 0 <= v_init <= 1:
            raise ConfigError(f"the starting membrane must be in [0, 1] of the threshold, got {v_init}")
        check_gradient(gradient)
        super().__init__(config)
        self.steps, self.v_init, self.surrogate, self.gradient = steps, v_init, surrogate, gradient
        self.register_buffer("thresholds", torch.ones(len(POPULATIONS), config.n_head), persistent=False)

    @classmethod
    def from_relu(cls, model: BDH, steps: int = 16, v_init: float = 0.5, surrogate: str = "superspike") -> SpikingBDH:
        spiking = cls(model.config, steps, v_init, surrogate).to(model.readout.device, model.readout.dtype)
        spiking.load_state_dict(model.state_dict())
        spiking.attention, spiking.chunk_size = model.attention, model.chunk_size
        return spiking.train(model.training)

    # One token at a time goes through the layers of this class, not BDH's ReLU generation step.
    step = LanguageModel.step

    def forward(self, idx: Tensor, observe: Callable[..., None] | None = None) -> Tensor:
        """idx (B, T) -> logits (B, T, V). observe, when given, is called at every layer as
        observe(layer, residual=, x_sparse=, q=, y_sparse=, xy=, x_spikes=, xy_spikes=): the rates of the two
        populations (nh, B, T, N) in the units of the ReLU model and their spike counts (None at
        steps = 0, where the rates are the ReLU activations)."""
        x, phasors = self._inputs(idx, start=0)
        for layer in range(self.config.n_layer):
            x, _ = self._layer(x, phasors, None, None if observe is None else functools.partial(observe, layer))
        return x.squeeze(0) @ self.readout

    @torch.no_grad()
    def calibrate(self, idx: Tensor, percentile: float = 99.9) -> Tensor:
        """Set the thresholds to a percentile of the ReLU model's positive activations over idx (B, T)."""
        if not 0 < percentile <= 100:
            raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
        activations: dict[str, list[Tensor]] = {population: [] for population in POPULATIONS}

        def record(layer: int, x_sparse: Tensor, xy: Tensor, **_) -> None:
            activations["x"].append(x_sparse)
            activations["xy"].append(xy)

        steps, training = self.steps, self.training
        self.steps = 0
        self.eval()  # dropout would change the activations the thresholds come from
        try:
            self.forward(idx, record)
        finally:
            self.steps = steps
            self.train(training)
        for p, population in enumerate(POPULATIONS):
            for h, head in enumerate(torch.stack(activations[population], 1)):  # (nh, L, B, T, N)
                positive = head[head > 0]
                if positive.numel() == 0:
                    raise DataError(f"no {population} neuron of head {h} fires on the calibration text")
                rank = max(1, round(percentile / 100 * positive.numel()))
                self.thresholds[p, h] = positive.kthvalue(rank).values
        return self.thresholds.clone()

    def _layer(
        self, x: Tensor, phasors: Tensor, rho: Tensor | None, observe: Callable[..., None] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """BDH's layer, whose observer also sees the spike counts of the two populations."""
        if observe is not None:
            observe = functools.partial(self._observe_spikes, observe)
        return super()._layer(x, phasors, rho, observe)

    def _observe_spikes(self, observe: Callable[..., None], x_sparse: Tensor, xy: Tensor, **seen: Tensor) -> None:
        # seen holds y_sparse = relu(layernorm(a) Dy) as in BDH: analog here, it gates the xy neurons.
        observe(x_sparse=x_sparse, xy=xy, x_spikes=self._spikes(x_sparse, 0), xy_spikes=self._spikes(xy, 1), **seen)

    def fire_x(self, current: Tensor) -> Tensor:
        """x neurons: IF neurons driven by x Dx (nh, B, T, N); their rates in the units of the ReLU."""
        return self._fire(current, 0)

    def fire_xy(self, x_sparse: Tensor, y_current: Tensor) -> Tensor:
        """xy neurons: one IF neuron per pair, driven by x's rate times layernorm(a) Dy; their rates."""
        # No xy spike of any head at a token: the layer adds layernorm(0) (see `_attend`).
        return _silent_without_gradient(self._fire(x_sparse * y_current, 1), (0, -1))

    def _attend(self, q: Tensor, x: Tensor) -> Tensor:
        # Few spikes often share no active x neuron with any earlier token, and then a head's
        # attention a (nh, B, T, d) is exactly 0 at that token.
        return _silent_without_gradient(super()._attend(q, x), (-1,))

    def equilibrium(self, current: Tensor, population: int) -> Tensor:
        """The rates (nh, B, T, N) the neurons of a population tend to as T grows, in the units of
        the ReLU: threshold * clamp(current / threshold, 0, 1)."""
        threshold = self.thresholds[population].view(-1, 1, 1, 1)
        return threshold * equilibrium_rate(current, threshold)

    def _fire(self, current: Tensor, population: int) -> Tensor:
        """Input current (nh, B, T, N) -> rates in the units of the ReLU: threshold * spikes / T."""
        if self.steps == 0:
            return F.relu(current)
        threshold = self.thresholds[population].view(-1, 1, 1, 1)
        scaled = current / threshold
        if self.gradient == "equilibrium" and scaled.requires_grad and torch.is_grad_enabled():
            counts = integrate_and_fire(scaled.detach(), self.steps, self.v_init)
            return threshold * equilibrium_gradient(counts / self.steps, scaled)
        counts = integrate_and_fire(scaled, self.steps, self.v_init, self.surrogate)
        return counts * (threshold / self.steps)

    def _spikes(self, rate: Tensor, population: int) -> Tensor | None:
        """The spike counts behind the rates of a population, None for ReLU neurons (steps = 0).

        A rate is count * (threshold / T) for an integer count of at most T. In float32 the division
        returns the count to within two roundings, 2.4e-7 of it, which rounding to the nearest
        integer undoes for any T below two million.
        """
        if self.steps == 0:
            return None
        threshold = self.thresholds[population].view(-1, 1, 1, 1)
        return torch.round(rate / (threshold / self.steps))
