"""Real torchrun launches on the CPU (gloo): several processes train exactly as one."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from synaptorch.checkpoint import load_model, step_checkpoints
from synaptorch.errors import ConfigError
from synaptorch.train.distributed import World, check_global_batch
from synaptorch.train.trainer import Trainer

TINY = (
    *("--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-neuron", "32", "--dropout", "0"),
    *("--batch-size", "4", "--grad-accum", "2", "--block-size", "16", "--warmup-steps", "2"),
    *("--eval-interval", "2", "--eval-tokens", "256", "--log-interval", "1", "--device", "cpu", "--precision", "fp32"),
    *("--sample-tokens", "0", "--quiet"),
)


def _torchrun(processes: int, *args, timeout: int = 240, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    # A worker that aborts prints the Python stacks of its threads into the failure's stderr.
    popen["env"] = {**popen.get("env", os.environ), "PYTHONFAULTHANDLER": "1"}
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


def test_restarted_workers_continue_only_the_checkpoints_of_their_own_launch(tiny_train, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-a")
    assert tiny_train(out, "--max-steps", 2, "--eval-interval", 2).exit_code == 0
    assert not Trainer.restarted(out)  # the first attempt starts the run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert Trainer.restarted(out)
    result = tiny_train(out, "--max-steps", 2, "--eval-interval", 2)  # the same command, given again by torchrun
    assert result.exit_code == 0, result.output
    assert "nothing to train" in result.stdout  # it continued the run instead of refusing a used folder
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "launch-b")  # another launch into a used folder is refused
    assert not Trainer.restarted(out)
    assert tiny_train(out, "--max-steps", 6).exit_code == 2


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


SINGLE = (sys.executable, "-m", "synaptorch")
GPT_TINY = (
    "--model",
    "gpt",
    *TINY[TINY.index("--batch-size") :],
    "--n-layer",
    "2",
    "--n-embd",
    "16",
    "--n-head",
    "2",
    "--dropout",
    "0",
)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["bdh", "gpt"])
def test_two_sharded_processes_train_as_one_and_save_a_whole_checkpoint(one_process, corpus, tmp_path, architecture):
    flags = TINY if architecture == "bdh" else GPT_TINY
    if architecture == "bdh":
        reference = one_process
    else:
        reference = tmp_path / "single"
        single = subprocess.run(
            [*SINGLE, "train", "--out", str(reference), "--data", str(corpus), *flags, "--max-steps", "4"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert single.returncode == 0, single.stderr
    out = tmp_path / "run"
    proc = _torchrun(2, "train", "--out", out, "--data", corpus, *flags, "--max-steps", 4, "--fsdp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _close(_records(out), _records(reference))
    assert _weights_close(out, reference)  # model.safetensors holds the whole model, loadable anywhere


@pytest.mark.slow
def test_two_processes_carry_the_synapse_states_of_their_rows_as_one(corpus, tmp_path):
    carry = ("--carry-state", "--carry-reset", "48", "--max-steps", "4")
    single = subprocess.run(
        [*SINGLE, "train", "--out", str(tmp_path / "single"), "--data", str(corpus), *TINY, *carry],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 0, single.stderr
    first = _torchrun(2, "train", "--out", tmp_path / "run", "--data", corpus, *TINY, *carry[:-1], 2)
    assert first.returncode == 0, first.stderr[-3000:]
    rest = _torchrun(2, "train", "--out", tmp_path / "run", "--resume", "--max-steps", 4, "--quiet")
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert _close(_records(tmp_path / "run"), _records(tmp_path / "single"))
    assert _weights_close(tmp_path / "run", tmp_path / "single")


@pytest.mark.slow
@pytest.mark.parametrize("sharded_first", [True, False])
def test_a_run_resumes_with_or_without_sharding(one_process, corpus, tmp_path, sharded_first):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    single = [sys.executable, "-m", "synaptorch", "train", "--out", str(out)]
    if sharded_first:
        first = _torchrun(2, "train", "--out", out, "--data", corpus, *TINY, "--max-steps", 2, "--fsdp")
        rest = subprocess.run(
            [*single, "--resume", "--max-steps", "4", "--quiet"], capture_output=True, text=True, env=env, timeout=240
        )
    else:
        first = subprocess.run(
            [*single, "--data", str(corpus), *TINY, "--max-steps", "2"], capture_output=True, text=True, env=env
        )
        rest = _torchrun(2, "train", "--out", out, "--resume", "--max-steps", 4, "--fsdp", "--quiet")
    assert first.returncode == 0, first.stderr[-3000:]
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert _close(_records(out), _records(one_process))
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


LONG = ("--max-steps", 400, "--eval-interval", 100)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus):
    """A run of two processes long enough to be stopped, killed and restarted in the middle."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = _torchrun(2, "train", "--out", out, "--data", corpus, *TINY, *LONG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_sigterm_to_the_launcher_checkpoints_every_process_and_resumes_exactly(uninterrupted, corpus, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "synaptorch"]
    launcher = subprocess.Popen(
        [*command, "train", "--out", str(out), "--data", str(corpus), *TINY, *map(str, LONG)],
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
    assert _close(_records(out), _records(uninterrupted))


@pytest.mark.slow
@pytest.mark.parametrize("victim_rank", [0, 1])
def test_a_killed_process_restarted_by_torchrun_finishes_as_an_uninterrupted_run(
    uninterrupted, corpus, tmp_path, victim_rank
):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1"]
    launcher = subprocess.Popen(
        [*command, "-m", "synaptorch", "train", "--out", str(out), "--data", str(corpus), *TINY, *map(str, LONG)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not step_checkpoints(out) or len(_records(out)) < 130:  # past the first checkpoint, at step 100
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.05)
        os.kill(_workers(out, rank=victim_rank)[0], signal.SIGKILL)
        stdout, stderr = launcher.communicate(timeout=240)
    finally:
        _stop(launcher, out)
    assert launcher.returncode == 0, stderr[-3000:]
    assert "error: a training process failed or stopped answering" in stderr  # the first attempt's survivor
    assert json.loads(stdout.splitlines()[-1])["step"] == 400
    assert _close(_records(out), _records(uninterrupted))
    assert _weights_close(step_checkpoints(out)[-1], step_checkpoints(uninterrupted)[-1])


def _stop(launcher: subprocess.Popen, out) -> None:
    """Leave no launcher or worker running after a test, passed or failed."""
    for pid in _workers(out):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if launcher.poll() is None:
        launcher.kill()
        launcher.communicate()


def _workers(out, rank: int | None = None) -> list[int]:
    """The process ids of the training workers writing into `out` (not their launcher), or of the one of `rank`."""
    listing = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True, check=True).stdout
    pids = [
        int(line.split()[0])
        for line in listing.splitlines()[1:]
        if f"--out {out}" in line and "torch.distributed.run" not in line and " -m synaptorch " in line
    ]
    return [pid for pid in pids if rank is None or _rank_of(pid) == rank]


def _rank_of(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"RANK="):
                return int(entry.removeprefix(b"RANK="))
    return None


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
