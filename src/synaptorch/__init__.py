"""synaptorch: brain-inspired learning on PyTorch."""

__version__ = "0.1.0"

from synaptorch.models import BDH, BDHConfig, BDHState

__all__ = ["BDH", "BDHConfig", "BDHState", "__version__"]
