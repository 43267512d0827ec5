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

Work driven by spikes: a spike of an x neuron reads its row of the synapse state rho and writes it
(d operations each), a spike of an xy neuron adds its row of the decoder E (d operations). The
ReLU model does those as 3 * n_head * N * d multiply-accumulates per layer and token. The encoders
Dx and Dy and the read-out take analog inputs and stay multiply-accumulates in both models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from synaptorch.errors import ConfigError, DataError
from synaptorch.models.base import LanguageModel
from synaptorch.models.bdh import BDH, BDHConfig, layer_norm, rope
from synaptorch.neurons.lif import LIFState, lif_step
from synaptorch.neurons.parameters import LIFParameters
from synaptorch.train.trainer import BatchSampler, eval_window_starts

POPULATIONS = ("x", "xy")


def integrate_and_fire(current: Tensor, steps: int, v_init: float = 0.5, surrogate: str = "superspike") -> Tensor:
    """Spike counts of IF neurons (threshold 1, reset by subtraction) held at `current` for `steps` steps.

    Starting the membrane at v_init = 0.5 rounds the rate to the nearest of the T levels instead of
    flooring it. Differentiable through the surrogate gradient of each step.
    """
    p = LIFParameters(beta=1.0, threshold=1.0, reset="subtract", surrogate=surrogate)
    state = LIFState(torch.full_like(current, v_init), torch.zeros_like(current))
    counts = torch.zeros_like(current)
    for _ in range(steps):
        spikes, state = lif_step(current, state, p)
        counts = counts + spikes
    return counts


class SpikingBDH(BDH):
    """A BDH whose neurons spike. steps = 0 runs the ReLU neurons, which gives the BDH it came from.

    steps: time steps per token. thresholds (2, n_head): per population (x, xy) and head, set by
    `calibrate`. Not a checkpoint format of its own: build it from a BDH with `from_relu`.
    """

    def __init__(self, config: BDHConfig, steps: int = 16, v_init: float = 0.5, surrogate: str = "superspike") -> None:
        super().__init__(config)
        self.steps, self.v_init, self.surrogate = steps, v_init, surrogate
        self.register_buffer("thresholds", torch.ones(len(POPULATIONS), config.n_head), persistent=False)

    @classmethod
    def from_relu(cls, model: BDH, steps: int = 16, v_init: float = 0.5) -> SpikingBDH:
        spiking = cls(model.config, steps, v_init).to(model.readout.device)
        spiking.load_state_dict(model.state_dict())
        spiking.attention, spiking.chunk_size = model.attention, model.chunk_size
        return spiking.train(model.training)

    # One token at a time goes through the layers of this class, not BDH's ReLU generation step.
    step = LanguageModel.step

    def forward(self, idx: Tensor, observe: Callable[..., None] | None = None) -> Tensor:
        """idx (B, T) -> logits (B, T, V). observe, when given, is called at every layer as
        observe(layer, residual=, x_sparse=, q=, xy=, x_spikes=, xy_spikes=): the rates of the two
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

        steps, self.steps = self.steps, 0
        try:
            self.forward(idx, record)
        finally:
            self.steps = steps
        for p, population in enumerate(POPULATIONS):
            for h, head in enumerate(torch.stack(activations[population], 1)):  # (nh, L, B, T, N)
                positive = head[head > 0]
                if positive.numel() == 0:
                    raise DataError(f"no {population} neuron of head {h} fires on the calibration text")
                rank = max(1, round(percentile / 100 * positive.numel()))
                self.thresholds[p, h] = positive.kthvalue(rank).values
        return self.thresholds.clone()

    def _fire(self, current: Tensor, population: int) -> tuple[Tensor, Tensor | None]:
        """Input current (nh, B, T, N) -> (rates in the units of the ReLU, spike counts)."""
        if self.steps == 0:
            return F.relu(current), None
        threshold = self.thresholds[population].view(-1, 1, 1, 1)
        counts = integrate_and_fire(current / threshold, self.steps, self.v_init, self.surrogate)
        return counts * (threshold / self.steps), counts

    def _layer(
        self, x: Tensor, phasors: Tensor, rho: Tensor | None, observe: Callable[..., None] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """BDH's layer with its two neuron populations spiking."""
        c = self.config
        _, B, T, d = x.shape  # (1, B, T, d)
        x_current = (x.view(B * T, d) @ self._encoder_x_flat()).view(B * T, c.n_head, -1)
        x_current = x_current.transpose(0, 1).contiguous().view(c.n_head, B, T, -1)  # (nh, B, T, N)
        x_rate, x_spikes = self._fire(x_current, 0)
        q = rope(x_rate, phasors)
        a = self._attend(q, x)  # (nh, B, T, d)
        if rho is not None:
            rho = rho.transpose(0, 1)
            a = a + q @ rho
            rho = (rho + q.mT @ x).transpose(0, 1).contiguous()
        y_current = (layer_norm(a).view(c.n_head, B * T, d) @ self.encoder_y).view_as(x_rate)
        xy_rate, xy_spikes = self._fire(x_rate * y_current, 1)
        if observe is not None:
            observe(residual=x, x_sparse=x_rate, q=q, xy=xy_rate, x_spikes=x_spikes, xy_spikes=xy_spikes)
        y = (self.drop(xy_rate).view(c.n_head, B * T, -1) @ self.decoder.view(c.n_head, -1, d)).sum(0)
        return layer_norm(x + layer_norm(y.view_as(x))), rho


