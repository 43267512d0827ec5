"""Real torchrun launches on the CPU (gloo): several processes train exactly as one."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from synaptorch.checkpoint import load_model, step_checkpoints
from synaptorch.errors import ConfigError
from synaptorch.train.distributed import World, check_global_batch

TINY = (
    *("--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-neuron", "32", "--dropout", "0"),
    *("--batch-size", "4", "--grad-accum", "2", "--block-size", "16", "--warmup-steps", "2"),
    *("--eval-interval", "2", "--eval-tokens", "256", "--log-interval", "1", "--device", "cpu"),
    *("--sample-tokens", "0", "--quiet"),
)


def _torchrun(processes: int, *args, timeout: int = 240, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run(
        [*command, "-m", "synaptorch", *map(str, args)], capture_output=True, text=True, timeout=timeout, **popen
    )


def _records(run) -> list[tuple[int, str, float]]:
    lines = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], "val" if "val_loss" in r else "train", r.get("val_loss", r.get("train_loss"))) for r in lines]


def _close(a: list, b: list, tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(x[:2] == y[:2] and abs(x[2] - y[2]) <= tol for x, y in zip(a, b, strict=True))


def _weights_close(a, b, tol: float = 1e-5) -> bool:
    sa, sb = load_model(a).state_dict(), load_model(b).state_dict()
    return all(torch.allclose(sa[k], sb[k], atol=tol, rtol=0) for k in sa)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("single") / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synaptorch",
            "train",
            "--out",
            str(out),
            "--data",
            str(corpus),
            *TINY,
            "--max-steps",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_global_batch_must_divide_among_the_processes():
    assert check_global_batch(World(rank=0, size=2), 4, 2) == 4
    assert check_global_batch(World(), 3, 1) == 3
    with pytest.raises(ConfigError, match="does not divide among 3 processes"):
        check_global_batch(World(rank=0, size=3), 4, 2)


@pytest.mark.slow
def test_two_processes_train_as_one(one_process, corpus, tmp_path):
    out = tmp_path / "run"
    proc = _torchrun(2, "train", "--out", out, "--data", corpus, *TINY, "--max-steps", 4)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("training", "{"))]
    assert len(lines) == 2  # the main process speaks for both
    assert _close(_records(out), _records(one_process))
    assert [p.name for p in step_checkpoints(out)] == ["step-0000002", "step-0000004"]
    assert _weights_close(out, one_process)


@pytest.mark.slow
def test_a_run_resumes_with_another_number_of_processes(one_process, corpus, tmp_path):
    out = tmp_path / "run"
    first = _torchrun(2, "train", "--out", out, "--data", corpus, *TINY, "--max-steps", 2)
    assert first.returncode == 0, first.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    rest = subprocess.run(
        [sys.executable, "-m", "synaptorch", "train", "--out", str(out), "--resume", "--max-steps", "4", "--quiet"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert rest.returncode == 0, rest.stderr
    assert _close(_records(out), _records(one_process))
    assert _weights_close(out, one_process)


@pytest.mark.slow
def test_a_global_batch_that_does_not_divide_is_one_line_per_process(corpus, tmp_path):
    proc = _torchrun(
        2, "train", "--out", tmp_path / "run", "--data", corpus, *TINY, "--batch-size", 3, "--grad-accum", 1
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("does not divide among 2 processes" in line for line in errors)
    assert "[rank0]: Traceback" not in proc.stderr and "[rank1]: Traceback" not in proc.stderr  # torchrun's own remains
    assert not step_checkpoints(tmp_path / "run")


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_every_process_and_resumes_exactly(corpus, tmp_path):
    straight, out = tmp_path / "straight", tmp_path / "run"
    long = ("--max-steps", 400, "--eval-interval", 100)
    proc = _torchrun(2, "train", "--out", straight, "--data", corpus, *TINY, *long)
    assert proc.returncode == 0, proc.stderr[-3000:]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "synaptorch"]
    launcher = subprocess.Popen(
        [*command, "train", "--out", str(out), "--data", str(corpus), *TINY, *map(str, long)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").is_file() or len(_records(out)) < 20:
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.05)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        _stop(launcher, out)
    assert launcher.returncode != 0
    assert "interrupted by SIGTERM: saved" in stderr
    [checkpoint] = step_checkpoints(out)
    stopped_at = int(checkpoint.name.removeprefix("step-"))
    assert 0 < stopped_at < 400
    resumed = _torchrun(2, "train", "--out", out, "--resume", "--quiet", "--sample-tokens", 0)
    assert resumed.returncode == 0, resumed.stderr
    assert _close(_records(out), _records(straight))
    shutil.rmtree(straight)


def _stop(launcher: subprocess.Popen, out) -> None:
    """Leave no launcher or worker running after a test, passed or failed."""
    for pid in _workers(out):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if launcher.poll() is None:
        launcher.kill()
        launcher.communicate()


def _workers(out) -> list[int]:
    """The process ids of the training workers writing into `out` (not their launcher)."""
    listing = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [
        int(line.split()[0])
        for line in listing.splitlines()[1:]
        if f"--out {out}" in line and "torch.distributed.run" not in line and " -m synaptorch " in line
    ]


@pytest.mark.slow
def test_a_dead_process_ends_the_others_with_one_error_line_soon(corpus, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "synaptorch"]
    launcher = subprocess.Popen(
        [*command, "train", "--out", str(out), "--data", str(corpus), *TINY, "--max-steps", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not step_checkpoints(out):
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.05)
        victim = max(_workers(out))
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = launcher.communicate(timeout=120)
    finally:
        _stop(launcher, out)
    assert launcher.returncode != 0
    assert time.monotonic() - killed_at < 60
    assert "error: a training process failed or stopped answering" in stderr
    assert step_checkpoints(out)  # the checkpoints written before are kept
