"""Temporal knowledge sharing (TKS; Dong, Zhao and Zeng, 2023): a spiking network's time steps teach each other.

With outputs O_t of time steps t = 1..S and targets y:

    L1 = CE(mean_t O_t, y)
    teacher = mean of O_t over the steps t whose argmax is y       (no gradient)
    L2 = mean_t tau^2 * CE(softmax(teacher / tau), softmax(O_t / tau))
    L  = w L1 + (1 - w) L2,   w = 1 - 0.7 * progress               (progress: 0 -> 1 over training)

tau = 3 and the weight falling from 1 to 0.3 are the paper's (there per epoch, e / E). Two choices
differ from the paper's text. The teacher is the mean of the right steps' outputs, not their sum:
k right steps summed make softmax(k z / tau), a teacher k times sharper than any step, which a
classifier's accuracy does not notice but a language model's loss pays for as overconfidence (on
a tiny BDH fine-tuned at four steps the sum left the loss at T = 4 0.22 nats above fine-tuning
without TKS, the mean 0.02). The student's output is tempered by tau as the teacher's is, as in
Hinton et al.'s soft targets, whose scale the tau^2 factor restores. A position where no step predicts right has
no teacher: its L2 is 0 (L2 is still the mean over all positions).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from synaptorch.errors import ConfigError

TAU = 3.0
FINAL_WEIGHT_DROP = 0.7


def tks_weight(progress: float) -> float:
    """w of L1 at `progress` in [0, 1] of training: 1 at the start, 0.3 at the end."""
    return 1 - FINAL_WEIGHT_DROP * min(max(progress, 0.0), 1.0)


def tks_loss(outputs: Tensor, targets: Tensor, weight: float, tau: float = TAU) -> Tensor:
    """w L1 + (1 - w) L2 of outputs (S, N, V), one row of logits per time step, against targets (N,)."""
    if not 0 <= weight <= 1 or not tau > 0:
        raise ConfigError(f"TKS needs a weight in [0, 1] and a positive temperature, got {weight} and {tau}")
    outputs = outputs.float()
    l1 = F.cross_entropy(outputs.mean(0), targets)
    right = (outputs.argmax(-1) == targets).unsqueeze(-1)  # (S, N, 1)
    teacher = ((outputs * right).sum(0) / right.sum(0).clamp(min=1)).detach()  # (N, V)
    soft = F.softmax(teacher / tau, -1)
    student = F.log_softmax(outputs / tau, -1)  # (S, N, V)
    per_position = -(soft * student).sum(-1) * right.any(0).squeeze(-1)  # (S, N)
    l2 = tau**2 * per_position.mean()
    return weight * l1 + (1 - weight) * l2