@dataclass
class SpikingResult:
    """How a spiking run over `tokens` positions compares with the ReLU model. Per-token figures
    are means over positions; operations count one layer pass of every layer."""

    steps: int
    loss: float  # nats per token on the data
    accuracy: float  # next-token accuracy on the data
    agreement: float  # share of positions where the spiking and ReLU models predict the same token
    kl: float  # KL(ReLU model || spiking model), nats per token
    spikes_per_token: float
    synaptic_ops_per_token: float  # accumulates driven by spikes
    tokens: int


@dataclass
class ReLUResult:
    loss: float
    accuracy: float
    active_per_token: float  # x and xy neurons with a non-zero activation
    macs_per_token: float  # dense multiply-accumulates of the synapses spikes replace
    active_macs_per_token: float  # the same, touching only the active neurons
    analog_macs_per_token: float  # Dx, Dy and the read-out: multiply-accumulates in both models
    tokens: int


def parse_time_steps(text: str) -> list[int]:
    """ "1,2,4" -> [1, 2, 4]."""
    try:
        steps = [int(t) for t in text.split(",")]
    except ValueError:
        raise ConfigError(f"time steps are comma-separated integers, got {text!r}") from None
    check_time_steps(steps)
    return steps


def check_time_steps(steps: Sequence[int]) -> None:
    if not steps or any(t < 1 for t in steps):
        raise ConfigError(f"time steps must be positive integers, got {list(steps)}")


def convert(model: BDH, calibration: np.ndarray, block_size: int = 128, percentile: float = 99.9) -> SpikingBDH:
    """A spiking copy of `model`, its thresholds calibrated on windows of the `calibration` tokens."""
    n_windows = len(calibration) // block_size
    if n_windows < 1:
        raise DataError(f"need at least {block_size} calibration tokens, have {len(calibration)}")
    spiking = SpikingBDH.from_relu(model).eval()
    windows = torch.from_numpy(calibration[: n_windows * block_size].astype(np.int64)).view(n_windows, block_size)
    spiking.calibrate(windows.to(model.readout.device), percentile)
    return spiking


