"""Training on several processes through `torch.distributed`, launched by `torchrun`.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE for every worker; a process
started without them is a world of one, and every collective below is then a no-op. The backend
is gloo on the CPU and nccl on CUDA, one device per LOCAL_RANK. A run is defined by its global
batch, batch_size x grad_accum sequences per optimizer step; the processes only divide that work.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from synaptorch.errors import ConfigError

# A collective that waits longer than this for a dead rank fails instead of hanging the others.
T = TypeVar("T")
COLLECTIVE_TIMEOUT = timedelta(seconds=float(os.environ.get("SYNAPTORCH_DIST_TIMEOUT", 120)))


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """The sums over all processes of `values`, in float64."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether `flag` is true in any process."""
        return bool(self.sum([float(flag)], device)[0]) if self.distributed else flag

    def part(self, items: Sequence[T]) -> Sequence[T]:
        """The items this process takes: every size-th one from its rank."""
        return items[self.rank :: self.size]


SINGLE = World()  # a process trained alone


def current_world() -> World:
    """The world torchrun describes in the environment, its process group joined; else a world of one."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE
    world = World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        local_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
        # A process group left to the interpreter's teardown can abort the process as it exits
        # (gloo's threads are destroyed while still joinable), failing a run that has finished.
        atexit.register(_leave_process_group)
    # Processes on one machine share its cores. torchrun sets OMP_NUM_THREADS=1 where it is unset,
    # which leaves most cores idle when there are fewer processes than cores: 1 counts as unset.
    if os.environ.get("OMP_NUM_THREADS", "1") == "1":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
    return world


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, spec: str) -> str:
    """The device spec of this process: cuda means the GPU of its LOCAL_RANK."""
    if world.distributed and spec in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    if world.distributed and spec == "mps":
        raise ConfigError("several processes cannot share one MPS device")
    return spec


def check_global_batch(world: World, batch_size: int, grad_accum: int) -> int:
    """The sequences each process takes from a global batch of batch_size x grad_accum."""
    total = batch_size * grad_accum
    if total % world.size:
        raise ConfigError(
            f"the global batch of {batch_size} x {grad_accum} = {total} sequences does not divide among "
            f"{world.size} processes; choose --batch-size and --grad-accum whose product it divides"
        )
    return total // world.size
