"""Question answering over stories: H-Mem's Hebbian memory and its baselines, MemN2N, an LSTM and BDH.

Every model takes stories (B, L, W) and questions (B, Wq) of word ids, 0 being padding, and
returns answer logits (B, vocab_size). `MODELS` names each with its config class, model class
and the config fields that set the variant apart:

    entry = MODELS["hmem-rbw"]
    model = entry.model_class(entry.config_class(vocab_size=..., n_words=..., **entry.overrides))

(`n_words`, the word slots of a sentence, for H-Mem only.) Training, checkpoints and evaluation
on bAbI files: `synaptorch.memory.training`.
"""

from typing import NamedTuple

from torch import nn

from synaptorch.memory.bdh_reader import BDHReader, BDHReaderConfig, BDHReaderTrainConfig
from synaptorch.memory.hmem import HMem, HMemConfig, HMemTrainConfig
from synaptorch.memory.lstm import LSTMBaseline, LSTMConfig
from synaptorch.memory.memn2n import MemN2N, MemN2NConfig, MemN2NTrainConfig, position_weights


class MemoryModel(NamedTuple):
    config_class: type
    model_class: type[nn.Module]
    overrides: dict


MODELS: dict[str, MemoryModel] = {
    "hmem": MemoryModel(HMemConfig, HMem, {}),
    "hmem-rbw": MemoryModel(HMemConfig, HMem, {"read_before_write": True}),
    "memn2n": MemoryModel(MemN2NConfig, MemN2N, {}),
    "lstm": MemoryModel(LSTMConfig, LSTMBaseline, {}),
    "bdh": MemoryModel(BDHReaderConfig, BDHReader, {}),
}

__all__ = [
    "MODELS",
    "BDHReader",
    "BDHReaderConfig",
    "BDHReaderTrainConfig",
    "HMem",
    "HMemConfig",
    "HMemTrainConfig",
    "LSTMBaseline",
    "LSTMConfig",
    "MemN2N",
    "MemN2NConfig",
    "MemN2NTrainConfig",
    "MemoryModel",
    "position_weights",
]
