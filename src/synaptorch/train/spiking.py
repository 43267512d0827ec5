"""Spiking BDH in use: conversion of a trained BDH, fine-tuning with the spikes in the loop, and
evaluation against the ReLU model it came from (agreement, loss, spikes, synaptic operations and
energy per token, distance from the equilibrium rates, against T).

Fine-tuning methods (`finetune_spiking`), all with the IF neurons in the loop at a fixed T:
    surrogate     cross-entropy, surrogate gradients through every time step
    equilibrium   cross-entropy, gradients through the equilibrium rates a* = clamp(I / V_th, 0, 1)
                  (SpikingBERT, Bal and Sengupta 2024; neurons/equilibrium.py)
    tks           temporal knowledge sharing (Dong, Zhao and Zeng 2023; train/tks.py). Layer norms
                  between the populations leave no output of a single time step; the output O_t
                  of step t is the network's answer when each token gets t steps, t = 1..T, the
                  logits of the run at t steps per token (T forward passes per batch).
    distill       distillation_loss (train/distill.py) against a teacher: the ReLU model, or any
                  teacher `synaptorch distill` takes, live or from its top-k cache
tks and distill take the equilibrium gradient unless told otherwise.

Energy per token: 4.6 pJ per 32-bit multiply-accumulate and 0.9 pJ per accumulate (45 nm,
Horowitz 2014, the figures SNN papers use); the ReLU model pays MACs for every synapse, the
spiking one MACs for the analog encoders and read-out and accumulates for what spikes drive.

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

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.errors import ConfigError, DataError
from synaptorch.models.bdh import BDH
from synaptorch.models.spiking_bdh import SpikingBDH, check_gradient
from synaptorch.train.distill import DistillConfig, distillation_loss
from synaptorch.train.teacher import TeacherSignal
from synaptorch.train.tks import tks_loss, tks_weight
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
    # Mean |spikes / T - a*| in units of the threshold over the neurons that fire or would at
    # equilibrium, a* = clamp(current / threshold, 0, 1) of the current each neuron received.
    equilibrium_gap: float
    energy_pj_per_token: float  # analog MACs and synaptic accumulates at 45 nm (MAC_PJ, AC_PJ)
    tokens: int


@dataclass
class ReLUResult:
    loss: float
    accuracy: float
    active_per_token: float  # x and xy neurons with a non-zero activation
    macs_per_token: float  # dense multiply-accumulates of the synapses spikes replace
    active_macs_per_token: float  # the same, touching only the active neurons
    analog_macs_per_token: float  # Dx, Dy and the read-out: multiply-accumulates in both models
    energy_pj_per_token: float  # all of its MACs, dense, at 45 nm (MAC_PJ)
    tokens: int


# Energy of one 32-bit float operation in 45 nm CMOS (Horowitz, ISSCC 2014), the figures SNN
# papers compare with: a multiply-accumulate and an accumulate, in picojoules.
MAC_PJ, AC_PJ = 4.6, 0.9


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


METHODS = ("none", "surrogate", "equilibrium", "tks", "distill")


class ModelSignal(TeacherSignal):
    """A model in memory as the teacher, run on each window: its full log-probabilities."""

    def __init__(self, model: nn.Module, tokens: np.ndarray) -> None:
        self.model, self.tokens = model, tokens

    @torch.no_grad()
    def targets(self, starts: Sequence[int], length: int) -> tuple[None, Tensor]:
        rows = [torch.from_numpy(self.tokens[s : s + length].astype(np.int64)) for s in starts]
        idx = torch.stack(rows).to(self.model.readout.device)
        return None, F.log_softmax(self.model(idx).float(), dim=-1)


def relu_teacher(spiking: SpikingBDH, tokens: np.ndarray) -> ModelSignal:
    """The ReLU neurons of `spiking`'s present weights, frozen: before fine-tuning, the ReLU model
    it was converted from, as the teacher of the windows of `tokens`."""
    reference = copy.deepcopy(spiking).requires_grad_(False).eval()
    reference.steps = 0
    return ModelSignal(reference, tokens)


def finetune_spiking(
    spiking: SpikingBDH,
    tokens: np.ndarray,
    iterations: int,
    steps: int = 4,
    block_size: int = 128,
    batch_size: int = 8,
    lr: float = 3e-4,
    seed: int = 0,
    method: str = "surrogate",
    seconds: float = 0.0,
    gradient: str | None = None,
    teacher: TeacherSignal | None = None,
    alpha: float = 0.5,
    tau: float = 1.0,
) -> list[float]:
    """Train the weights with the IF neurons in the loop, `steps` time steps per token; the
    thresholds stay as calibrated. Returns the training losses.

    Stops after `iterations` steps, or after `seconds` of training when that is positive (then
    `iterations` 0 sets no bound on the steps). method:
        none          no training
        surrogate     cross-entropy; surrogate gradients through every step
        equilibrium   cross-entropy; gradients through the equilibrium rates (SpikingBERT)
        tks           temporal knowledge sharing (train/tks.py) over the outputs at 1..steps steps
        distill       distillation_loss(alpha, tau) against `teacher` (a TeacherSignal whose
                      positions index `tokens`), without one the ReLU model (`relu_teacher`)
    `gradient` sets the gradient of tks and distill: "equilibrium" (the default) or "surrogate".
    """
    if method not in METHODS:
        raise ConfigError(f"the fine-tuning method must be one of {', '.join(METHODS)}, got {method!r}")
    if gradient is not None and method in ("surrogate", "equilibrium") and gradient != method:
        raise ConfigError(f"method {method} trains with its own gradient, not {gradient}")
    gradient = gradient or ("surrogate" if method == "surrogate" else "equilibrium")
    check_gradient(gradient)
    if (
        iterations < 0
        or not seconds >= 0
        or not 1 <= steps <= MAX_TIME_STEPS
        or not lr > 0
        or block_size < 1
        or batch_size < 1
    ):
        raise ConfigError(
            f"fine-tuning needs iterations >= 0, seconds >= 0, 1 to {MAX_TIME_STEPS} steps, a positive learning "
            "rate, and positive block and batch sizes"
        )
    if method == "none" or not (iterations or seconds):
        return []
    if len(tokens) <= block_size:
        raise DataError(f"fine-tuning needs more than {block_size} tokens, have {len(tokens)}")
    if method == "distill":
        DistillConfig(alpha=alpha, tau=tau)  # checks them
        teacher = teacher or relu_teacher(spiking, tokens)
    device = spiking.readout.device
    sampler = BatchSampler(tokens, block_size, batch_size, seed)
    optimizer = torch.optim.AdamW(spiking.parameters(), lr=lr, weight_decay=0.0)
    saved = spiking.steps, spiking.gradient, spiking.training
    spiking.steps, spiking.gradient = steps, gradient
    spiking.train()
    losses: list[float] = []
    start = time.perf_counter()

    def progress() -> float:
        done = [(time.perf_counter() - start) / seconds] if seconds else []
        return max(done + ([len(losses) / iterations] if iterations else []))

    try:
        while progress() < 1:
            starts = sampler.next_starts()
            inputs, targets = (t.to(device) for t in sampler.windows(starts))
            if method == "tks":
                outputs = []
                for t in range(1, steps + 1):
                    spiking.steps = t
                    outputs.append(spiking(inputs).flatten(0, 1))
                loss = tks_loss(torch.stack(outputs), targets.flatten(), tks_weight(progress()))
            elif method == "distill":
                ids, logprobs = teacher.targets(starts, block_size)
                ids = None if ids is None else ids.to(device)
                loss, _, _ = distillation_loss(spiking(inputs), targets, ids, logprobs.to(device), alpha, tau)
            else:
                loss = F.cross_entropy(spiking(inputs).flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(spiking.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
    finally:
        spiking.steps, spiking.gradient, _ = saved
        spiking.train(saved[2])
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
    # The ReLU model: active x and xy neurons and non-zero entries of q; the spiking one: x and xy
    # spikes, and in `gap` the sum and count of the gaps to the equilibrium.
    counted, gap = np.zeros(3), np.zeros(2)

    def count_active(layer: int, x_sparse: Tensor, q: Tensor, xy: Tensor, **_) -> None:
        counted[:] += ((x_sparse > 0).sum().item(), (xy > 0).sum().item(), (q != 0).sum().item())

    def count_spikes(
        layer: int, residual: Tensor, x_sparse: Tensor, y_sparse: Tensor, x_spikes: Tensor, xy_spikes: Tensor, **_
    ) -> None:
        counted[:2] += (x_spikes.sum().item(), xy_spikes.sum().item())
        x_current = (residual.flatten(0, 2) @ spiking.encoder_x).view_as(x_spikes)
        # The xy current is x_rate * layernorm(a) Dy, whose positive part is x_sparse * y_sparse.
        for population, current, spikes in ((0, x_current, x_spikes), (1, x_sparse * y_sparse, xy_spikes)):
            threshold = spiking.thresholds[population].view(-1, 1, 1, 1)
            equilibrium = spiking.equilibrium(current, population) / threshold
            seen = (equilibrium > 0) | (spikes > 0)
            gap[:] += ((spikes / spiking.steps - equilibrium).abs()[seen].sum().item(), seen.sum().item())

    gaps = {t: np.zeros(2) for t in steps}
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
                counted[:], gap[:] = 0, 0
                logp = F.log_softmax(spiking(inputs, count_spikes).flatten(0, 1).float(), -1)
                sums[t] += (
                    F.nll_loss(logp, targets, reduction="sum").item(),
                    (logp.argmax(-1) == targets).sum().item(),
                    (logp.argmax(-1) == relu_top).sum().item(),
                    F.kl_div(logp, relu_logp, log_target=True, reduction="sum").item(),
                    counted[0] + counted[1],
                    d * (4 * counted[0] + counted[1]),
                )
                gaps[t] += gap
    finally:
        spiking.steps = saved_steps
        spiking.train(training)

    relu = (sums["relu"] / n_tokens).tolist()
    macs, analog_macs = float(3 * neurons * d * c.n_layer), float(2 * neurons * d * c.n_layer + d * c.vocab_size)
    relu_result = ReLUResult(
        loss=relu[0],
        accuracy=relu[1],
        active_per_token=relu[2],
        macs_per_token=macs,
        active_macs_per_token=relu[3],
        analog_macs_per_token=analog_macs,
        energy_pj_per_token=MAC_PJ * (macs + analog_macs),
        tokens=n_tokens,
    )
    results = []
    for t in steps:
        loss, accuracy, agreement, kl, spikes, ops = (sums[t] / n_tokens).tolist()
        gap = float(gaps[t][0] / max(gaps[t][1], 1))
        energy = MAC_PJ * analog_macs + AC_PJ * ops
        results.append(SpikingResult(t, loss, accuracy, agreement, kl, spikes, ops, gap, energy, n_tokens))
    return relu_result, results


def as_records(relu: ReLUResult, results: list[SpikingResult]) -> dict:
    """Both results as plain numbers, rounded for printing."""

    def rounded(record: dict) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()}

    return {"relu": rounded(asdict(relu)), "spiking": [rounded(asdict(r)) for r in results]}
