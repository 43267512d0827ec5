"""Synaptic plasticity rules as pure functions over explicit synapse state."""

from synaptorch.plasticity.hebbian import hebbian_read, hebbian_write, hebbian_write_sequence

__all__ = ["hebbian_read", "hebbian_write", "hebbian_write_sequence"]
