import ast
import inspect
import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch import BDH, BDHConfig
from synaptorch.errors import ConfigError
from synaptorch.models import bdh, bdh_generation, gpt, layers
from synaptorch.models.gpt import GPT, GPTConfig
from synaptorch.models.layers import rope, rope_phasors


def tiny_model(seed=0, **overrides) -> BDH:
    config = dict(n_layer=2, n_embd=16, n_head=2, n_neuron=32, vocab_size=256, dropout=0.0)
    torch.manual_seed(seed)
    return BDH(BDHConfig(**{**config, **overrides})).eval()


def test_paper_config_has_the_papers_parameter_count():
    config = BDHConfig()
    assert config.n_params == 25_296_896
    with torch.device("meta"):
        model = BDH(config)
    assert sum(p.numel() for p in model.parameters()) == config.n_params


def test_weights_are_shared_across_layers():
    shallow, deep = tiny_model(n_layer=1), tiny_model(n_layer=5)
    assert sum(p.numel() for p in shallow.parameters()) == sum(p.numel() for p in deep.parameters())


def test_parallel_shapes():
    model = tiny_model()
    logits = model(torch.randint(0, 256, (3, 11)))
    assert logits.shape == (3, 11, 256)


def test_recurrent_state_shapes_and_position():
    model = tiny_model()
    logits, state = model.forward_recurrent(torch.randint(0, 256, (2, 5)))
    assert logits.shape == (2, 5, 256)
    assert state.position == 5
    assert len(state.rho) == model.config.n_layer
    assert all(rho.shape == (2, 2, 32, 16) for rho in state.rho)


def test_model_is_causal():
    model = tiny_model()
    idx = torch.randint(0, 256, (1, 12))
    changed = idx.clone()
    changed[0, 7] = (idx[0, 7] + 1) % 256
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@settings(max_examples=25, deadline=None)
@given(
    n_layer=st.integers(1, 3),
    n_head=st.integers(1, 3),
    half_neurons=st.integers(1, 24),
    n_embd=st.integers(2, 24),
    batch=st.integers(1, 3),
    cuts=st.lists(st.integers(1, 39), max_size=6, unique=True),
    attention_chunk=st.integers(1, 41),
    seed=st.integers(0, 2**16),
)
def test_parallel_equals_recurrent_and_any_chunking(
    n_layer, n_head, half_neurons, n_embd, batch, cuts, attention_chunk, seed
):
    length = 40
    model = tiny_model(seed, n_layer=n_layer, n_head=n_head, n_neuron=2 * half_neurons, n_embd=n_embd)
    model.chunk_size = attention_chunk
    idx = torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        parallel = model(idx)
        model.attention = "naive"
        torch.testing.assert_close(model(idx), parallel, rtol=0, atol=1e-4)
        model.attention = "chunked"
        bounds = [0, *sorted(cuts), length]
        chunks, state = [], None
        for start, end in itertools.pairwise(bounds):
            logits, state = model.forward_recurrent(idx[:, start:end], state)
            chunks.append(logits)
        steps, state = [], None
        for t in range(length):
            logits, state = model.forward_recurrent(idx[:, t : t + 1], state)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(chunks, 1), parallel, rtol=0, atol=1e-4)
    torch.testing.assert_close(torch.cat(steps, 1), parallel, rtol=0, atol=1e-4)


