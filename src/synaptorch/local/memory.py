"""Peak tensor memory of a block of code, on any device, counted from the tensors PyTorch allocates.

CPU builds of PyTorch keep no allocator statistics, and a process's resident size mixes tensors
with the interpreter, the libraries and the data set. `PeakTensorMemory` instead watches every
operator through a `TorchDispatchMode`: each storage an operator returns is counted once, while
it lives, and the largest total is the peak. Tensors that existed before the block (the data set,
say) are not counted, so a training run measured from the model's construction on counts its
parameters, gradients, optimizer state, activations kept for backward and temporaries: the same
quantity for every learning rule.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MIB = 2**20


class PeakTensorMemory(TorchDispatchMode):
    """with PeakTensorMemory() as memory: ...; then memory.peak_bytes, memory.current_bytes.

    Backward passes are counted too: autograd runs them under the same mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current_bytes = 0
        self.peak_bytes = 0
        self._alive: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        if storage in self._alive:
            return
        size = storage.nbytes()
        self._alive[storage] = size
        self.current_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.current_bytes)
        weakref.finalize(storage, self._release, size)

    def _release(self, size: int) -> None:
        self.current_bytes -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and not value.is_meta:
                self._count(value)
        return out
