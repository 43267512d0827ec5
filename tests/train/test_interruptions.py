"""A stop signal anywhere in a step or an evaluation ends the run at the step boundary, exactly resumable."""

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch

from synaptorch.checkpoint import load_model, step_checkpoints
from synaptorch.errors import ConfigError
from synaptorch.io import FolderLock
from synaptorch.train.trainer import RunInterrupted, Trainer

STEP_WITH_SIGNAL = 3  # signals arrive while step 3 (or the evaluation after it) is under way


def _send_once(trainer: Trainer, signum: int, *, after_step: int) -> Callable[..., None]:
    """A hook that sends `signum` to this process the first time it runs once `after_step` steps are done."""
    sent = False

    def hook(*args, **kwargs):
        nonlocal sent
        if not sent and trainer.step == after_step:
            sent = True
            os.kill(os.getpid(), signum)

    return hook


def _arm(trainer: Trainer, point: str, signum: int) -> None:
    if point == "forward":
        trainer.model.register_forward_pre_hook(_send_once(trainer, signum, after_step=STEP_WITH_SIGNAL - 1))
    elif point == "backward":
        weight = next(trainer.model.parameters())
        weight.register_hook(_send_once(trainer, signum, after_step=STEP_WITH_SIGNAL - 1))
    elif point == "optimizer step":
        trainer.optimizer.register_step_pre_hook(_send_once(trainer, signum, after_step=STEP_WITH_SIGNAL - 1))
    elif point == "evaluation":
        evaluate = trainer.evaluate
        send = _send_once(trainer, signum, after_step=STEP_WITH_SIGNAL)

        def evaluate_with_signal(*args, **kwargs):
            send()
            return evaluate(*args, **kwargs)

        trainer.evaluate = evaluate_with_signal


def _weights_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("point", ["forward", "backward", "optimizer step", "evaluation"])
def test_a_signal_anywhere_stops_at_the_step_boundary_and_resumes_exactly(
    corpus, tmp_path, train_losses, read_metrics, point, signum, tiny_run
):
    run = tiny_run(corpus, grad_accum=2)
    Trainer(run, tmp_path / "straight", progress=False).fit()

    stopped = Trainer(run, tmp_path / "stopped", progress=False)
    _arm(stopped, point, signum)
    with pytest.raises(RunInterrupted) as info:
        stopped.fit()
    assert info.value.signum == signum
    assert info.value.checkpoint == tmp_path / "stopped" / f"step-{STEP_WITH_SIGNAL:07d}"
    assert step_checkpoints(tmp_path / "stopped")[-1] == info.value.checkpoint

    resumed = Trainer.resume(tmp_path / "stopped", progress=False)
    assert resumed.step == STEP_WITH_SIGNAL
    resumed.fit()
    assert train_losses(tmp_path / "stopped") == train_losses(tmp_path / "straight")
    evals = [(r["step"], r["val_loss"]) for r in read_metrics(tmp_path / "stopped") if "val_loss" in r]
    assert evals == [(r["step"], r["val_loss"]) for r in read_metrics(tmp_path / "straight") if "val_loss" in r]
    assert _weights_equal(load_model(tmp_path / "stopped"), load_model(tmp_path / "straight"))


def test_a_second_signal_stops_at_once_keeping_the_last_checkpoint(corpus, tmp_path, tiny_run):
    trainer = Trainer(tiny_run(corpus), tmp_path / "run", progress=False)

    def twice(*args):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    trainer.optimizer.register_step_pre_hook(twice)
    with pytest.raises(RunInterrupted) as info:
        trainer.fit()
    assert info.value.at_once and info.value.signum == signal.SIGTERM
    assert info.value.checkpoint == tmp_path / "run" / "step-0000003"
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == ["step-0000003"]


def test_a_signal_in_the_last_step_ends_a_finished_run_normally(corpus, tmp_path, tiny_run):
    trainer = Trainer(tiny_run(corpus, max_steps=3), tmp_path / "run", progress=False)
    _arm(trainer, "forward", signal.SIGTERM)  # arrives in step 3 of 3
    result = trainer.fit()
    assert trainer.finished and result["step"] == 3
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == ["step-0000003"]


def test_fit_on_a_finished_run_releases_its_folder(corpus, tmp_path, tiny_run):
    Trainer(tiny_run(corpus, max_steps=2), tmp_path / "run", progress=False).fit()
    finished = Trainer.resume(tmp_path / "run", progress=False)
    assert finished.fit()["step"] == 2
    Trainer.resume(tmp_path / "run", progress=False).close()  # the folder is free again


def test_a_refused_run_frees_its_new_folder_at_once(corpus, tmp_path, tiny_run, monkeypatch):
    def no_optimizer(*args):
        raise ConfigError("no optimizer today")

    monkeypatch.setattr("synaptorch.train.trainer.make_optimizer", no_optimizer)
    with pytest.raises(ConfigError, match="no optimizer"):
        Trainer(tiny_run(corpus), tmp_path / "new", progress=False)
    FolderLock(tmp_path / "new").release()  # not left to the garbage collector


def test_the_previous_signal_handlers_come_back_after_fit(corpus, tmp_path, tiny_run):
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    Trainer(tiny_run(corpus, max_steps=2), tmp_path / "run", progress=False).fit()
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_run_folder_in_use_is_refused_until_released(corpus, tmp_path, tiny_run):
    run = tiny_run(corpus, max_steps=2)
    first = Trainer(run, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="in use by another process"):
        Trainer(run, tmp_path / "run", progress=False)
    other_process = subprocess.run(
        [sys.executable, "-c", f"from synaptorch.io import FolderLock; FolderLock({str(tmp_path / 'run')!r})"],
        capture_output=True,
        text=True,
    )
    assert other_process.returncode != 0 and "in use by another process" in other_process.stderr
    first.fit()  # the lock is released at the end of fit
    Trainer.resume(tmp_path / "run", progress=False).close()
