"""Synaptic plasticity rules as pure functions over explicit synapse state: Hebbian association
(H-Mem), the bistable stop-learning synapse (Brader, Senn and Fusi 2007) and Oja's subspace rule."""

from synaptorch.plasticity.bistable import (
    BistableParameters,
    IFState,
    bistable_step,
    count_transitions,
    efficacy,
    if_step,
)
from synaptorch.plasticity.hebbian import hebbian_read, hebbian_write, hebbian_write_sequence
from synaptorch.plasticity.oja import oja_subspace_step, orthogonal_rows, project_out, projection_error, subspace_energy

__all__ = [
    "BistableParameters",
    "IFState",
    "bistable_step",
    "count_transitions",
    "efficacy",
    "hebbian_read",
    "hebbian_write",
    "hebbian_write_sequence",
    "if_step",
    "oja_subspace_step",
    "orthogonal_rows",
    "project_out",
    "projection_error",
    "subspace_energy",
]
