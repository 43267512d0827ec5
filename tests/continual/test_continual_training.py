import dataclasses
import json

import pytest
import torch

from synaptorch.continual import (
    METHODS,
    MLP,
    ContinualConfig,
    SpikingMLP,
    Task,
    average_accuracy,
    backward_transfer,
    permuted_tasks,
    train_continual,
)
from synaptorch.errors import ConfigError


def _latent_tasks(n_tasks: int = 2, n_train: int = 1024, n_test: int = 512, seed: int = 0) -> list[Task]:
    """Gaussian latents z (6 dims) seen through a task's own random 6-dim subspace of 32 inputs,
    labelled by a random linear teacher: the tasks share the inputs' space, so learning one moves
    the responses to the other, yet each has room outside the other's subspace."""
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(n_tasks):
        basis = torch.linalg.qr(torch.randn(32, 6, generator=generator))[0]
        teacher = torch.randn(6, 4, generator=generator)
        z_train, z_test = torch.randn(n_train, 6, generator=generator), torch.randn(n_test, 6, generator=generator)
        tasks.append(
            Task(
                f"latent-{t}",
                torch.arange(32),
                z_train @ basis.T,
                (z_train @ teacher).argmax(1),
                z_test @ basis.T,
                (z_test @ teacher).argmax(1),
            )
        )
    return tasks


TOY = ContinualConfig(
    hidden=(64, 64),
    epochs=5,
    batch_size=32,
    subspace_first=(8, 24, 24),
    subspace_step=(8, 24, 24),
    hebbian_lr=(0.01, 0.01, 0.01),
    gpm_samples=200,
    ewc_lambda=1e3,
    energy_samples=512,
)


@pytest.fixture(scope="module")
def toy_results():
    tasks = _latent_tasks()
    return {method: train_continual(method, tasks, TOY) for method in METHODS}


def test_acc_and_bwt_by_hand():
    R = [[0.9], [0.7, 0.8], [0.5, 0.6, 0.9]]
    assert average_accuracy(R) == pytest.approx((0.5 + 0.6 + 0.9) / 3)
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.6 - 0.8)) / 2)
    square = [[0.9, 0.1, 0.1], [0.7, 0.8, 0.1], [0.5, 0.6, 0.9]]  # entries above the diagonal ignored
    assert average_accuracy(square) == average_accuracy(R) and backward_transfer(square) == backward_transfer(R)
    assert backward_transfer([[0.5]]) == 0.0


def test_finetune_forgets_and_hlop_does_not(toy_results):
    finetune, hlop = toy_results["finetune"], toy_results["hlop"]
    assert finetune.bwt < -0.1
    assert hlop.bwt > -0.05 and hlop.bwt > finetune.bwt + 0.1
    assert hlop.accuracy[1][1] > 0.85  # and it still learns the second task
    assert hlop.acc > finetune.acc + 0.05


def test_ewc_gpm_and_joint_keep_more_than_finetune(toy_results):
    forgotten = toy_results["finetune"].accuracy[1][0]
    for method in ("ewc", "gpm", "joint"):
        assert toy_results[method].accuracy[1][0] > forgotten + 0.1, method


def test_subspaces_are_reported(toy_results):
    for method in ("gpm", "hlop"):
        result = toy_results[method]
        assert len(result.subspaces) == 2 and all(len(row) == 3 for row in result.subspaces)
        first = result.subspaces[0][0]
        assert first.energy > 0.95 and first.projection_error < 0.1
    assert [s.rows for s in toy_results["hlop"].subspaces[1]] == [16, 48, 48]
    assert toy_results["finetune"].subspaces == []


def test_hebbian_learning_after_each_task_protects_too(toy_results):
    config = dataclasses.replace(TOY, hebbian_when="after", hebbian_epochs=3)
    result = train_continual("hlop", _latent_tasks(), config)
    assert result.accuracy[0] == toy_results["finetune"].accuracy[0]  # the rule only reads during training
    assert result.subspaces[0][0].energy > 0.95
    assert result.bwt > toy_results["finetune"].bwt + 0.1


def test_result_is_json(toy_results):
    record = json.loads(json.dumps(toy_results["hlop"].to_dict()))
    assert record["method"] == "hlop" and record["acc"] == pytest.approx(toy_results["hlop"].acc)
    assert record["config"]["hidden"] == [64, 64]
    assert ContinualConfig(**record["config"]) == TOY


