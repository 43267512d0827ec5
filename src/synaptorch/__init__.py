"""synaptorch: brain-inspired learning on PyTorch.

The models are imported on first use, so that `synaptorch --help` and other light entry points
do not pay for importing torch.
"""

from synaptorch.version import __version__

__all__ = ["BDH", "GPT", "BDHConfig", "BDHState", "GPTConfig", "GPTState", "__version__", "merge"]


def __getattr__(name: str):
    if name == "merge":
        from synaptorch.models.merge import merge

        return merge
    if name in __all__:
        import synaptorch.models

        return getattr(synaptorch.models, name)
    raise AttributeError(f"module 'synaptorch' has no attribute {name!r}")
