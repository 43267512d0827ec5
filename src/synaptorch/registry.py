"""The architectures a checkpoint may name, and where their classes live.

Modules are imported on first use, so the checkpoint format depends on no model and a model may
use the checkpoint format without an import cycle.
"""

from __future__ import annotations

import importlib

from synaptorch.errors import CheckpointError

# architecture name stored in config.json -> "module:class"
ARCHITECTURES = {"bdh": "synaptorch.models.bdh:BDH", "gpt": "synaptorch.models.gpt:GPT"}


def model_class(architecture: str) -> type:
    """The model class of `architecture`; an unknown name is a CheckpointError."""
    try:
        module, name = ARCHITECTURES[architecture].split(":")
    except KeyError:
        raise CheckpointError(
            f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return getattr(importlib.import_module(module), name)
