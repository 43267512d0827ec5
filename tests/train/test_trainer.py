import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synaptorch import BDH, BDHConfig
from synaptorch.checkpoint import load_model, load_trainer_state, step_checkpoints
from synaptorch.errors import DataError
from synaptorch.train.config import build_run_config
from synaptorch.train.trainer import BatchSampler, Trainer, evaluate_loss

CPU = torch.device("cpu")
BLOCK = 16


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


# --- exact resume -------------------------------------------------------------------------------


def test_resume_continues_exactly_where_it_stopped(corpus, tmp_path, train_losses, tiny_run):
    run = tiny_run(corpus, grad_accum=2)
    straight = Trainer(run, tmp_path / "straight", progress=False)
    straight.fit()

    first = Trainer(run, tmp_path / "resumed", progress=False)
    early = [first.train_step() for _ in range(2)]
    first.save()
    del first
    resumed = Trainer.resume(tmp_path / "resumed", progress=False)
    assert resumed.step == 2
    assert resumed.tokens_seen == 2 * 4 * BLOCK * 2
    resumed.fit()

    expected = train_losses(tmp_path / "straight")
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    assert early == [expected[1], expected[2]]
    assert train_losses(tmp_path / "resumed") == {step: expected[step] for step in (3, 4, 5, 6)}
    assert_same_weights(load_model(tmp_path / "resumed"), load_model(tmp_path / "straight"))
    moments = [
        load_trainer_state(tmp_path / name / "step-0000006")["optimizer"]["state"] for name in ("straight", "resumed")
    ]
    assert moments[0].keys() == moments[1].keys()
    for key in moments[0]:
        assert all(torch.equal(moments[0][key][m], moments[1][key][m]) for m in ("exp_avg", "exp_avg_sq"))


def test_resume_after_a_crash_logs_each_step_once(corpus, tmp_path, read_metrics, train_losses, tiny_run):
    run = tiny_run(corpus)
    Trainer(run, tmp_path / "straight", progress=False).fit()

    crashing = Trainer(run, tmp_path / "crashed", progress=False)
    original = crashing.train_step

    def crash_in_step_five():
        if crashing.step == 4:
            raise RuntimeError("power cut")
        return original()

    crashing.train_step = crash_in_step_five
    with pytest.raises(RuntimeError):
        crashing.fit()
    # Step 4 was logged, but the last checkpoint is step 3: the resumed run does step 4 again.
    assert max(r["step"] for r in read_metrics(tmp_path / "crashed")) == 4
    Trainer.resume(tmp_path / "crashed", progress=False).fit()

    records = read_metrics(tmp_path / "crashed")
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert train_losses(tmp_path / "crashed") == train_losses(tmp_path / "straight")


# --- the loop ------------------------------------------------------------------------------------


def test_fit_evaluates_and_saves_every_eval_interval(corpus, tmp_path, read_metrics, tiny_run):
    trainer = Trainer(tiny_run(corpus), tmp_path / "run", progress=False)
    result = trainer.fit()
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == ["step-0000003", "step-0000006"]
    evals = [r for r in read_metrics(tmp_path / "run") if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert result == evals[-1]
    assert math.isfinite(result["val_loss"])


def test_max_time_stops_early_with_a_checkpoint(corpus, tmp_path, tiny_run):
    trainer = Trainer(tiny_run(corpus, max_steps=100, max_time=1e-9), tmp_path / "run", progress=False)
    result = trainer.fit()
    assert trainer.step == result["step"] == 1
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == ["step-0000001"]


def test_a_diverging_loss_is_a_user_error(corpus, tmp_path, monkeypatch, tiny_run):
    trainer = Trainer(tiny_run(corpus), tmp_path / "run", progress=False)
    monkeypatch.setattr(trainer, "train_step", lambda: math.nan)
    with pytest.raises(DataError, match="diverged"):
        trainer.fit()


def test_a_split_of_one_block_plus_one_token_is_enough(tmp_path, tiny_run):
    (tmp_path / "c.txt").write_text("x" * 2 * (BLOCK + 1))
    run = tiny_run(tmp_path / "c.txt", val_fraction=0.5, max_steps=1)
    assert math.isfinite(Trainer(run, tmp_path / "run", progress=False).fit()["val_loss"])


def test_a_split_shorter_than_one_block_plus_one_token_is_refused(tmp_path, tiny_run):
    (tmp_path / "c.txt").write_text("x" * 2 * BLOCK)
    with pytest.raises(DataError, match=f"split has {BLOCK} tokens"):
        Trainer(tiny_run(tmp_path / "c.txt", val_fraction=0.5), tmp_path / "run", progress=False)


def test_gradient_accumulation_counts_every_micro_batch(corpus, tmp_path, tiny_run):
    trainer = Trainer(tiny_run(corpus, grad_accum=3), tmp_path / "run", progress=False)
    trainer.train_step()
    assert trainer.tokens_seen == 3 * 4 * BLOCK


# --- BatchSampler --------------------------------------------------------------------------------

POSITIONS = np.arange(300, dtype=np.uint16)  # each token is its own position


def test_batches_are_windows_with_targets_shifted_by_one():
    x, y = BatchSampler(POSITIONS, BLOCK, 8, seed=0).next()
    assert x.shape == y.shape == (8, BLOCK)
    assert x.dtype == y.dtype == torch.int64
    assert torch.equal(x, x[:, :1] + torch.arange(BLOCK))  # contiguous windows
    assert torch.equal(y, x + 1)


def test_every_window_start_is_reachable_and_in_bounds():
    tokens = POSITIONS[:20]
    sampler = BatchSampler(tokens, BLOCK, 16, seed=0)
    starts = set()
    for _ in range(20):
        x, y = sampler.next()
        starts |= set(x[:, 0].tolist())
        assert int(y.max()) < len(tokens)
    assert starts == {0, 1, 2, 3}


def test_same_seed_gives_the_same_batches():
    a, b, c = (BatchSampler(POSITIONS, BLOCK, 4, seed=s) for s in (5, 5, 6))
    batches_a = [a.next()[0] for _ in range(3)]
    assert all(torch.equal(x, b.next()[0]) for x in batches_a)
    assert not all(torch.equal(x, c.next()[0]) for x in batches_a)


def test_sampler_state_resumes_the_sequence():
    a = BatchSampler(POSITIONS, BLOCK, 4, seed=0)
    a.next()
    state = a.state_dict()
    expected = [a.next()[0] for _ in range(3)]
    b = BatchSampler(POSITIONS, BLOCK, 4, seed=123)
    b.load_state_dict(state)
    assert all(torch.equal(x, b.next()[0]) for x in expected)


# --- evaluate_loss --------------------------------------------------------------------------------


@pytest.fixture
def model():
    torch.manual_seed(0)
    # Dropout so that scoring in training mode would give a different, random answer.
    return BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32, dropout=0.5))


