"""Runs that start from another checkpoint's weights (--init-from): fine-tuning, and the specialists of a merge."""

import torch

from synaptorch.checkpoint import load_model, read_meta
from synaptorch.train.config import build_run_config
from synaptorch.train.trainer import Trainer

MODEL = ("--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-neuron", "32", "--dropout", "0")
TRAIN = ("--batch-size", "4", "--block-size", "16", "--eval-interval", "3", "--eval-tokens", "64", "--device", "cpu")


def _base(cli, corpus, tmp_path):
    base = tmp_path / "base"
    result = cli("train", "--out", base, "--data", corpus, *MODEL, *TRAIN, "--max-steps", 3, "--quiet")
    assert result.exit_code == 0, result.output
    return base


def test_a_fine_tuning_run_starts_from_the_checkpoints_weights_and_model(cli, corpus, make_text, tmp_path):
    base = _base(cli, corpus, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=7))
    # No model flags: the model is the checkpoint's, not the preset's.
    run = build_run_config(
        train_overrides={
            "data": str(other),
            "init_from": str(base),
            "device": "cpu",
            "batch_size": 4,
            "block_size": 16,
            "max_steps": 3,
        }
    )
    trainer = Trainer(run, tmp_path / "tuned", progress=False)
    try:
        assert trainer.model.config == load_model(base).config
        for name, tensor in load_model(base).state_dict().items():
            assert torch.equal(trainer.model.state_dict()[name], tensor), name
        assert trainer.step == 0 and not trainer.optimizer.state  # a fresh optimizer
        trainer.fit()
    finally:
        trainer.close()
    meta = read_meta(trainer.last_checkpoint)
    assert meta["train"]["init_from"] == str(base.resolve() / "step-0000003")


def test_fine_tuning_refuses_what_contradicts_its_checkpoint(cli, corpus, tmp_path, assert_user_error):
    base = _base(cli, corpus, tmp_path)
    common = ("train", "--out", tmp_path / "tuned", "--data", corpus, *TRAIN, "--init-from", base)
    assert_user_error(cli(*common, "--n-embd", "32"), "contradicts --init-from")
    assert_user_error(cli(*common, "--model", "gpt"), "holds a bdh model")
    assert_user_error(cli(*common, "--tokenizer", tmp_path / "missing.json"), "missing.json")
    assert_user_error(
        cli("train", "--out", tmp_path / "t2", "--data", corpus, "--init-from", tmp_path / "none"), "not found"
    )
    assert not (tmp_path / "tuned").exists()