def test_synapse_state_is_the_sum_of_outer_products():
    """rho after T tokens equals sum_t rope(x_sparse_t)^T x_t, built here by hand for layer 0."""
    model = tiny_model(n_layer=1)
    idx = torch.randint(0, 256, (1, 9))
    _, state = model.forward_recurrent(idx)
    x = F.layer_norm(model.embed(idx), (16,)).unsqueeze(1)
    phasors = rope_phasors(32, model.config.rope_theta, 0, 9, "cpu")
    q = rope(F.relu(x @ model.encoder_x), phasors)  # (1, nh, T, N)
    expected = torch.einsum("bhtn,btd->bhnd", q, x[:, 0])
    torch.testing.assert_close(state.rho[0], expected.detach(), rtol=1e-5, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    decays=st.lists(st.floats(0.3, 1.0), min_size=2, max_size=2),
    cuts=st.lists(st.integers(1, 39), max_size=4, unique=True),
    attention_chunk=st.integers(1, 41),
    seed=st.integers(0, 2**16),
)
def test_a_fading_state_keeps_parallel_recurrent_and_generation_equal(decays, cuts, attention_chunk, seed):
    length = 40
    model = tiny_model(seed, state_decay=tuple(decays)).double()
    model.chunk_size = attention_chunk
    idx = torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        parallel = model(idx)
        model.attention = "naive"
        torch.testing.assert_close(model(idx), parallel, rtol=1e-10, atol=1e-10)
        model.attention = "chunked"
        chunks, state = [], None
        for start, end in itertools.pairwise([0, *sorted(cuts), length]):
            logits, state = model.forward_recurrent(idx[:, start:end], state)
            chunks.append(logits)
        steps, fast = [], model.initial_state(2)
        for t in range(length):
            logits, fast = model.step(idx[:, t], fast)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(chunks, 1), parallel, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.stack(steps, 1), parallel, rtol=1e-10, atol=1e-10)
    for got, want in zip(fast.rho, state.rho, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_fading_synapse_state_is_the_decayed_sum_of_outer_products():
    """rho after T tokens is sum_t gamma^(T-1-t) q_t^T x_t for each head's own gamma."""
    model = tiny_model(n_layer=1, state_decay=(0.5, 0.9))
    idx = torch.randint(0, 256, (1, 9))
    _, state = model.forward_recurrent(idx)
    x = F.layer_norm(model.embed(idx), (16,)).unsqueeze(1)
    q = rope(F.relu(x @ model.encoder_x), rope_phasors(32, model.config.rope_theta, 0, 9, "cpu"))  # (1, nh, T, N)
    age = torch.arange(8, -1, -1.0)
    weights = torch.stack([0.5**age, 0.9**age])  # (nh, T)
    expected = torch.einsum("ht,bhtn,btd->bhnd", weights, q, x[:, 0])
    torch.testing.assert_close(state.rho[0], expected.detach(), rtol=1e-5, atol=1e-5)


def test_a_fading_model_trains_with_the_naive_form_gradients():
    model = tiny_model(n_layer=3, state_decay=(0.8, 0.97)).train()
    idx = torch.randint(0, 256, (2, 70), generator=torch.Generator().manual_seed(1))
    model.attention = "naive"
    expected = logits_and_grads(model, idx)
    model.attention, model.chunk_size = "chunked", 16
    for got, want in zip(logits_and_grads(model, idx), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("decay", "stored"), [((0.9, 1.0), (0.9, 1.0)), ([1.0, 1.0], None), ((1, 0.5), (1.0, 0.5))])
def test_state_decay_is_one_factor_per_head_and_no_fading_is_none(decay, stored):
    config = BDHConfig(n_head=2, n_neuron=32, state_decay=decay)
    assert config.state_decay == stored
    assert BDHConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("decay", [(0.9,), (0.9, 0.0), (0.9, 1.5), (0.9, -0.1)])
def test_state_decay_outside_zero_one_or_of_another_length_is_refused(decay):
    with pytest.raises(ConfigError, match="state_decay"):
        BDHConfig(n_head=2, n_neuron=32, state_decay=decay)


def test_rope_rotates_pairs_by_position_angle():
    n, theta = 8, 2.0**16
    v = torch.arange(1.0, n + 1).view(1, n)
    out = rope(v, rope_phasors(n, theta, 3, 1, "cpu"))
    for k in range(n // 2):
        angle = torch.tensor(3 / theta ** (2 * k / n), dtype=torch.float64)
        a, b = v[0, 2 * k].double(), v[0, 2 * k + 1].double()
        assert out[0, 2 * k].item() == pytest.approx((a * angle.cos() - b * angle.sin()).item(), abs=1e-5)
        assert out[0, 2 * k + 1].item() == pytest.approx((b * angle.cos() + a * angle.sin()).item(), abs=1e-5)
    torch.testing.assert_close(out.norm(), v.norm())


def test_rope_real_and_complex_forms_agree():
    """Half precision and compiled code take the real form of the rotation, float32 the complex one."""
    v = torch.randn(3, 5, 16)
    phasors = rope_phasors(16, 100.0, 7, 5, "cpu")
    torch.testing.assert_close(rope(v.bfloat16(), phasors).float(), rope(v, phasors), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(torch.compile(rope)(v, phasors), rope(v, phasors), rtol=1e-6, atol=1e-6)


def test_rope_scores_depend_on_relative_position_only():
    v, w = torch.rand(1, 16), torch.rand(1, 16)

    def score(s, t):
        return (rope(v, rope_phasors(16, 100.0, s, 1, "cpu")) * rope(w, rope_phasors(16, 100.0, t, 1, "cpu"))).sum()

    torch.testing.assert_close(score(3, 10), score(1003, 1010), rtol=1e-5, atol=1e-5)


def test_phasors_are_built_once_on_the_cpu_and_shared_by_bdh_and_gpt():
    layers._cached_phasors.cache_clear()
    model, baseline = tiny_model(), GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2))
    idx = torch.randint(0, 256, (2, 9))
    for _ in range(3):
        model(idx)
        model.forward_recurrent(idx)
        baseline(idx)
    assert layers._cached_phasors.cache_info().misses == 2  # (N, 0, 9) for BDH, (head_dim, 0, 9) for GPT
    assert rope_phasors(32, model.config.rope_theta, 0, 9) is rope_phasors(32, model.config.rope_theta, 0, 9)
    # Built in float64 on the CPU whatever the device: a meta tensor asked for carries the same table.
    on_meta = rope_phasors(32, 100.0, 16384, 3, "meta")
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.complex64
    angle = 16385 * 100.0 ** (-torch.arange(0, 32, 2, dtype=torch.float64) / 32)
    expected = torch.polar(torch.ones_like(angle), angle).to(torch.complex64)
    torch.testing.assert_close(rope_phasors(32, 100.0, 16384, 3)[1], expected, rtol=0, atol=1e-6)


def test_phasors_built_in_inference_mode_still_train():
    layers._cached_phasors.cache_clear()
    model = tiny_model().train()
    idx = torch.randint(0, 256, (2, 7))
    with torch.inference_mode():
        model(idx)
    model(idx).sum().backward()
    assert layers._cached_phasors.cache_info().hits == 1


def test_gpt_imports_nothing_from_bdh():
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(gpt))):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "synaptorch.models.layers" in imported
    assert not any("bdh" in module for module in imported)
    assert gpt.rope_phasors is bdh.rope_phasors is layers.rope_phasors