@pytest.fixture
def tokens():
    # Seven whole windows of BLOCK + 1 tokens, and a few left over that are not scored.
    return np.random.default_rng(0).integers(0, 256, 7 * BLOCK + 5).astype(np.uint8)


def window_losses(model, tokens) -> list[float]:
    """Summed next-token cross entropy of each non-overlapping window, one window at a time."""
    model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, (len(tokens) - 1) // BLOCK * BLOCK, BLOCK):
            window = torch.from_numpy(tokens[start : start + BLOCK + 1].astype(np.int64))
            logits = model(window[None, :-1])[0]
            losses.append(F.cross_entropy(logits, window[1:], reduction="sum").item())
    return losses


def test_evaluate_loss_is_cross_entropy_over_non_overlapping_windows(model, tokens):
    model.train()
    loss, count = evaluate_loss(model, tokens, BLOCK, 3, CPU)  # batches of 3, 3 and 1 windows
    assert model.training  # the mode is restored
    losses = window_losses(model, tokens)
    assert len(losses) == 7
    assert count == 7 * BLOCK
    assert loss == pytest.approx(sum(losses) / count, rel=1e-6)


def test_max_tokens_scores_evenly_spaced_windows(model, tokens):
    loss, count = evaluate_loss(model, tokens, BLOCK, 3, CPU, max_tokens=4 * BLOCK)
    losses = window_losses(model, tokens)
    assert count == 4 * BLOCK
    assert loss == pytest.approx(sum(losses[i] for i in (0, 2, 4, 6)) / count, rel=1e-6)
    assert evaluate_loss(model, tokens, BLOCK, 3, CPU, max_tokens=4 * BLOCK) == (loss, count)
    assert evaluate_loss(model, tokens, BLOCK, 3, CPU, max_tokens=10_000)[1] == 7 * BLOCK


def test_evaluate_loss_needs_one_whole_window(model):
    with pytest.raises(DataError, match="need more than"):
        evaluate_loss(model, np.zeros(BLOCK, dtype=np.uint8), BLOCK, 3, CPU)


@pytest.mark.parametrize("architecture", ["bdh", "gpt"])
def test_recompute_trains_the_same_as_storing_activations(corpus, tmp_path, architecture, tiny_run):
    def losses(recompute):
        run = tiny_run(corpus, recompute=recompute)
        if architecture == "gpt":
            run = build_run_config(
                architecture="gpt",
                model_overrides={"n_layer": 2, "n_embd": 16, "n_head": 2, "dropout": 0.2},
                train_overrides={**run.train.to_dict(), "recompute": recompute},
            )
        trainer = Trainer(run, tmp_path / f"{architecture}-{recompute}", progress=False)
        assert trainer.model.recompute is recompute
        return [trainer.train_step() for _ in range(3)]

    np.testing.assert_allclose(losses(True), losses(False), rtol=1e-5)
