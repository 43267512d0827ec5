"""Language models. `synaptorch.registry` maps the architecture names stored in checkpoints to them."""

from synaptorch.models.bdh import BDH, BDHConfig, BDHState
from synaptorch.models.gpt import GPT, GPTConfig, GPTState

__all__ = ["BDH", "GPT", "BDHConfig", "BDHState", "GPTConfig", "GPTState"]
