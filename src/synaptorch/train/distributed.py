"""Training on several processes through `torch.distributed`, launched by `torchrun`.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE for every worker; a process
started without them is a world of one, and every collective below is then a no-op. The backend
is gloo on the CPU and nccl on CUDA, one device per LOCAL_RANK. A run is defined by its global
batch, batch_size x grad_accum sequences per optimizer step; the processes only divide that work.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

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
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            store=_attempt_store(world),
            rank=world.rank,
            world_size=world.size,
            timeout=COLLECTIVE_TIMEOUT,
        )
        # A process group left to the interpreter's teardown can abort the process as it exits
        # (gloo's threads are destroyed while still joinable), failing a run that has finished.
        atexit.register(_leave_process_group)
    # Processes on one machine share its cores. torchrun sets OMP_NUM_THREADS=1 where it is unset,
    # which leaves most cores idle when there are fewer processes than cores: 1 counts as unset.
    if os.environ.get("OMP_NUM_THREADS", "1") == "1":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
    return world


def restart_attempt() -> int:
    """How many times torchrun (`--max-restarts`) has restarted this run's workers; 0 at first."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


def launch_id() -> str | None:
    """The id torchrun gives this launch (`--rdzv-id`, or a fresh one with --standalone), kept over its restarts."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return None if run_id in (None, "", "none") else run_id


def _attempt_store(world: World) -> dist.Store | None:
    """The rendezvous store of this attempt of the launch, or None to let torch read the environment.

    torchrun keeps one store (its agent's) over restarts, and the process group of a restarted
    worker would read the addresses its dead predecessors left there: the new workers then time
    out connecting to ports nobody listens on. Each attempt gets keys of its own.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world.size,
        is_master=False,
        timeout=COLLECTIVE_TIMEOUT,
    )
    return dist.PrefixStore(f"synaptorch/attempt-{restart_attempt()}", store)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_worker(code: int) -> None:
    """End this process of a distributed run with `code`, without the interpreter's teardown;
    returns at once when no process group was joined.

    A sharded model's DTensors leave their device mesh, and with it the gloo group and its worker
    threads, alive in torch's caches after destroy_process_group. Should such a thread free a
    tensor once the interpreter has begun to finalize, taking the GIL ends it in the middle of
    C++ code and the process aborts (SIGABRT) after a run that succeeded. Every file of a run is
    already fsynced, so the process flushes its streams, leaves the group and exits directly.
    """
    if not dist.is_initialized():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    _leave_process_group()
    os._exit(code)


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


def shard_model(model: nn.Module) -> nn.Module:
    """Shard `model` in place among the processes with FSDP2's `fully_shard`.

    Each block of a layer list (GPT's) is a unit of its own, gathered only while it computes;
    the parameters left on the root (embeddings, BDH's shared Dx, Dy, E and readout) form the
    root's unit, gathered for the whole forward pass.
    """
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        raise ConfigError(f"--fsdp needs torch >= 2.6 (FSDP2); this is torch {torch.__version__}") from None
    for layers in [m for m in model.modules() if isinstance(m, nn.ModuleList)]:
        for block in layers:
            fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `model` was sharded by `shard_model`: its every forward pass is then a collective."""
    if not dist.is_initialized():
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_states(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """The whole weights and optimizer state of a sharded model, on the CPU of the main process
    (empty elsewhere): every process must call it. The optimizer state has the layout of
    `optimizer.state_dict()` of an unsharded model, parameters numbered in group order, so that
    a checkpoint resumes the same with or without sharding."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not by_name:
        return weights, {}
    index: dict[str, int] = {}
    groups = [
        {**group, "params": [index.setdefault(name, len(index)) for name in group["params"]]}
        for group in by_name["param_groups"]
    ]
    return weights, {"state": {index[name]: s for name, s in by_name["state"].items()}, "param_groups": groups}


def load_sharded_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load an optimizer state of `optimizer.state_dict()`'s layout (every process holds it whole)
    into the optimizer of a sharded model, each process keeping its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {param: name for name, param in model.named_parameters()}
    order = [names[param] for group in optimizer.param_groups for param in group["params"]]
    by_name = {
        "state": {order[i]: s for i, s in state["state"].items()},
        "param_groups": [{**group, "params": [order[i] for i in group["params"]]} for group in state["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))
