import copy
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synaptorch
from synaptorch import BDH, BDHConfig
from synaptorch.checkpoint import load_model, read_meta
from synaptorch.errors import ConfigError
from synaptorch.models.layers import rope_phasors
from synaptorch.models.merge import merge, merge_checkpoints, merge_weights, neuron_origins
from synaptorch.models.spiking_bdh import SpikingBDH

TOKENS = torch.randint(0, 64, (2, 13), generator=torch.Generator().manual_seed(0))


def tiny(seed=0, **overrides) -> BDH:
    """A small BDH with weights of a trained model's scale: at the init's std of 0.02 the attention
    read and the decoder output are so small that the layer norms' epsilon, not the activations,
    sets their scale, and doubling them would not cancel."""
    config = dict(n_layer=2, n_embd=16, n_head=3, n_neuron=8, vocab_size=64, dropout=0.0)
    torch.manual_seed(seed)
    model = BDH(BDHConfig(**{**config, **overrides})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.5)
    return model


def silent_copy(model: BDH) -> BDH:
    """model with neurons that never fire: Dx = 0."""
    silent = copy.deepcopy(model)
    with torch.no_grad():
        silent.encoder_x.zero_()
    return silent


def parallel(model, idx=TOKENS):
    with torch.no_grad():
        return model(idx)


def recurrent(model, idx=TOKENS):
    """Chunks of 5, 1 and the rest, against the carried synapse state."""
    with torch.no_grad():
        state, out = None, []
        for chunk in (idx[:, :5], idx[:, 5:6], idx[:, 6:]):
            logits, state = model.forward_recurrent(chunk, state)
            out.append(logits)
        return torch.cat(out, dim=1)


def stepwise(model, idx=TOKENS):
    with torch.no_grad():
        state, out = model.initial_state(idx.shape[0]), []
        for t in range(idx.shape[1]):
            logits, state = model.step(idx[:, t], state)
            out.append(logits)
        return torch.stack(out, dim=1)


FORMS = [parallel, recurrent, stepwise]


@pytest.mark.parametrize("form", FORMS)
def test_merging_with_a_silent_copy_gives_the_same_logits(form):
    a = tiny()
    torch.testing.assert_close(form(merge([a, silent_copy(a)])), form(a), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("form", FORMS)
def test_merging_a_model_with_itself_gives_the_same_logits(form):
    a = tiny(seed=1)
    torch.testing.assert_close(form(merge([a, a])), form(a), rtol=1e-4, atol=1e-4)


def test_the_decoder_is_merged_head_by_head_not_row_by_row():
    a = tiny(seed=2, n_head=2)
    merged = merge([a, a])
    n, d = a.config.n_neuron, a.config.n_embd
    per_head = merged.decoder.view(2, 2 * n, d)
    torch.testing.assert_close(per_head[1, :n], a.decoder.view(2, n, d)[1], rtol=0, atol=0)
    torch.testing.assert_close(per_head[1, n:], a.decoder.view(2, n, d)[1], rtol=0, atol=0)


def test_each_neuron_keeps_the_rotation_it_was_trained_with():
    a, b = tiny(n_neuron=8), tiny(seed=1, n_neuron=4)
    merged = merge([a, b])
    assert merged.config.rope_blocks == (8, 4)
    table = rope_phasors(merged.config.rope_ladders, 2.0**16, 0, 7)
    torch.testing.assert_close(table[:, :4], rope_phasors(8, 2.0**16, 0, 7), rtol=0, atol=0)
    torch.testing.assert_close(table[:, 4:], rope_phasors(4, 2.0**16, 0, 7), rtol=0, atol=0)
    assert not torch.allclose(table, rope_phasors(12, 2.0**16, 0, 7))  # a single ladder over 12 differs


@settings(max_examples=15, deadline=None)
@given(
    n_head=st.integers(1, 3),
    neurons=st.tuples(st.sampled_from([2, 4, 6]), st.sampled_from([2, 4, 8])),
    seeds=st.tuples(st.integers(0, 100), st.integers(101, 200)),
)
def test_merging_is_symmetric_up_to_a_permutation_of_neurons(n_head, neurons, seeds):
    a = tiny(seed=seeds[0], n_head=n_head, n_neuron=neurons[0])
    b = tiny(seed=seeds[1], n_head=n_head, n_neuron=neurons[1])
    ab, ba = merge([a, b]), merge([b, a])
    torch.testing.assert_close(parallel(ab), parallel(ba), rtol=1e-4, atol=1e-4)
    # and the permutation is the swap of the two blocks of every head
    na = neurons[0]
    torch.testing.assert_close(ab.encoder_x[..., :na], ba.encoder_x[..., neurons[1] :], rtol=0, atol=0)


def test_merges_of_merges_keep_every_block():
    a, b, c = tiny(), tiny(seed=1, n_neuron=4), tiny(seed=2, n_neuron=6)
    nested = merge([merge([a, b]), c], weights=[2, 1])  # the mix of a flat merge of three
    assert nested.config.rope_ladders == (8, 4, 6)
    torch.testing.assert_close(parallel(nested), parallel(merge([a, b, c])), rtol=1e-5, atol=1e-5)
    assert neuron_origins([a.config, b.config, c.config]) == [0] * 8 + [1] * 4 + [2] * 6


def test_the_shared_tensors_are_mixed_by_the_weights():
    a, b = tiny(), tiny(seed=1)
    merged = merge([a, b], weights=[3, 1])
    torch.testing.assert_close(merged.readout, 0.75 * a.readout + 0.25 * b.readout)
    torch.testing.assert_close(merge([a, b], weights=[1, 0]).embed.weight, a.embed.weight, rtol=0, atol=0)
    assert merge_weights(3, None) == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1], "1 weights for 2 models"),
        ([1, -1], "non-negative"),
        ([0, 0], "positive sum"),
        ([1, float("nan")], "non-negative"),
    ],
)
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ConfigError, match=message):
        merge([tiny(), tiny(seed=1)], weights=weights)


