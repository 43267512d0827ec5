"""Training with the synapse state carried across batches (truncated BPTT), stream scoring, the
paper's optimizer recipe (linear schedule, adaptive gradient clipping), and --detach-kv."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch import BDH, BDHConfig
from synaptorch.checkpoint import load_model
from synaptorch.errors import ConfigError, DataError
from synaptorch.models.linear_attention import (
    causal_linear_attention,
    causal_linear_attention_detached_reference,
    causal_linear_attention_reference,
)
from synaptorch.train.config import TrainConfig
from synaptorch.train.streams import CarriedState, StreamLayout, bucket_means, stream_losses
from synaptorch.train.trainer import Trainer, adaptive_clip_, learning_rate

CPU = torch.device("cpu")
CARRY = {"carry_state": True, "carry_reset": 64, "precision": "fp32"}


def carried_run(tiny_run, corpus, **train):
    return tiny_run(corpus, dropout=0.0, **{**CARRY, **train})


# --- where each row reads ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n_tokens=st.integers(200, 5000),
    block=st.sampled_from([4, 8, 16]),
    rows=st.integers(1, 6),
    windows_per_doc=st.integers(0, 6),
    steps=st.integers(1, 40),
)
def test_each_row_reads_its_own_contiguous_stream_within_the_split(n_tokens, block, rows, windows_per_doc, steps):
    reset = windows_per_doc * block
    try:
        layout = StreamLayout.of(n_tokens, block, rows, reset)
    except DataError:
        assert (n_tokens - 1) // block < max(windows_per_doc, rows if reset == 0 else 1) or reset == 0
        return
    previous = None
    for step in range(steps):
        starts = layout.starts(step)
        assert len(starts) == rows
        assert all(s >= 0 and s + block + 1 <= n_tokens for s in starts)  # a window and its last target
        position = layout.position(step)
        assert position == (step % layout.windows_per_doc) * block
        if previous is not None and position > 0:  # inside a document, each row moves on by one window
            assert [s - p for s, p in zip(starts, previous, strict=True)] == [block] * rows
        previous = starts
    first = layout.starts(0)
    assert first == sorted(first)  # evenly spaced offsets, in row order


def test_a_reset_that_is_not_a_multiple_of_the_window_is_refused():
    with pytest.raises(ConfigError, match="multiple of block_size"):
        TrainConfig(carry_state=True, block_size=128, carry_reset=1000)


# --- the carried state is the recurrence over the whole stream -----------------------------------


def test_carried_windows_give_the_logits_of_the_whole_stream_and_truncate_the_gradient():
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, n_neuron=32, vocab_size=50, dropout=0.0))
    stream = torch.randint(50, (3, 48))
    carried = CarriedState(model, rows=3, device=CPU)
    outputs, embed_grads = [], []
    for k in range(3):
        state = carried.read(range(3), position=16 * k)
        window = stream[:, 16 * k : 16 * (k + 1)]
        logits, new = model.forward_recurrent(window, state)
        carried.write(range(3), new)
        outputs.append(logits)
        model.zero_grad()
        logits.square().mean().backward()
        embed_grads.append(model.embed.weight.grad.clone())
    whole = model(stream)  # the parallel form over the whole stream
    torch.testing.assert_close(torch.cat(outputs, 1), whole, rtol=1e-4, atol=1e-5)
    # Within the truncation: the last window's gradient equals the whole stream's gradient of the
    # same loss with the state entering the window held constant.
    with torch.no_grad():
        _, before = model.forward_recurrent(stream[:, :32])
    model.zero_grad()
    logits, _ = model.forward_recurrent(stream[:, 32:], before)
    logits.square().mean().backward()
    torch.testing.assert_close(embed_grads[-1], model.embed.weight.grad)
    # ... and reaches no token before the window: only the embeddings of the window's tokens move.
    seen = torch.zeros(50, dtype=torch.bool)
    seen[stream[:, 32:].flatten()] = True
    assert embed_grads[-1][~seen].abs().max() == 0
    model.zero_grad()
    whole[:, 32:].square().mean().backward()  # untruncated, earlier tokens get gradient too
    assert model.embed.weight.grad[~seen].abs().max() > 0


def test_a_fresh_document_starts_from_an_empty_state():
    model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32, vocab_size=50, dropout=0.0))
    carried = CarriedState(model, rows=2, device=CPU)
    _, state = model.forward_recurrent(torch.randint(50, (2, 8)))
    carried.write([0, 1], state)
    assert carried.read([1], position=8).rho[0].abs().sum() > 0
    fresh = carried.read([1], position=0)
    assert fresh.position == 0 and fresh.rho[0].abs().sum() == 0


def test_training_with_carried_state_scores_each_row_as_its_stream(corpus, tmp_path, tiny_run):
    # A learning rate too small to move the weights leaves the losses those of the initial model.
    run = carried_run(tiny_run, corpus, lr=1e-12, min_lr=0.0, weight_decay=0.0, max_steps=4, grad_accum=2)
    trainer = Trainer(run, tmp_path / "run", progress=False)
    model = load_model_copy(trainer)
    tokens = trainer.corpus.split("train")
    losses = [trainer.train_step() for _ in range(4)]
    layout = trainer.streams
    assert layout.rows == 8 and layout.windows_per_doc == 4
    for step, loss in enumerate(losses):
        doc_start = [s - layout.position(step) for s in layout.starts(step)]
        expected = []
        for start in doc_start:
            row = torch.from_numpy(tokens[start : start + 65].astype(np.int64))[None]
            with torch.no_grad():
                logits = model(row[:, :-1])
            window = slice(layout.position(step), layout.position(step) + 16)
            expected.append(F.cross_entropy(logits[0, window], row[0, 1:][window]).item())
        assert loss == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def load_model_copy(trainer: Trainer) -> BDH:
    model = BDH(trainer.model.config)
    model.load_state_dict(trainer.model.state_dict())
    return model.eval()


def test_gradient_accumulation_gives_each_row_its_own_stream(corpus, tmp_path, tiny_run):
    one = Trainer(carried_run(tiny_run, corpus, batch_size=4, grad_accum=2), tmp_path / "one", progress=False)
    two = Trainer(carried_run(tiny_run, corpus, batch_size=8, grad_accum=1), tmp_path / "two", progress=False)
    for _ in range(5):
        assert one.train_step() == pytest.approx(two.train_step(), rel=1e-5)


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_with_carried_state_is_exact(corpus, tmp_path, tiny_run, train_losses, shuffle):
    run = carried_run(tiny_run, corpus, max_steps=6, eval_interval=3, carry_shuffle=shuffle)
    Trainer(run, tmp_path / "straight", progress=False).fit()
    first = Trainer(run, tmp_path / "resumed", progress=False)
    for _ in range(3):  # to the middle of a document of four windows
        first.train_step()
    first.save()
    first.close()
    resumed = Trainer.resume(tmp_path / "resumed", progress=False)
    assert resumed.carried.position == 48  # where the fourth window of the document reads
    torch.testing.assert_close(resumed.carried.rho, first.carried.rho, rtol=0, atol=0)
    resumed.fit()
    straight = train_losses(tmp_path / "straight")
    assert train_losses(tmp_path / "resumed") == {step: straight[step] for step in (4, 5, 6)}
    a, b = load_model(tmp_path / "resumed").state_dict(), load_model(tmp_path / "straight").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_carried_state_needs_bdh(corpus, tmp_path):
    from synaptorch.train.config import build_run_config

    run = build_run_config(
        architecture="gpt",
        model_overrides={"n_layer": 1, "n_embd": 16, "n_head": 2},
        train_overrides={
            "data": str(corpus),
            "batch_size": 2,
            "block_size": 16,
            "carry_state": True,
            "carry_reset": 64,
        },
    )
    with pytest.raises(ConfigError, match="synapse state"):
        Trainer(run, tmp_path / "run", progress=False)


# --- scoring a stream -------------------------------------------------------------------------


def test_stream_losses_are_the_per_position_losses_of_each_document():
    torch.manual_seed(1)
    model = BDH(BDHConfig(n_layer=1, n_embd=16, n_head=2, n_neuron=32, vocab_size=40, dropout=0.0)).eval()
    tokens = np.random.default_rng(0).integers(0, 40, 400).astype(np.uint16)
    per_position, n_docs = stream_losses(model, tokens, doc_len=96, window=20, batch_size=2, device=CPU)
    assert n_docs == 4 and per_position.shape == (96,)
    expected = np.zeros(96)
    for d in range(4):
        row = torch.from_numpy(tokens[96 * d : 96 * d + 97].astype(np.int64))[None]
        with torch.no_grad():
            expected += F.cross_entropy(model(row[:, :-1])[0], row[0, 1:], reduction="none").numpy() / 4
    np.testing.assert_allclose(per_position, expected, rtol=1e-5)
    buckets = bucket_means(per_position, [0, 32, 64, 128])
    assert list(buckets) == ["0-32", "32-64", "64-96"]
    assert buckets["64-96"] == pytest.approx(per_position[64:].mean())


def test_bucket_names_count_in_thousands_of_1024():
    assert list(bucket_means(np.ones(9000), [0, 128, 512, 2048, 8192])) == ["0-128", "128-512", "512-2k", "2k-8k"]


# --- the paper's optimizer recipe ----------------------------------------------------------------


def test_the_linear_schedule_warms_up_then_falls_linearly_to_min_lr():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110, schedule="linear")
    assert learning_rate(0, cfg) == pytest.approx(1e-4)
    assert learning_rate(9, cfg) == pytest.approx(1e-3)
    assert learning_rate(60, cfg) == pytest.approx(1e-3 + (1e-4 - 1e-3) * 0.5)
    assert learning_rate(110, cfg) == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="step")


def test_adaptive_clipping_scales_each_unit_to_its_ratio_of_the_weight_norm():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]]))
    w.grad = torch.tensor([[6.0, 8.0], [0.3, 0.4], [0.01, 0.0]])
    v = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    v.grad = torch.tensor([0.0, 1.0])
    adaptive_clip_([w, v], ratio=0.1)
    # Row 0: ||W|| = 5, the most is 0.5, ||G|| = 10 is scaled by 0.05. Row 1: a zero row gets
    # eps = 1e-3, the most 1e-4. Row 2: ||G|| = 0.01 <= 0.1 stays. The vector is one unit.
    torch.testing.assert_close(w.grad[0], torch.tensor([0.3, 0.4]))
    assert w.grad[1].norm().item() == pytest.approx(1e-4, rel=1e-4)
    torch.testing.assert_close(w.grad[2], torch.tensor([0.01, 0.0]))
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 0.1]))


def test_the_paper_preset_carries_state_with_its_recipe():
    from synaptorch.train.config import build_run_config

    run = build_run_config(preset="paper-25m-stateful")
    t = run.train
    assert (t.carry_state, t.block_size, t.warmup_steps, t.schedule, t.min_lr) == (True, 2048, 1000, "linear", 1e-4)
    assert t.agc > 0 and t.weight_decay == 0.1


# --- --detach-kv --------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_detached_keys_and_values_change_the_gradient_not_the_output(chunk):
    torch.manual_seed(2)
    q = torch.rand(2, 3, 20, 12, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 20, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 3, 20, 5, dtype=torch.float64)
    grads = {}
    for name, fn in {
        "chunked": lambda: causal_linear_attention(q, x, chunk, detach_kv=True),
        "reference": lambda: causal_linear_attention_detached_reference(q, x),
        "full": lambda: causal_linear_attention_reference(q, x),
    }.items():
        q.grad = x.grad = None
        out = fn()
        (out * g).sum().backward()
        grads[name] = (out.detach(), q.grad.clone(), None if x.grad is None else x.grad.clone())
    torch.testing.assert_close(grads["chunked"][0], grads["full"][0])
    torch.testing.assert_close(grads["chunked"][1], grads["reference"][1])
    assert grads["chunked"][2] is None and grads["reference"][2] is None
    assert not torch.allclose(grads["chunked"][1], grads["full"][1])


def test_detach_kv_trains_a_bdh_run(corpus, tmp_path, tiny_run):
    plain = Trainer(tiny_run(corpus, dropout=0.0, precision="fp32"), tmp_path / "plain", progress=False)
    detached = Trainer(tiny_run(corpus, dropout=0.0, precision="fp32", detach_kv=True), tmp_path / "kv", progress=False)
    assert detached.model.detach_kv and not plain.model.detach_kv
    first = [detached.train_step(), plain.train_step()]
    assert first[0] == pytest.approx(first[1], rel=1e-6)  # the same forward pass
    later = [detached.train_step() for _ in range(5)]
    assert all(math.isfinite(x) for x in later) and later[-1] < first[0]
    assert [detached.train_step()] != [plain.train_step()]  # another gradient


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 5),
    windows_per_doc=st.integers(1, 4),
    n_docs_extra=st.integers(0, 20),
    seed=st.integers(0, 2**16),
)
def test_shuffled_documents_are_each_read_whole_and_all_of_them_once_per_row(rows, windows_per_doc, n_docs_extra, seed):
    block = 8
    n_docs = rows + n_docs_extra
    n_tokens = n_docs * windows_per_doc * block + 1
    layout = StreamLayout.of(n_tokens, block, rows, windows_per_doc * block, shuffle_seed=seed)
    assert layout == StreamLayout.of(n_tokens, block, rows, windows_per_doc * block, shuffle_seed=seed)
    doc_tokens = windows_per_doc * block
    visited = [[] for _ in range(rows)]
    for step in range(n_docs * windows_per_doc):
        starts = layout.starts(step)
        for row, start in enumerate(starts):
            doc, offset = divmod(start, doc_tokens)
            assert offset == layout.position(step)  # a document is read from its start, window after window
            if offset == 0:
                visited[row].append(doc)
    assert all(sorted(docs) == list(range(n_docs)) for docs in visited)


def test_shuffling_changes_the_order_of_the_documents_and_nothing_else():
    plain = StreamLayout.of(64 * 50 + 1, 8, 4, 64)
    shuffled = StreamLayout.of(64 * 50 + 1, 8, 4, 64, shuffle_seed=0)
    first_docs = [s // 64 for s in plain.starts(0)]
    assert first_docs == [0, 12, 25, 37]
    assert [s // 64 for s in shuffled.starts(0)] != first_docs
    assert sorted(shuffled.document_order.tolist()) == list(range(50))
    assert [plain.position(k) for k in range(9)] == [shuffled.position(k) for k in range(9)]
