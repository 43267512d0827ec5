"""What every model config shares: dict round trips and the checks of common fields."""

from __future__ import annotations

from dataclasses import asdict
from typing import Self

from synaptorch.errors import ConfigError
from synaptorch.fields import check_positive_ints, check_values


class ModelConfig:
    """Base of the frozen dataclasses that configure a model."""

    positive_ints: tuple[str, ...] = ()

    def check(self) -> None:
        """Refuse non-positive sizes, dropout outside [0, 1) and a RoPE base of 1 or less."""
        check_positive_ints(self, self.positive_ints)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.rope_theta > 1.0:
            raise ConfigError(f"rope_theta must be > 1, got {self.rope_theta}")

    @classmethod
    def from_dict(cls, values: dict) -> Self:
        return cls(**check_values(cls, values, "model"))

    def to_dict(self) -> dict:
        return asdict(self)
