"""Language models; `MODELS` maps the architecture name stored in checkpoints to its class."""

from synaptorch.models.bdh import BDH, BDHConfig, BDHState

MODELS = {BDH.architecture: BDH}

__all__ = ["BDH", "MODELS", "BDHConfig", "BDHState"]