def test_every_parameter_gets_a_gradient():
    model = tiny_model(dropout=0.1).train()
    idx = torch.randint(0, 256, (2, 10))
    loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_model().train()
    idx = torch.randint(0, 256, (4, 17), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_same_seed_same_model_and_outputs():
    idx = torch.randint(0, 256, (2, 8))
    a, b, c = tiny_model(seed=1), tiny_model(seed=1), tiny_model(seed=2)
    assert torch.equal(a(idx), b(idx))
    assert not torch.equal(a(idx), c(idx))


def test_dropout_only_in_training_mode():
    model = tiny_model(dropout=0.5)
    idx = torch.randint(0, 256, (1, 8))
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.equal(model(idx), model(idx))


@settings(max_examples=25, deadline=None)
@given(p=st.floats(0.05, 0.95), heads=st.integers(1, 3), batch=st.integers(1, 3), length=st.integers(1, 9))
def test_locked_dropout_silences_a_neuron_for_the_whole_sequence(p, heads, batch, length):
    model = tiny_model(n_head=heads, dropout=p, locked_dropout=True).train()
    dropped = model._drop_neurons(torch.ones(heads, batch, length, 64))
    per_neuron = dropped[:, :, :1].expand_as(dropped)
    assert torch.equal(dropped, per_neuron)
    kept = dropped[dropped != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1.0 / (1.0 - p)))


def test_locked_dropout_keeps_the_expected_share_and_is_off_in_evaluation():
    model = tiny_model(dropout=0.25, locked_dropout=True).train()
    xy = torch.ones(2, 8, 5, 4096)
    kept = (model._drop_neurons(xy)[:, :, 0] > 0).float().mean().item()
    assert abs(kept - 0.75) < 5 * (0.75 * 0.25 / (2 * 8 * 4096)) ** 0.5
    model.eval()
    assert torch.equal(model._drop_neurons(xy), xy)


def test_locked_dropout_keeps_the_model_causal():
    """The mask depends on the shape alone, never on the tokens, so no position hears a later one."""
    model = tiny_model(dropout=0.5, locked_dropout=True).train()
    idx = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(4))
    changed = idx.clone()
    changed[:, -1] = (idx[:, -1] + 1) % 256
    torch.manual_seed(6)
    before = model(idx)
    torch.manual_seed(6)
    after = model(changed)
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.equal(before[:, -1], after[:, -1])


@pytest.mark.parametrize(
    "bad",
    [
        {"n_layer": 0},
        {"n_embd": -4},
        {"n_head": 0},
        {"n_neuron": 7},
        {"vocab_size": 0},
        {"dropout": 1.0},
        {"rope_theta": 0.5},
        {"n_layer": 2.5},
    ],
)
def test_impossible_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        BDHConfig(**bad)


def test_config_round_trip_and_unknown_keys():
    config = BDHConfig(n_layer=3, n_neuron=64)
    assert BDHConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="n_experts"):
        BDHConfig.from_dict({**config.to_dict(), "n_experts": 2})


