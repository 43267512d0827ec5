"""A Linear(n, n) followed by LIF neurons, against the SNN libraries (the Open Neuromorphic task).

    pip install -e '.[bench]' --no-deps && pip install loguru nir nirtorch h5py   # the peers
    python benchmarks/lif_libraries.py            # n = 512 to 4096, about 10 minutes
    python benchmarks/lif_libraries.py --quick    # n = 512, under a minute

Batch 16, 500 time steps, forward and backward of the sum of the output spikes; seconds, best of
--repeats after a warm-up. `linear` is the Linear layer alone over all steps (one product, forward
and backward), which bounds every library from below. Peers that do not import are reported as
missing rather than timed. SpikingJelly and Norse declare torchvision, which would replace the
installed torch; their neuron modules import without it, hence --no-deps.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from synaptorch.neurons import LIF

from common import best_seconds, machine

STEPS, BATCH, BETA = 500, 16, 0.9


def synaptorch_task(n: int):
    linear, lif = nn.Linear(n, n), LIF(n, beta=BETA)
    return lambda x: lif(linear(x))[0]


def linear_task(n: int):
    return nn.Linear(n, n)


def snntorch_task(n: int):
    import snntorch

    linear, lif = nn.Linear(n, n), snntorch.Leaky(beta=BETA)

    def run(x):
        mem, spikes = lif.init_leaky(), []
        for x_t in x:
            spike, mem = lif(linear(x_t), mem)
            spikes.append(spike)
        return torch.stack(spikes)

    return run


def spikingjelly_task(n: int):
    """Multi-step mode; SpikingJelly 2 runs it in torch (earlier versions took backend="torch")."""
    from spikingjelly.activation_based import functional, layer, neuron

    model = nn.Sequential(layer.Linear(n, n, step_mode="m"), neuron.LIFNode(step_mode="m"))

    def run(x):
        functional.reset_net(model)
        return model(x)

    return run


def norse_task(n: int):
    import norse.torch as norse

    model = norse.SequentialState(nn.Linear(n, n), norse.LIF())
    return lambda x: model(x)[0]


TASKS = {
    "linear": linear_task,
    "synaptorch": synaptorch_task,
    "snntorch": snntorch_task,
    "spikingjelly": spikingjelly_task,
    "norse": norse_task,
}


def seconds(task, n: int, repeats: int) -> float:
    x = torch.rand(STEPS, BATCH, n)
    return best_seconds({n: lambda: task(x).sum().backward()}, rounds=repeats, calls=1)[n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="n = 512, one repeat")
    args = parser.parse_args()
    sizes = [512] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats

    torch.manual_seed(0)
    rows, missing = [], {}
    for n in sizes:
        row: dict = {"n": n}
        for name, make in TASKS.items():
            if name in missing:
                continue
            try:
                task = make(n)
            except ImportError as error:
                missing[name] = str(error)
                continue
            row[name] = round(seconds(task, n, repeats), 4)
        peers = [row[name] for name in ("snntorch", "spikingjelly", "norse") if name in row]
        if peers:
            row["speedup_over_fastest_peer"] = round(min(peers) / row["synaptorch"], 2)
        row["over_linear"] = round(row["synaptorch"] / row["linear"], 2)
        rows.append(row)
    record = {
        "benchmark": "lif_libraries",
        "unit": "seconds, forward and backward",
        "steps": STEPS,
        "batch": BATCH,
        "rows": rows,
        "missing": missing,
        "machine": machine(),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