def test_methods_share_the_first_task():
    # Nothing of a method acts during the first task except HLOP's Hebbian rule, which reads only.
    tasks = _latent_tasks(1, n_train=256, n_test=128)
    config = dataclasses.replace(TOY, epochs=1)
    first = {method: train_continual(method, tasks, config).accuracy for method in ("finetune", "ewc", "gpm", "hlop")}
    assert len({json.dumps(a) for a in first.values()}) == 1


def test_spiking_network_runs_every_method():
    tasks = _latent_tasks(2, n_train=128, n_test=64)
    config = dataclasses.replace(TOY, spiking=True, steps=2, epochs=1, hidden=(16, 16), subspace_first=(4, 4, 4))
    config = dataclasses.replace(config, subspace_step=(4, 4, 4))
    for method in METHODS:
        result = train_continual(method, tasks, config)
        assert len(result.accuracy) == 2 and 0 <= result.acc <= 1


def test_networks_return_each_maps_inputs():
    x = torch.rand(5, 12)
    logits, inputs = MLP(12, (7, 6), 3)(x, return_inputs=True)
    assert logits.shape == (5, 3) and [i.shape[1] for i in inputs] == [12, 7, 6]
    logits, inputs = SpikingMLP(12, (7, 6), 3, steps=3)(x, return_inputs=True)
    assert logits.shape == (5, 3) and [i.shape[1] for i in inputs] == [12, 7, 6]
    rates = torch.cat([i.flatten() for i in inputs[1:]])
    assert rates.min() >= 0 and rates.max() <= 1
    assert torch.allclose(rates * 3, (rates * 3).round())  # spike counts over 3 steps


def test_permuted_tasks():
    rows = (torch.rand(10, 6), torch.arange(10) % 3, torch.rand(4, 6), torch.arange(4) % 3)
    tasks = permuted_tasks(rows, 3, seed=5, train_limit=8)
    assert torch.equal(tasks[0].train_x, rows[0][:8]) and torch.equal(tasks[0].permutation, torch.arange(6))
    for task in tasks:
        assert torch.equal(task.train_x, rows[0][:8, task.permutation]) and torch.equal(task.train_y, rows[1][:8])
        assert torch.equal(task.test_x, rows[2][:, task.permutation])
    again = permuted_tasks(rows, 3, seed=5)
    assert all(torch.equal(a.permutation, b.permutation) for a, b in zip(tasks, again, strict=True))
    assert not torch.equal(permuted_tasks(rows, 2, seed=5, identity_first=False)[0].permutation, torch.arange(6))
    with pytest.raises(ConfigError):
        permuted_tasks(rows, 0)
    with pytest.raises(ConfigError):
        permuted_tasks(rows, 2, train_limit=0)


def test_subspace_schedule_is_the_references():
    config = ContinualConfig()
    sizes = [config.subspace_sizes(t)[0] for t in range(10)]
    assert sizes == [80, 70, 70, 50, 50, 50, 30, 30, 30, 10]
    assert config.subspace_sizes(0) == (80, 200, 100)


@pytest.mark.parametrize(
    "change",
    [
        {"hidden": ()},
        {"hidden": (8, 0)},
        {"epochs": 0},
        {"batch_size": 1.5},
        {"lr": 0.0},
        {"subspace_first": (1, 2)},
        {"subspace_step": (1, -2, 3)},
        {"hebbian_lr": (0.1, 0.0, 0.1)},
        {"gpm_threshold": (0.9, 1.2, 0.9)},
        {"gpm_threshold_step": 1.0},
        {"hebbian_momentum": 1.0},
        {"hebbian_when": "never"},
        {"ewc_lambda": -1.0},
        {"steps": True},
        {"spiking": "yes"},
        {"subspace_decay": 1.5},
    ],
)
def test_bad_config(change):
    with pytest.raises(ConfigError):
        ContinualConfig(**change)


def test_bad_method_and_empty_tasks():
    with pytest.raises(ConfigError):
        train_continual("replay", _latent_tasks(1, 8, 8), TOY)
    with pytest.raises(ConfigError):
        train_continual("hlop", [], TOY)