def logits_and_grads(model, idx):
    logits = model(idx)
    loss = F.cross_entropy(logits.flatten(0, 1), idx.roll(-1, 1).flatten())
    return [logits, *torch.autograd.grad(loss, list(model.parameters()))]


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
def test_chunked_and_recomputed_training_equal_the_naive_form(chunk_size):
    model = tiny_model(n_layer=3).train()
    idx = torch.randint(0, 256, (2, 70), generator=torch.Generator().manual_seed(1))
    model.attention = "naive"
    expected = logits_and_grads(model, idx)
    model.attention, model.chunk_size = "chunked", chunk_size
    for recompute in (False, True):
        model.recompute = recompute
        for got, want in zip(logits_and_grads(model, idx), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("locked", [False, True])
def test_recompute_replays_the_same_dropout_masks(locked):
    idx = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(2))
    model = tiny_model(dropout=0.3, locked_dropout=locked).train()
    torch.manual_seed(5)
    stored = logits_and_grads(model, idx)
    model.recompute = True
    torch.manual_seed(5)
    for got, want in zip(logits_and_grads(model, idx), stored, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("batch", "sparse_below"), [(1, 0.0), (2, 0.0), (1, 1.01), (1, 0.5)])
def test_step_equals_the_recurrent_form(batch, sparse_below):
    """The in-place generation step, dense or touching only active neurons, keeps the recurrence."""
    model = tiny_model(n_layer=3)
    model.sparse_below = sparse_below
    prompt = torch.randint(0, 256, (batch, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, reference = model.forward_recurrent(prompt)
        _, fast = model.forward_recurrent(prompt)
        for token in torch.randint(0, 256, (12, batch), generator=torch.Generator().manual_seed(4)):
            expected, reference = model.forward_recurrent(token[:, None], reference)
            logits, fast = model.step(token, fast)
            torch.testing.assert_close(logits, expected[:, 0], rtol=0, atol=1e-5)
    assert fast.position == reference.position == 18
    for got, want in zip(fast.rho, reference.rho, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_sparse_generation_is_on_by_default_only_for_large_synapse_states():
    with torch.device("meta"):
        assert BDH(BDHConfig()).sparse_below > 0
        assert BDH(BDHConfig(n_layer=4, n_embd=128, n_head=4, n_neuron=256)).sparse_below == 0


def test_sparse_generation_is_off_by_default_on_a_gpu(monkeypatch):
    with torch.device("meta"):
        model = BDH(BDHConfig())
    assert model.sparse_below == bdh_generation.SPARSE_BELOW
    # The meta device stands in for a GPU: the default follows the parameters' device at every step.
    monkeypatch.setattr(bdh_generation, "GPU_DEVICE_TYPES", ("meta",))
    assert model.sparse_below == 0
    model.sparse_below = 0.3
    assert model.sparse_below == 0.3


def test_compile_step_takes_the_cpp_wrapper_only_on_the_cpu(monkeypatch):
    compiled = []

    def fake_compile(fn, **options):
        compiled.append(options)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = tiny_model()
    model.compile_step()
    state = model.initial_state(2)
    for token in torch.tensor([[5, 1], [9, 9]]):
        model.step(token, state)
    assert compiled == [{"dynamic": False, "options": {"cpp_wrapper": True}}]  # once per device type
    model.compile_step(False)
    model.step(torch.tensor([3, 4]), state)
    assert len(compiled) == 1
    # On any other device, meta here, the step compiles without the C++ wrapper.
    model.compile_step()
    model.to("meta").step(torch.tensor([1, 2], device="meta"), model.initial_state(2))
    assert compiled[1:] == [{"dynamic": False, "options": None}]


def test_sparse_step_touches_only_rows_of_active_neurons():
    model = tiny_model(n_layer=1)
    model.sparse_below = 1.01
    state = model.initial_state(1)
    model.step(torch.tensor([7]), state)
    x = F.layer_norm(model.embed(torch.tensor([7])), (16,))
    firing = (F.relu(x @ model._encoder_x_flat()).view(-1, 2) > 0).any(-1)  # pairs, as rope mixes them
    written = state.rho[0].flatten(0, 1).abs().sum(-1).view(-1, 2).amax(-1) > 0
    assert torch.equal(written, firing)


def test_step_follows_weight_updates():
    model = tiny_model()
    prompt, token = torch.tensor([[1, 2, 3]]), torch.tensor([4])
    before, _ = model.step(token, model.forward_recurrent(prompt)[1])
    with torch.no_grad():
        model.encoder_x.mul_(2)
        after, _ = model.step(token, model.forward_recurrent(prompt)[1])
        expected, _ = model.forward_recurrent(token[:, None], model.forward_recurrent(prompt)[1])
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected[:, 0], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_compiled_step_and_compiled_training_equal_eager():
    model = tiny_model()
    state, compiled_state = model.initial_state(2), model.initial_state(2)
    for token in torch.tensor([[5, 1], [9, 9], [200, 3]]):
        model.compile_step(False)
        expected, _ = model.step(token, state)
        model.compile_step()
        got, _ = model.step(token, compiled_state)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    for got, want in zip(compiled_state.rho, state.rho, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    model.chunk_size = 8
    idx = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(6))
    eager = logits_and_grads(model, idx)
    for got, want in zip(logits_and_grads(torch.compile(model), idx), eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
