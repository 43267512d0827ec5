"""Random uncorrelated binary patterns with random labels, the capacity task of attractor and
perceptron memories and of Brader, Senn and Fusi (Neural Computation 19, 2007).

Each of the N inputs of each of the P patterns is active (1) with probability f, the coding level,
independently of everything else; each pattern gets one of n_classes labels uniformly at random. The
default f = 0.05 lies in the range of 0.05-0.1 that Brader et al. use for their random patterns; sparse
coding is what makes bistable synapses with stochastic transitions store many patterns (Amit and Fusi,
Neural Computation 6, 1994), and with 1,000 inputs it still gives 50 active inputs per pattern.
"""

from __future__ import annotations

import torch

from synaptorch.errors import ConfigError

CODING_LEVEL = 0.05


def random_patterns(
    n_patterns: int, n_inputs: int, coding_level: float = CODING_LEVEL, n_classes: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patterns (P, N) float32 of 0 and 1, each entry 1 with probability f, and labels (P,) int64 in [0, n_classes)."""
    for name, value in (("n_patterns", n_patterns), ("n_inputs", n_inputs), ("n_classes", n_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < coding_level < 1:
        raise ConfigError(f"coding_level must be in (0, 1), got {coding_level}")
    generator = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(n_patterns, n_inputs, generator=generator) < coding_level).float()
    labels = torch.randint(n_classes, (n_patterns,), generator=generator)
    return patterns, labels
