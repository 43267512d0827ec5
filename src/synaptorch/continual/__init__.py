"""Continual learning: permuted image tasks, and networks that learn them in sequence without forgetting.

`train_continual(method, tasks, config)` runs fine-tuning, EWC, GPM, HLOP or joint training on
a list of tasks (`permuted_tasks`) and returns the task-by-task accuracy matrix with ACC and BWT.
`HebbianProjector` is HLOP's reusable piece: lateral rows learnt by Oja's subspace rule from a
linear map's inputs, out of whose span the map's weight gradients are projected; `BDHProjectors`
(`synaptorch.continual.bdh`) puts one on each of BDH's Dx, Dy and E.
"""

from synaptorch.continual.bdh import BDHProjectors, map_inputs
from synaptorch.continual.networks import MLP, SpikingMLP
from synaptorch.continual.projection import HebbianProjector, SVDProjector, project_gradient
from synaptorch.continual.tasks import Task, permuted_tasks
from synaptorch.continual.training import (
    METHODS,
    ContinualConfig,
    ContinualResult,
    LayerSubspace,
    average_accuracy,
    backward_transfer,
    evaluate,
    layer_inputs,
    make_network,
    train_continual,
)

__all__ = [
    "METHODS",
    "MLP",
    "BDHProjectors",
    "ContinualConfig",
    "ContinualResult",
    "HebbianProjector",
    "LayerSubspace",
    "SVDProjector",
    "SpikingMLP",
    "Task",
    "average_accuracy",
    "backward_transfer",
    "evaluate",
    "layer_inputs",
    "make_network",
    "map_inputs",
    "permuted_tasks",
    "project_gradient",
    "train_continual",
]
