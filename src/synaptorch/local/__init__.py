"""Learning without backpropagation across layers: Forward-Forward, Distance-Forward, event-driven
spiking Forward-Forward, teacher-gated stop-learning synapses, and backpropagation as the baseline.

Every rule is a config dataclass and a model with `train_batch(x, y, progress)` and
`predict(x)` (`synaptorch.local.base`); `RULES` names them:

    entry = RULES["ff"]
    model = entry.model_class(entry.config_class(layers=(1000, 1000)))

Training on image sets, checkpoints and scores: `synaptorch.local.training`.
"""

from typing import NamedTuple

from torch import nn

from synaptorch.local.bp import BP, BPConfig
from synaptorch.local.df import DF, DFConfig
from synaptorch.local.edff import EDFF, EDFFConfig
from synaptorch.local.ff import FF, FFConfig
from synaptorch.local.stoplearn import StopLearn, StopLearnConfig


class Rule(NamedTuple):
    config_class: type
    model_class: type[nn.Module]
    summary: str


RULES: dict[str, Rule] = {
    "ff": Rule(FFConfig, FF, "Forward-Forward (Hinton 2022)"),
    "df": Rule(DFConfig, DF, "Distance-Forward (Wu et al. 2024)"),
    "edff": Rule(EDFFConfig, EDFF, "event-driven spiking Forward-Forward, CSDP (Ororbia 2023)"),
    "stoplearn": Rule(StopLearnConfig, StopLearn, "teacher-gated stop-learning synapses (Brader, Senn and Fusi 2007)"),
    "bp": Rule(BPConfig, BP, "backpropagation on the same layers"),
}

__all__ = [
    "BP",
    "DF",
    "EDFF",
    "FF",
    "RULES",
    "BPConfig",
    "DFConfig",
    "EDFFConfig",
    "FFConfig",
    "Rule",
    "StopLearn",
    "StopLearnConfig",
]
