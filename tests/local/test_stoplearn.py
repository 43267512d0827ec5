import json

import pytest
import torch

from synaptorch.data.patterns import random_patterns
from synaptorch.errors import ConfigError
from synaptorch.local.base import accuracy
from synaptorch.local.stoplearn import StopLearn, StopLearnConfig, capacity_config, train_epochs
from synaptorch.plasticity.bistable import count_transitions, drift, efficacy, potentiated


def small_config(**overrides) -> StopLearnConfig:
    """Random patterns of 200 inputs at coding level 0.1: 20 active inputs, as many active spikes as the
    50 of the capacity task at half its J, so the same teacher and inhibition fit."""
    base = {"n_inputs": 200, "neurons_per_class": 3, "inhibition": 0.1, "j_plus": 0.2, "batch_size": 4}
    return capacity_config(**{**base, **overrides})


def test_random_patterns():
    patterns, labels = random_patterns(400, 300, coding_level=0.1, n_classes=3, seed=1)
    assert patterns.shape == (400, 300) and patterns.dtype == torch.float32
    assert labels.shape == (400,) and labels.dtype == torch.int64
    assert set(patterns.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(patterns.mean()) - 0.1) < 0.01
    assert set(labels.tolist()) == {0, 1, 2}
    again, _ = random_patterns(400, 300, coding_level=0.1, n_classes=3, seed=1)
    assert torch.equal(patterns, again)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_patterns": 0}, {"n_inputs": -3}, {"n_classes": 0}, {"coding_level": 0.0}, {"coding_level": 1.0}],
)
def test_random_patterns_refuse_bad_arguments(kwargs):
    arguments = {"n_patterns": 5, "n_inputs": 10, **kwargs}
    with pytest.raises(ConfigError):
        random_patterns(**arguments)


@pytest.mark.parametrize(
    "change",
    [
        {"rate_active": -1.0},
        {"teacher_rate": -5.0},
        {"teacher_rate": 2000.0},
        {"neurons_per_class": 0},
        {"presentation_steps": 0},
        {"j_plus": 0.0},
        {"initial_potentiated": 1.5},
        {"theta_down": (4.0, 3.0)},
        {"theta_up": (3.0,)},
        {"alpha": -1.0},
        {"tau_c": 0.0},
    ],
)
def test_bad_config_values_are_config_errors(change):
    with pytest.raises(ConfigError):
        StopLearnConfig(**change)


def test_config_is_json_able():
    config = StopLearnConfig()
    restored = StopLearnConfig(**json.loads(config.to_json()))
    assert restored == config
    assert config.synapse.theta_up == (3.0, 13.0) and config.n_outputs == 100


def learned_synapses(model: StopLearn, patterns: torch.Tensor, labels: torch.Tensor) -> None:
    """Potentiate exactly the synapses from the inputs active in some pattern of a neuron's class."""
    active = torch.stack([patterns[labels == c].amax(0) for c in range(model.config.n_classes)])
    model.x.copy_(active[model.label_of])


def test_learning_stops_on_patterns_already_right():
    patterns, labels = random_patterns(6, 200, coding_level=0.1, seed=3)
    model = StopLearn(small_config())
    learned_synapses(model, patterns, labels)
    counts = model.class_counts(patterns)
    right, wrong = counts.gather(1, labels[:, None]), counts.gather(1, 1 - labels[:, None])
    assert bool((right > 2 * wrong + 10).all()), counts  # right by a margin
    before = model.x.clone()
    figures = model.train_batch(patterns, labels, 0.0)
    # The taught neurons fire above the up window, the others below the down window: no transition,
    # and the few jumps that happen push saturated synapses against their bounds.
    assert figures["transitions"] == 0
    assert count_transitions(before, model.x) == 0
    assert figures["taught_rate"] > 217 and figures["untaught_rate"] < 20


def test_train_batch_figures_count_the_flips():
    patterns, labels = random_patterns(4, 200, coding_level=0.1, seed=0)
    model = StopLearn(small_config())
    before = model.x.clone()
    figures = model.train_batch(patterns, labels, 0.0)
    flips = count_transitions(before, model.x)
    assert figures["transitions"] == flips > 0
    assert figures["transitions_per_presentation"] == pytest.approx(flips / 4)
    assert figures["up_jumps"] > 0 and float(model.x.min()) >= 0 and float(model.x.max()) <= 1
    with pytest.raises(ConfigError):
        model.train_batch(patterns[:, :10], labels, 0.0)


def test_a_small_capacity_run_learns_its_patterns():
    patterns, labels = random_patterns(30, 200, coding_level=0.1, seed=0)
    model = StopLearn(small_config(presentation_steps=200))
    # Random synapses already tell some patterns apart by chance.
    before = accuracy(model, patterns, labels)
    records = train_epochs(model, patterns, labels, epochs=10)
    assert before <= 0.75 and records[-1]["train_accuracy"] >= 0.9
    transitions = [record["transitions_per_presentation"] for record in records]
    assert transitions[-1] < max(transitions[:3]) / 1.5  # learning slows down as the patterns are learned


def test_state_dict_round_trip_gives_the_same_predictions():
    patterns, labels = random_patterns(8, 200, coding_level=0.1, seed=2)
    config = small_config()
    model = StopLearn(config)
    model.train_batch(patterns, labels, 0.0)
    restored = StopLearn(config)
    assert not torch.equal(restored.x, model.x)
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.predict(patterns), model.predict(patterns))
    assert torch.equal(model.class_counts(patterns), model.class_counts(patterns))  # predict learns nothing


def test_the_in_place_drift_and_weights_are_those_of_bistable():
    model = StopLearn(small_config(alpha=2.0, beta=3.0))
    x = torch.rand(6, 200, generator=torch.Generator().manual_seed(4))
    x[0, :3] = torch.tensor([0.0, 1.0, 0.5])  # the bounds and theta_X itself
    states = potentiated(x, model.p).float()
    expected = drift(x, 0.07, model.p)
    settled = x.clone()
    model._drift(settled, states, 0.07)
    assert torch.allclose(settled, expected, atol=1e-6)
    weight = model._weight(states)
    assert torch.allclose(weight, efficacy(x, model.p) - model.config.inhibition)
