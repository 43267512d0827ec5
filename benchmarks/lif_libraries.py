"""A Linear(n, n) followed by LIF neurons, against the SNN libraries (the Open Neuromorphic task).

    pip install --no-deps -r benchmarks/peers.txt   # the peers; peers.txt says why --no-deps
    python benchmarks/lif_libraries.py              # n = 512 to 4096, about 10 minutes
    python benchmarks/lif_libraries.py --quick      # n = 512, under a minute

Every library runs the same task on input x of 500 time steps, batch 16 and n features: one
nn.Linear(n, n) over all time steps at once (one product, the same weights for every library),
then the library's LIF neurons stepped through time on those currents; forward and backward of the
sum of the output spikes. Seconds, best of --repeats after a warm-up. `linear` is the Linear layer
alone, which bounds every library from below.

The neurons: synaptorch's `LIF(n, beta=0.9)`, v = 0.9 v + I with reset by subtraction;
SpikingJelly's multi-step `LIFNode` set to the same neuron (tau = 10 without input decay, soft
reset), spike for spike; snnTorch's `Leaky(beta=0.9)`, the same but for subtracting the
threshold one step later, undecayed; Norse's `LIF()`, whose defaults give the same membrane decay
of 0.9 per step but add a synaptic current, one more state per step. Each keeps its default
surrogate gradient. Peers that do not import are reported as missing rather than timed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import Tensor, nn

from synaptorch.neurons import LIF

from common import best_seconds, emit

STEPS, BATCH, BETA = 500, 16, 0.9
PEERS = ("snntorch", "spikingjelly", "norse")

Neurons = Callable[[Tensor], Tensor]  # input currents (T, B, n) -> output spikes (T, B, n)


def synaptorch_neurons(n: int) -> Neurons:
    lif = LIF(n, beta=BETA)
    return lambda currents: lif(currents)[0]


def snntorch_neurons(n: int) -> Neurons:
    import snntorch

    lif = snntorch.Leaky(beta=BETA)

    def run(currents: Tensor) -> Tensor:
        mem, spikes = lif.init_leaky(), []
        for current in currents:
            spike, mem = lif(current, mem)
            spikes.append(spike)
        return torch.stack(spikes)

    return run


def spikingjelly_neurons(n: int) -> Neurons:
    """Multi-step mode; SpikingJelly 2 runs it in torch (earlier versions took backend="torch")."""
    from spikingjelly.activation_based import functional, neuron

    lif = neuron.LIFNode(tau=1 / (1 - BETA), decay_input=False, v_reset=None, step_mode="m")

    def run(currents: Tensor) -> Tensor:
        functional.reset_net(lif)
        return lif(currents)

    return run


def norse_neurons(n: int) -> Neurons:
    import norse.torch as norse

    lif = norse.LIF()
    return lambda currents: lif(currents)[0]


NEURONS: dict[str, Callable[[int], Neurons]] = {
    "synaptorch": synaptorch_neurons,
    "snntorch": snntorch_neurons,
    "spikingjelly": spikingjelly_neurons,
    "norse": norse_neurons,
}


def task(linear: nn.Linear, neurons: Neurons) -> Callable[[Tensor], Tensor]:
    """The work every library does: the product over all time steps at once, then its neurons."""
    return lambda x: neurons(linear(x))


def seconds(task: Callable[[Tensor], Tensor], x: Tensor, repeats: int) -> float:
    return best_seconds({"task": lambda: task(x).sum().backward()}, rounds=repeats, calls=1)["task"]


def measure(n: int, repeats: int, missing: dict[str, str]) -> dict:
    """One row: seconds of the Linear layer alone and of every library that imports, at width n.
    A peer that fails to import is added to `missing` and not tried at the next width."""
    torch.manual_seed(0)
    linear = nn.Linear(n, n)
    x = torch.rand(STEPS, BATCH, n)
    row: dict = {"n": n, "linear": round(seconds(linear, x, repeats), 4)}
    for name, make in NEURONS.items():
        if name in missing:
            continue
        try:
            neurons = make(n)
        except ImportError as error:
            missing[name] = str(error)
            continue
        row[name] = round(seconds(task(linear, neurons), x, repeats), 4)
    peers = [row[name] for name in PEERS if name in row]
    if peers:
        row["speedup_over_fastest_peer"] = round(min(peers) / row["synaptorch"], 2)
    row["over_linear"] = round(row["synaptorch"] / row["linear"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024,2048,4096")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="n = 512, one repeat")
    args = parser.parse_args()
    sizes = [512] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats

    missing: dict[str, str] = {}
    rows = [measure(n, repeats, missing) for n in sizes]
    emit(
        "lif_libraries",
        {"unit": "seconds, forward and backward", "steps": STEPS, "batch": BATCH, "rows": rows, "missing": missing},
    )


if __name__ == "__main__":
    main()
