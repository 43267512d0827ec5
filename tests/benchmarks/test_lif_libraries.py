"""benchmarks/lif_libraries.py gives every SNN library the same task, and benchmarks print one record."""

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmarks(monkeypatch):
    """The benchmarks' folder on the import path, as when a script runs."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import lif_libraries

    import common

    return common, lif_libraries


def neurons_of(lif_libraries, name: str, n: int):
    """A library's neurons, or a skip (a failure under CI, which installs every peer)."""
    try:
        return lif_libraries.NEURONS[name](n)
    except ImportError as error:
        message = f"{name} is missing ({error}); install the peers with pip install --no-deps -r benchmarks/peers.txt"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # inside Norse
@pytest.mark.parametrize("name", ["synaptorch", "snntorch", "spikingjelly", "norse"])
def test_every_library_runs_the_linear_layer_once_then_its_neurons(benchmarks, name):
    _, lif_libraries = benchmarks
    neurons = neurons_of(lif_libraries, name, 8)
    linear = nn.Linear(8, 8)
    products = []
    linear.register_forward_hook(lambda module, args, out: products.append(args[0].shape))
    x = torch.rand(30, 2, 8)
    spikes = lif_libraries.task(linear, neurons)(x)
    assert products == [x.shape]  # one product over all time steps, none inside the time loop
    assert spikes.shape == x.shape and set(spikes.unique().tolist()) <= {0.0, 1.0}
    spikes.sum().backward()
    assert linear.weight.grad is not None


def test_spikingjelly_is_set_to_synaptorchs_neuron(benchmarks):
    _, lif_libraries = benchmarks
    spikingjelly = neurons_of(lif_libraries, "spikingjelly", 16)
    torch.manual_seed(0)
    currents = torch.randn(100, 4, 16) * 0.8 + 0.3
    expected = lif_libraries.synaptorch_neurons(16)(currents)
    assert 0.1 < expected.mean() < 0.5
    assert torch.equal(spikingjelly(currents), expected)


def test_emit_prints_one_json_line_with_the_machine(benchmarks, capsys):
    common, _ = benchmarks
    common.emit("example", {"rows": [1, 2], "unit": "s"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert list(record)[:3] == ["benchmark", "rows", "unit"] and record["benchmark"] == "example"
    assert record["torch"] == torch.__version__ and record["date"].endswith("+00:00")
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]


def test_every_benchmark_prints_its_record_through_emit():
    # A child process's line for its parent (fast_paths.py, memory.py) is not the benchmark's record.
    for script in sorted(BENCHMARKS.glob("*.py")):
        if script.name == "common.py":
            continue
        source = "".join(script.read_text().split())  # without white space, however the call is wrapped
        assert f'emit("{script.stem}",' in source, script.name
        assert "print(json.dumps(record))" not in source and '"machine":machine()' not in source, script.name