def finetune_spiking(
    spiking: SpikingBDH,
    tokens: np.ndarray,
    iterations: int,
    steps: int = 4,
    block_size: int = 128,
    batch_size: int = 8,
    lr: float = 3e-4,
    seed: int = 0,
) -> list[float]:
    """Train the weights with the IF neurons in the loop, `steps` time steps per token: spikes
    forward, surrogate gradients backward; the thresholds stay as calibrated. Returns the losses."""
    if iterations < 0 or steps < 1 or lr <= 0:
        raise ConfigError("fine-tuning needs iterations >= 0, steps >= 1 and a positive learning rate")
    device = spiking.readout.device
    sampler = BatchSampler(tokens, block_size, batch_size, seed)
    optimizer = torch.optim.AdamW(spiking.parameters(), lr=lr, weight_decay=0.0)
    spiking.steps = steps
    spiking.train()
    losses = []
    for _ in range(iterations):
        inputs, targets = sampler.next()
        logits = spiking(inputs.to(device))
        loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(spiking.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    spiking.eval()
    return losses


@torch.no_grad()
def evaluate_spiking(
    reference: BDH,
    spiking: SpikingBDH,
    tokens: np.ndarray,
    steps: Sequence[int],
    block_size: int = 128,
    batch_size: int = 16,
    max_tokens: int = 0,
) -> tuple[ReLUResult, list[SpikingResult]]:
    """Run the ReLU model `reference` and `spiking` with T steps per token, for each T in `steps`,
    over the same windows of `tokens`."""
    check_time_steps(steps)
    if block_size < 1 or batch_size < 1 or max_tokens < 0:
        raise ConfigError("block size and batch size must be positive, max tokens >= 0")
    device = reference.readout.device
    relu_model = SpikingBDH.from_relu(reference, steps=0).eval()  # the reference, with its activations observed
    spiking.eval()

    c = reference.config
    neurons, d = c.n_head * c.n_neuron, c.n_embd
    sums = {"relu": np.zeros(4)} | {t: np.zeros(6) for t in steps}
    n_tokens = 0
    counted = np.zeros(2)  # x and xy neurons: active ones in the ReLU model, spikes in the spiking one

    def count_active(layer: int, x_sparse: Tensor, xy: Tensor, **_) -> None:
        counted[:] += ((x_sparse > 0).sum().item(), (xy > 0).sum().item())

    def count_spikes(layer: int, x_spikes: Tensor, xy_spikes: Tensor, **_) -> None:
        counted[:] += (x_spikes.sum().item(), xy_spikes.sum().item())

    starts = eval_window_starts(len(tokens), block_size, max_tokens)
    for i in range(0, len(starts), batch_size):
        rows = [tokens[s : s + block_size + 1].astype(np.int64) for s in starts[i : i + batch_size]]
        batch = torch.from_numpy(np.stack(rows)).to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:].flatten()
        n_tokens += targets.numel()

        counted[:] = 0
        relu_logits = relu_model(inputs, count_active).flatten(0, 1)
        relu_logp = F.log_softmax(relu_logits.float(), -1)
        relu_top = relu_logits.argmax(-1)
        sums["relu"] += (
            F.nll_loss(relu_logp, targets, reduction="sum").item(),
            (relu_top == targets).sum().item(),
            counted.sum(),
            d * (2 * counted[0] + counted[1]),
        )
        for t in steps:
            spiking.steps = t
            counted[:] = 0
            logp = F.log_softmax(spiking(inputs, count_spikes).flatten(0, 1).float(), -1)
            sums[t] += (
                F.nll_loss(logp, targets, reduction="sum").item(),
                (logp.argmax(-1) == targets).sum().item(),
                (logp.argmax(-1) == relu_top).sum().item(),
                F.kl_div(logp, relu_logp, log_target=True, reduction="sum").item(),
                counted.sum(),
                d * (2 * counted[0] + counted[1]),
            )

    relu = (sums["relu"] / n_tokens).tolist()
    relu_result = ReLUResult(
        loss=relu[0],
        accuracy=relu[1],
        active_per_token=relu[2],
        macs_per_token=float(3 * neurons * d * c.n_layer),
        active_macs_per_token=relu[3],
        analog_macs_per_token=float(2 * neurons * d * c.n_layer + d * c.vocab_size),
        tokens=n_tokens,
    )
    results = []
    for t in steps:
        loss, accuracy, agreement, kl, spikes, ops = (sums[t] / n_tokens).tolist()
        results.append(SpikingResult(t, loss, accuracy, agreement, kl, spikes, ops, n_tokens))
    return relu_result, results


def as_records(relu: ReLUResult, results: list[SpikingResult]) -> dict:
    """Both results as plain numbers, rounded for printing."""

    def rounded(record: dict) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()}

    return {"relu": rounded(asdict(relu)), "spiking": [rounded(asdict(r)) for r in results]}
