import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.errors import ConfigError
from synaptorch.local.base import accuracy
from synaptorch.local.edff import EDFF, EDFFConfig, csdp_update, goodness_signal, trace_step


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_csdp_update_by_hand():
    pre = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # two samples, two presynaptic neurons
    z = torch.tensor([[1.0, 0.5], [0.5, 0.0]])  # goodness 1.25 and 0.25
    positive = torch.tensor([1.0, 0.0])
    p0, p1 = _sigmoid(1.25 - 1.0), _sigmoid(0.25 - 1.0)
    d0 = [2 * (p0 - 1) * 1.0, 2 * (p0 - 1) * 0.5]  # dL/dz of the positive sample
    d1 = [2 * p1 * 0.5, 0.0]  # of the negative one
    expected = torch.tensor([[d0[0] + d1[0], d0[1] + d1[1]], [d1[0], d1[1]]]) / 2
    assert torch.allclose(csdp_update(pre, z, positive, theta=1.0), expected, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.floats(-5, 5), st.integers(0, 2**16))
def test_goodness_signal_is_the_derivative_of_the_local_loss(batch, n, theta, seed):
    generator = torch.Generator().manual_seed(seed)
    z = torch.rand(batch, n, generator=generator, dtype=torch.float64).requires_grad_()
    positive = torch.randint(0, 2, (batch,), generator=generator).to(torch.float64)
    signal, loss = goodness_signal(z, positive, theta)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.allclose(signal, grad)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=30), st.floats(0.0, 0.99))
def test_trace_is_one_at_a_spike_and_decays_geometrically(train, decay):
    z = torch.zeros(1)
    for s in train:
        z = trace_step(z, torch.tensor([float(s)]), decay)
    if any(train):
        since = train[::-1].index(True)
        assert z.item() == pytest.approx(decay**since)
    else:
        assert z.item() == 0.0


def _tiny(**overrides) -> EDFF:
    values = {"n_inputs": 36, "n_classes": 3, "layers": (24, 12), "steps": 6, "theta": 2.0} | overrides
    return EDFF(EDFFConfig(**values))


def test_one_step_changes_the_bottom_synapses_by_the_rule():
    model = _tiny(layers=(24,), steps=1, threshold=0.05)
    generator = torch.Generator().manual_seed(3)
    spikes_in = torch.bernoulli(torch.full((1, 4, 36), 0.5), generator=generator)
    context = torch.eye(3)[torch.tensor([0, 1, 2, 0])]
    positive = torch.tensor([1.0, 0.0])
    sim = model._simulate(spikes_in, context, positive)
    # From rest, one step: no lateral input yet, the trace is the spike itself.
    current = spikes_in[0] @ model.forward_weights[0] + context @ model.label_weights
    z = (model.gain * current > model.config.threshold).float()
    assert z[:2].any() and not z[:2].all()
    assert torch.allclose(sim.grads[0], csdp_update(spikes_in[0][:2], z[:2], positive, 2.0), atol=1e-6)
    assert torch.allclose(sim.grads[-1], csdp_update(context[:2], z[:2], positive, 2.0), atol=1e-6)


def test_no_change_reaches_a_layer_from_the_loss_of_another():
    model = _tiny(steps=1, threshold=0.05)
    spikes_in = torch.bernoulli(torch.full((1, 6, 36), 0.5), generator=torch.Generator().manual_seed(0))
    context = torch.eye(3)[torch.tensor([0, 1, 2, 1, 2, 0])]
    positive = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    with torch.enable_grad():
        before = model._simulate(spikes_in, context, positive)
    assert not any(g.requires_grad for g in before.grads), "the rule is a formula, not a graph through time or layers"
    with torch.no_grad():
        model.forward_weights[1].mul_(-3.0)
        model.label_weights.mul_(-3.0)
    after = model._simulate(spikes_in, context, positive)
    # In one step nothing comes down from layer 2 (its spikes arrive a step later): layer 1's change
    # could depend on layer 2's weights only through layer 2's loss, as backpropagation would have it.
    assert before.grads[0].abs().sum() > 0
    assert torch.equal(before.grads[0], after.grads[0])
    assert not torch.equal(before.grads[1], after.grads[1])


def test_training_keeps_the_synapses_in_bounds_and_inhibition_hollow(clustered):
    images, labels = clustered(40, 6, 3, 0)
    model = _tiny(lr=0.5)
    for _ in range(3):
        figures = model.train_batch(images.view(40, 36).float() / 255, labels, 0.0)
    assert set(figures) == {"loss_layer1", "loss_layer2", "rate_layer1", "rate_layer2", "readout_loss"}
    assert all(math.isfinite(v) for v in figures.values())
    for w in [*model.forward_weights, *model.top_down, model.label_weights]:
        assert w.abs().max() <= 1.0
    for m in model.lateral:
        assert m.min() >= 0 and m.max() <= 1.0
        assert torch.equal(m.diagonal(), torch.zeros(len(m)))


def test_homeostasis_raises_the_bias_of_silent_neurons(clustered):
    images, labels = clustered(10, 6, 3, 0)
    model = _tiny(threshold=100.0, target_rate=0.1, homeostasis=2.0)
    figures = model.train_batch(images.view(10, 36).float() / 255, labels, 0.0)
    assert figures["rate_layer1"] == 0.0
    assert torch.allclose(model.homeostatic_bias1, torch.full((24,), 0.2))
    assert "homeostatic_bias2" in model.state_dict()


def test_accuracy_rises_above_chance_on_an_easy_task(clustered):
    train_images, train_labels = clustered(600, 6, 3, 0)
    test_images, test_labels = clustered(300, 6, 3, 1)
    x, x_test = train_images.view(-1, 36).float() / 255, test_images.view(-1, 36).float() / 255
    model = _tiny(steps=10, lr=0.01, readout_lr=0.05, batch_size=30)
    for start in range(0, 600, 30):
        model.train_batch(x[start : start + 30], train_labels[start : start + 30], start / 600)
    assert accuracy(model, x_test, test_labels) > 0.8  # chance: 1/3
    by_goodness = model.predict_by_goodness(x_test)
    assert by_goodness.shape == test_labels.shape
    assert (by_goodness == test_labels).float().mean() > 0.5


def test_state_dict_round_trip_predicts_alike(clustered):
    images, labels = clustered(30, 6, 3, 2)
    x = images.view(30, 36).float() / 255
    model = _tiny()
    model.train_batch(x, labels, 0.0)
    restored = _tiny()
    restored.load_state_dict(model.state_dict())
    assert torch.equal(model.predict(x), restored.predict(x))
    assert torch.equal(model.predict(x), model.predict(x)), "predict draws its input spikes from a fixed seed"
    assert not any("optim" in key for key in model.state_dict())


def test_config_is_json_and_lists_become_tuples():
    config = EDFFConfig(layers=[8, 4])
    assert config.layers == (8, 4)
    assert EDFFConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


@pytest.mark.parametrize(
    "bad",
    [
        {"layers": ()},
        {"layers": (8, 0)},
        {"layers": (8, True)},
        {"n_classes": 1},
        {"steps": 0},
        {"batch_size": 2.5},
        {"dt": 0.0},
        {"dt": 30.0},
        {"tau_trace": -1.0},
        {"theta": float("nan")},
        {"lr": 0.0},
        {"weight_clip": -1.0},
        {"inhibition": -0.1},
        {"seed": -1},
    ],
)
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        EDFFConfig(**bad)
