import json

import pytest
import torch
from safetensors.torch import save_file

from synaptorch import BDH, GPT, BDHConfig, GPTConfig
from synaptorch.checkpoint import (
    load_checkpoint_tokenizer,
    load_model,
    load_trainer_state,
    read_meta,
    resolve_checkpoint,
    save_model,
    step_checkpoints,
)
from synaptorch.data.tokenizer import ByteTokenizer, HFTokenizer
from synaptorch.errors import CheckpointError
from synaptorch.io import write_folder_atomically
from synaptorch.train.config import build_run_config
from synaptorch.train.trainer import Trainer


def tiny_model(seed=0, **overrides) -> BDH:
    torch.manual_seed(seed)
    config = {"n_layer": 2, "n_embd": 16, "n_head": 2, "n_neuron": 32, "dropout": 0.0, **overrides}
    return BDH(BDHConfig(**config)).eval()


def test_gpt_round_trip_and_architecture_check(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2)).eval()
    model.save_pretrained(tmp_path / "gpt")
    loaded = GPT.from_pretrained(tmp_path / "gpt").eval()
    idx = torch.randint(0, 256, (1, 7))
    assert torch.equal(loaded(idx), model(idx))
    assert read_meta(tmp_path / "gpt")["architecture"] == "gpt"
    with pytest.raises(CheckpointError, match="not a BDH"):
        BDH.from_pretrained(tmp_path / "gpt")


def test_round_trip_gives_identical_logits(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt", note="hello")
    loaded = BDH.from_pretrained(tmp_path / "ckpt").eval()
    idx = torch.randint(0, 256, (2, 9))
    assert loaded.config == model.config
    assert torch.equal(loaded(idx), model(idx))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    meta = read_meta(tmp_path / "ckpt")
    assert meta["note"] == "hello"
    assert isinstance(load_checkpoint_tokenizer(tmp_path / "ckpt"), ByteTokenizer)


def test_trainer_state_round_trip(tmp_path):
    state = {"step": 7, "moments": torch.randn(3, 4), "nested": {"generator": torch.Generator().get_state()}}
    save_model(tiny_model(), tmp_path / "ckpt", trainer_state=state)
    loaded = load_trainer_state(tmp_path / "ckpt")
    assert loaded["step"] == 7
    assert torch.equal(loaded["moments"], state["moments"])
    assert torch.equal(loaded["nested"]["generator"], state["nested"]["generator"])


def test_tokenizer_file_travels_with_the_checkpoint(tmp_path, make_word_tokenizer):
    tokenizer = HFTokenizer(make_word_tokenizer(tmp_path / "tokenizer.json"))
    save_model(tiny_model(vocab_size=tokenizer.vocab_size), tmp_path / "ckpt", tokenizer=tokenizer)
    assert (tmp_path / "ckpt" / "tokenizer.json").read_bytes() == tokenizer.path.read_bytes()
    loaded = load_checkpoint_tokenizer(tmp_path / "ckpt")
    assert loaded.identity() == tokenizer.identity()
    assert loaded.encode("the neuron fires") == tokenizer.encode("the neuron fires")


class NotATensor:
    pass


def test_trainer_state_with_arbitrary_objects_is_not_unpickled(tmp_path):
    save_model(tiny_model(), tmp_path / "ckpt", trainer_state={"payload": NotATensor()})
    with pytest.raises(CheckpointError, match=r"trainer\.pt"):
        load_trainer_state(tmp_path / "ckpt")


def test_missing_trainer_state_cannot_be_resumed(tmp_path):
    save_model(tiny_model(), tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        load_trainer_state(tmp_path / "ckpt")


def test_weights_with_extra_tensors_are_refused(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    tensors = {**model.state_dict(), "extra": torch.zeros(1)}
    save_file(tensors, tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(tmp_path / "ckpt")


def test_keep_last_keeps_exactly_the_newest(tmp_path, corpus):
    run = build_run_config(
        model_overrides={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_neuron": 32},
        train_overrides={"data": str(corpus), "batch_size": 2, "block_size": 16, "keep_last": 3, "device": "cpu"},
    )
    trainer = Trainer(run, tmp_path / "run", progress=False)
    for _ in range(5):
        trainer.train_step()
        trainer.save()
    assert [p.name for p in step_checkpoints(tmp_path / "run")] == ["step-0000003", "step-0000004", "step-0000005"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step-0000003", "step-0000004", "step-0000005"]
    assert trainer.last_checkpoint == tmp_path / "run" / "step-0000005"


def test_failed_write_leaves_the_old_folder_intact(tmp_path, snapshot):
    folder = tmp_path / "ckpt"
    write_folder_atomically(folder, lambda tmp: (tmp / "weights").write_text("old"))
    before = snapshot(tmp_path)

    def crash_halfway(tmp):
        (tmp / "weights").write_text("new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomically(folder, crash_halfway)
    # Also no temporary folder is left behind.
    assert snapshot(tmp_path) == before


def test_successful_write_replaces_the_whole_folder(tmp_path):
    folder = tmp_path / "ckpt"
    write_folder_atomically(folder, lambda tmp: [(tmp / name).write_text("old") for name in ("a", "b")])
    write_folder_atomically(folder, lambda tmp: (tmp / "a").write_text("new"))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert [(p.name, p.read_text()) for p in folder.iterdir()] == [("a", "new")]


def test_resolve_checkpoint_picks_the_latest_finished_step(tmp_path):
    run = tmp_path / "run"
    for name in ("step-0000002", "step-0000010", "step-0000009", ".step-0000012.tmp99"):
        (run / name).mkdir(parents=True)
        (run / name / "config.json").write_text(json.dumps({}))
    (run / "step-0000011").mkdir()  # a folder without config.json is not a checkpoint
    assert resolve_checkpoint(run) == run / "step-0000010"
    assert resolve_checkpoint(run / "step-0000002") == run / "step-0000002"
    assert [p.name for p in step_checkpoints(run)] == ["step-0000002", "step-0000009", "step-0000010"]


def test_resolve_checkpoint_refuses_what_holds_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        resolve_checkpoint(tmp_path)
