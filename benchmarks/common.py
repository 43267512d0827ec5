"""Helpers shared by the benchmarks: where the shared data lives, memory readings, the record they print."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def matmul_peak_flops(device: torch.device, dtype: torch.dtype | None = None) -> tuple[float, str]:
    """The best rate of single large square matmuls in `dtype`, by default the precision the
    models train in by default: fp32 on the CPU, bf16 on CUDA."""
    sizes = (4096, 8192) if device.type == "cuda" else (2048, 3072)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        for _ in range(8):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best, str(dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(variants: dict, rounds: int, calls: int) -> dict[str, float]:
    """Seconds per call of each variant: the best of `rounds` rounds taken in turn, after a warm-up."""
    for fn in variants.values():
        fn()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def machine() -> dict:
    """What a figure depends on besides the code: the CPU, its cores and torch's threads, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def emit(benchmark: str, record: dict) -> None:
    """Print a benchmark's result as its one JSON line, the last line of its output, with the
    machine, the torch version and the time (UTC) it was measured at."""
    line = {
        "benchmark": benchmark,
        **record,
        "machine": machine(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(line), flush=True)


# The models the comparison benchmarks measure: BDH and its GPT matched by parameters and by FLOPs.
MODELS_MEASURED = (("bdh", "cpu-tiny"), ("gpt", "cpu-tiny"), ("gpt", "cpu-tiny-flops"))


def training_step(model, optimizer, idx, precision=None) -> None:
    """One step of next-token training on idx (B, T + 1), as the trainer takes it, in `precision`
    (by default the device's)."""
    import torch.nn.functional as F

    from synaptorch.device import autocast_for

    with autocast_for(idx.device, precision):
        logits = model(idx[:, :-1])
    F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_for_budget(
    out: str | Path,
    budget_s: float,
    preset: str = "cpu-tiny",
    architecture: str = "bdh",
    data: str | Path = SHAKESPEARE,
    model_overrides: dict | None = None,
    **train_overrides,
):
    """Train a preset (its model changed by `model_overrides`) for a wall-clock budget of
    `budget_s` seconds; returns the Trainer.

    The schedule follows the clock (`time_schedule`): the decay ends at the budget whatever speed
    the machine keeps meanwhile, and the run stops there, so a run planned by steps from a probe
    that a passing slowdown misled can neither stop early nor cut its decay short.
    """
    from synaptorch.train.config import build_run_config
    from synaptorch.train.trainer import Trainer

    overrides = {
        "data": str(data),
        "max_time": budget_s,
        "time_schedule": True,
        "max_steps": 10**9,
        **train_overrides,
    }
    run = build_run_config(
        preset, architecture=architecture, model_overrides=model_overrides, train_overrides=overrides
    )
    trainer = Trainer(run, Path(out) / "run", progress=False)
    trainer.fit()
    return trainer


def parse_settings(items: list[str]) -> tuple[dict, dict]:
    """Model and training settings from NAME=VALUE strings (TOML values: 1e-3, 256, true, "cosine")."""
    import tomllib

    from synaptorch.train.config import TrainConfig

    train_fields = set(TrainConfig.__dataclass_fields__)
    model: dict = {}
    train: dict = {}
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip().replace("-", "_")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        (train if name in train_fields else model)[name] = parsed
    return model, train


def save_figure(path: str | Path, draw, size: tuple[float, float] = (8, 4)) -> None:
    """Call `draw(figure)` and write the figure as a PNG, without a display."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    draw(figure)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
