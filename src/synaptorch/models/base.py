"""What every language model of synaptorch shares: saving to and loading from checkpoint folders."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import torch
from torch import Tensor, nn

from synaptorch.checkpoint import load_model, save_model
from synaptorch.errors import CheckpointError


class LanguageModel(nn.Module):
    """Base of the models: `model(idx)` gives logits, `forward_recurrent(idx, state)` streams."""

    architecture: str  # the name stored in checkpoints

    @torch.no_grad()
    def step(self, token: Tensor, state: object) -> tuple[Tensor, object]:
        """One token of generation: token (B,) -> logits (B, V) and the state after it.

        The state passed in may be updated in place and must not be used again.
        """
        logits, state = self.forward_recurrent(token[:, None], state)
        return logits[:, 0], state

    def save_pretrained(self, folder: str | Path, **extra) -> None:
        """Write a checkpoint folder (config.json + model.safetensors); `extra` goes into config.json."""
        save_model(self, folder, **extra)

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> Self:
        """Load a checkpoint folder, or a run folder's latest checkpoint, of this architecture."""
        model = load_model(folder, map_location=map_location)
        if not isinstance(model, cls):
            raise CheckpointError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__}")
        return model
