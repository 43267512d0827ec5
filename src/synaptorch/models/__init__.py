"""Language models; `MODELS` maps the architecture name stored in checkpoints to its class."""

from synaptorch.models.bdh import BDH, BDHConfig, BDHState
from synaptorch.models.gpt import GPT, GPTConfig, GPTState

MODELS = {BDH.architecture: BDH, GPT.architecture: GPT}

__all__ = ["BDH", "GPT", "MODELS", "BDHConfig", "BDHState", "GPTConfig", "GPTState"]
