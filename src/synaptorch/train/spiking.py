"""Spiking BDH in use: conversion of a trained BDH, fine-tuning with the spikes in the loop, and
evaluation against the ReLU model it came from (agreement, loss, spikes and synaptic operations
per token against T).

Work driven by spikes: RoPE turns each pair of x neurons (2k, 2k + 1) together, so a spike of an x
neuron reaches two rows of q, reads those two rows of the synapse state rho and writes them (4d
operations; 2d would do where the rotation is trivial, as at position 0, which is not discounted);
a spike of an xy neuron adds its row of the decoder E (d operations). The ReLU model does those as
3 * n_head * N * d multiply-accumulates per layer and token, or, touching only what is active, d
per non-zero entry of q for the read and again for the write, and d per active xy neuron. The
encoders Dx and Dy and the read-out take analog inputs and stay multiply-accumulates in both
models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from synaptorch.errors import ConfigError, DataError
from synaptorch.models.bdh import BDH
from synaptorch.models.spiking_bdh import SpikingBDH
from synaptorch.train.trainer import BatchSampler, eval_windows


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


MAX_TIME_STEPS = 4096


def check_time_steps(steps: Sequence[int]) -> None:
    if not steps or any(not 1 <= t <= MAX_TIME_STEPS for t in steps):
        raise ConfigError(f"time steps must be integers from 1 to {MAX_TIME_STEPS}, got {list(steps)}")
    if len(set(steps)) != len(steps):
        raise ConfigError(f"each number of time steps once, got {list(steps)}")


def convert(model: BDH, calibration: np.ndarray, block_size: int = 128, percentile: float = 99.9) -> SpikingBDH:
    """A spiking copy of `model`, its thresholds calibrated on windows of the `calibration` tokens."""
    if block_size < 1:
        raise ConfigError(f"the block size must be positive, got {block_size}")
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
    if iterations < 0 or not 1 <= steps <= MAX_TIME_STEPS or not lr > 0 or block_size < 1 or batch_size < 1:
        raise ConfigError(
            f"fine-tuning needs iterations >= 0, 1 to {MAX_TIME_STEPS} steps, a positive learning rate, "
            "and positive block and batch sizes"
        )
    if iterations and len(tokens) <= block_size:
        raise DataError(f"fine-tuning needs more than {block_size} tokens, have {len(tokens)}")
    device = spiking.readout.device
    sampler = BatchSampler(tokens, block_size, batch_size, seed)
    optimizer = torch.optim.AdamW(spiking.parameters(), lr=lr, weight_decay=0.0)
    saved_steps, training = spiking.steps, spiking.training
    spiking.steps = steps
    spiking.train()
    losses = []
    try:
        for _ in range(iterations):
            inputs, targets = sampler.next()
            logits = spiking(inputs.to(device))
            loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(spiking.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
    finally:
        spiking.steps = saved_steps
        spiking.train(training)
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
    saved_steps, training = spiking.steps, spiking.training
    spiking.eval()

    c = reference.config
    neurons, d = c.n_head * c.n_neuron, c.n_embd
    sums = {"relu": np.zeros(4)} | {t: np.zeros(6) for t in steps}
    n_tokens = 0
    # The ReLU model: active x and xy neurons and non-zero entries of q; the spiking one: x and xy spikes.
    counted = np.zeros(3)

    def count_active(layer: int, x_sparse: Tensor, q: Tensor, xy: Tensor, **_) -> None:
        counted[:] += ((x_sparse > 0).sum().item(), (xy > 0).sum().item(), (q != 0).sum().item())

    def count_spikes(layer: int, x_spikes: Tensor, xy_spikes: Tensor, **_) -> None:
        counted[:2] += (x_spikes.sum().item(), xy_spikes.sum().item())

    try:
        for _, batch in eval_windows(tokens, block_size, batch_size, max_tokens):
            batch = batch.to(device)
            inputs, targets = batch[:, :-1], batch[:, 1:].flatten()
            n_tokens += targets.numel()

            counted[:] = 0
            relu_logits = relu_model(inputs, count_active).flatten(0, 1)
            relu_logp = F.log_softmax(relu_logits.float(), -1)
            relu_top = relu_logits.argmax(-1)
            sums["relu"] += (
                F.nll_loss(relu_logp, targets, reduction="sum").item(),
                (relu_top == targets).sum().item(),
                counted[0] + counted[1],
                d * (2 * counted[2] + counted[1]),
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
                    counted[0] + counted[1],
                    d * (4 * counted[0] + counted[1]),
                )
    finally:
        spiking.steps = saved_steps
        spiking.train(training)

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
