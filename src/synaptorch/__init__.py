"""synaptorch: brain-inspired learning on PyTorch."""

__version__ = "0.1.0"

from synaptorch.models import BDH, GPT, BDHConfig, BDHState, GPTConfig, GPTState

__all__ = ["BDH", "GPT", "BDHConfig", "BDHState", "GPTConfig", "GPTState", "__version__"]
