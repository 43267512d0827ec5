"""The benchmarks run end to end and print the JSON line their issue asks for (slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SHAKESPEARE = BENCHMARKS.parents[1] / "shared" / "data" / "tinyshakespeare.txt"


def run_benchmark(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=600, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_cpu_learns_within_a_short_budget():
    if not SHAKESPEARE.is_file():
        pytest.fail(f"{SHAKESPEARE} is missing; the benchmarks need ../shared beside the checkout")
    record = run_benchmark("train_cpu.py", "--budget", "40", "--eval-interval", "50")
    assert record["steps"] > 10 and record["tokens"] == record["steps"] * 16 * 128
    # Unigram byte entropy of the text is about 3.3 nats; a model that learned context does better.
    assert record["val_loss_nats_per_byte"] < 2.8
    assert record["train_s"] < 60 and record["peak_rss_mib"] > 0


@pytest.mark.slow
def test_generate_memory_is_flat_in_context_length():
    record = run_benchmark("generate.py", "--contexts", "64,512,2048", "--tokens", "20", "--repeats", "1")
    assert set(record["contexts"]) == {"64", "512", "2048"}
    assert all(c["ms_per_token"] > 0 for c in record["contexts"].values())
    assert record["rss_spread"] < 1.2