@pytest.mark.parametrize(
    "change, label",
    [
        ({"n_embd": 32}, "width d"),
        ({"vocab_size": 32}, "vocabulary"),
        ({"n_layer": 3}, "number of layers"),
        ({"n_head": 2}, "number of heads"),
        ({"rope_theta": 1000.0}, "RoPE base"),
        ({"state_decay": (0.9, 0.99, 1.0)}, "fading of the synapse state"),
    ],
)
def test_models_that_cannot_share_neurons_are_refused(change, label):
    with pytest.raises(ConfigError, match=f"differ in {label}"):
        merge([tiny(), tiny(seed=1, **change)])


def test_only_bdh_merges():
    from synaptorch import GPT, GPTConfig

    gpt = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2, vocab_size=64))
    with pytest.raises(ConfigError, match="only BDH models merge"):
        merge([tiny(), gpt])
    with pytest.raises(ConfigError, match="at least two"):
        merge([tiny()])


def test_rope_blocks_must_add_up_to_the_neurons():
    with pytest.raises(ConfigError, match="add up to 10"):
        BDHConfig(n_neuron=12, rope_blocks=(6, 4))
    with pytest.raises(ConfigError, match="positive even"):
        BDHConfig(n_neuron=12, rope_blocks=(9, 3))
    assert BDHConfig(n_neuron=12, rope_blocks=[12]).rope_blocks is None  # one block is the plain ladder


def test_a_merged_checkpoint_round_trips_and_spikes(tmp_path):
    a, b = tiny(), tiny(seed=1, n_neuron=4)
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    merged = merge_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    loaded = load_model(tmp_path / "ab").eval()
    assert loaded.config.rope_blocks == (8, 4)
    torch.testing.assert_close(parallel(loaded), parallel(merged), rtol=0, atol=0)
    meta = read_meta(tmp_path / "ab")
    assert [m["neurons"] for m in meta["merged_from"]] == [8, 4]
    # Integrate-and-fire neurons rotate by the same blocks: with many steps they approach the relu.
    spiking = SpikingBDH.from_relu(loaded, steps=512)
    spiking.calibrate(TOKENS)
    spiked, relu = parallel(spiking), parallel(loaded)
    assert (spiked.argmax(-1) == relu.argmax(-1)).float().mean() > 0.8


def test_synaptorch_merge_is_the_library_function():
    assert synaptorch.merge is merge


def test_the_merge_command(cli, tmp_path):
    tiny().save_pretrained(tmp_path / "a")
    tiny(seed=1).save_pretrained(tmp_path / "b")
    result = cli("merge", tmp_path / "a", tmp_path / "b", tmp_path / "ab", "--weights", "0.6,0.4")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["n_neuron"] == 16 and record["rope_blocks"] == [8, 8]
    assert read_meta(tmp_path / "ab")["merge_weights"] == pytest.approx([0.6, 0.4])
    info = cli("info", tmp_path / "ab")
    assert "rope_blocks" in info.stdout and "[8, 8]" in info.stdout.replace("(8, 8)", "[8, 8]")


def test_reference_checkpoints_merge(cli, tmp_path):
    from synaptorch.models.reference import KEY_MAP

    for name, seed in (("a.pt", 0), ("b.pt", 1)):
        model = tiny(seed=seed)
        state = model.state_dict()
        torch.save({theirs: state[ours] for theirs, ours in KEY_MAP.items()}, tmp_path / name)
    result = cli("merge", tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "ab", "--n-layer", "2")
    assert result.exit_code == 0, result.output
    expected = merge([tiny(), tiny(seed=1)])
    torch.testing.assert_close(parallel(load_model(tmp_path / "ab").eval()), parallel(expected), rtol=1e-5, atol=1e-5)


def test_merge_refusals_are_one_line(cli, assert_user_error, tmp_path):
    tiny().save_pretrained(tmp_path / "a")
    tiny(seed=1, n_embd=32).save_pretrained(tmp_path / "wide")
    tiny(seed=1).save_pretrained(tmp_path / "b")
    (tmp_path / "taken").mkdir()
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    assert_user_error(cli("merge", a, tmp_path / "wide", out), "differ in width d")
    assert_user_error(cli("merge", a, b, tmp_path / "taken"), "already exists")
    assert_user_error(cli("merge", a, out), "at least two")
    assert_user_error(cli("merge", a, b, out, "--weights", "x"), "--weights")
    assert_user_error(cli("merge", a, tmp_path / "missing", out), "not found")
    assert not out.exists()
