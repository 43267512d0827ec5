"""HLOP for BDH: the inputs it collects are the model's own, and projected updates leave old inputs' outputs alone."""

import pytest
import torch
import torch.nn.functional as F

from synaptorch.continual.bdh import INPUT_DIMS, BDHProjectors, map_inputs
from synaptorch.errors import ConfigError
from synaptorch.models.bdh import BDH, BDHConfig
from synaptorch.models.layers import layer_norm

RANKS = {"encoder_x": 6, "encoder_y": 6, "decoder": 12}
LR = {"encoder_x": 0.05, "encoder_y": 0.05, "decoder": 0.05}


@pytest.fixture
def model() -> BDH:
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=2, n_embd=16, n_head=2, n_neuron=32, vocab_size=256, dropout=0.0))
    for p in model.parameters():  # larger weights than the init, so that the neurons fire plenty
        torch.nn.init.normal_(p, std=0.3)
    return model


def tokens(seed: int, batch: int = 3, length: int = 12) -> torch.Tensor:
    return torch.randint(256, (batch, length), generator=torch.Generator().manual_seed(seed))


def learnt(model: BDH) -> BDHProjectors:
    projectors = BDHProjectors(model, RANKS, LR, generator=torch.Generator().manual_seed(0))
    projectors.learn(model, [tokens(seed) for seed in range(12)])
    return projectors


def test_the_inputs_are_the_model_s_own(model):
    idx = tokens(1)
    B, T = idx.shape
    c = model.config
    inputs = map_inputs(model, idx)
    assert inputs["encoder_x"].shape == (c.n_layer * B * T, c.n_embd)
    assert inputs["encoder_y"].shape == (c.n_layer * c.n_head * B * T, c.n_embd)
    assert inputs["decoder"].shape == (c.n_layer * B * T, c.n_head * c.n_neuron)

    seen = []
    model.forward_recurrent(idx, observe=lambda layer, **tensors: seen.append(tensors))
    for layer, tensors in enumerate(seen):
        rows = slice(layer * B * T, (layer + 1) * B * T)
        x = inputs["encoder_x"][rows]
        torch.testing.assert_close(x, tensors["residual"].reshape(B * T, -1))
        x_sparse = F.relu(x @ model.encoder_x).view_as(tensors["x_sparse"])
        torch.testing.assert_close(x_sparse, tensors["x_sparse"])
        heads = slice(layer * c.n_head * B * T, (layer + 1) * c.n_head * B * T)
        y_input = inputs["encoder_y"][heads].view(c.n_head, B * T, -1)
        torch.testing.assert_close(F.relu(y_input @ model.encoder_y).view_as(tensors["y_sparse"]), tensors["y_sparse"])
        # xy @ E is the decoder's term, the layer's output before its norms: the next residual.
        y = inputs["decoder"][rows] @ model.decoder
        residual = layer_norm(tensors["residual"].reshape(B * T, -1) + layer_norm(y))
        if layer + 1 < len(seen):
            torch.testing.assert_close(residual, seen[layer + 1]["residual"].reshape(B * T, -1))


def test_projected_gradients_have_no_component_along_the_subspace(model):
    projectors = learnt(model)
    assert projectors.sizes() == RANKS
    F.cross_entropy(model(tokens(9)).flatten(0, 1), tokens(9).roll(-1, 1).flatten()).backward()
    before = {name: getattr(model, name).grad.clone() for name in INPUT_DIMS}
    projectors.project_gradients(model)
    for name in INPUT_DIMS:
        basis = projectors.bases[name]  # (k, n), orthonormal
        grad = getattr(model, name).grad
        along = basis @ grad  # v^T grad for the rows v of S: (k, d) for E, per head (nh, k, N) for Dx and Dy
        assert along.abs().max() < 1e-5 * before[name].abs().max()
        assert (basis @ before[name]).abs().max() > 1e-2 * before[name].abs().max()  # there was some to remove


def test_a_projected_sgd_step_keeps_the_outputs_on_old_inputs(model):
    projectors = learnt(model)
    old = {name: getattr(model, name).detach().clone() for name in INPUT_DIMS}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(tokens(7)).flatten(0, 1), tokens(7).roll(-1, 1).flatten()).backward()
    projectors.project_gradients(model)
    with projectors.projected_update(model):
        optimizer.step()
    for name in INPUT_DIMS:
        basis = projectors.bases[name]
        v = torch.randn(5, basis.shape[0], generator=torch.Generator().manual_seed(3)) @ basis  # rows in span(H)
        new = getattr(model, name).detach()
        assert (new - old[name]).abs().max() > 1e-4  # the map did learn
        torch.testing.assert_close(v @ new, v @ old[name], atol=1e-5, rtol=1e-5)


def test_adamw_with_the_update_projected_keeps_the_outputs_on_old_inputs(model):
    projectors = learnt(model)
    old = {name: getattr(model, name).detach().clone() for name in INPUT_DIMS}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    for seed in (5, 6):
        F.cross_entropy(model(tokens(seed)).flatten(0, 1), tokens(seed).roll(-1, 1).flatten()).backward()
        projectors.project_gradients(model)
        with projectors.projected_update(model):
            optimizer.step()
        optimizer.zero_grad()
    for name in INPUT_DIMS:
        v = projectors.bases[name]
        torch.testing.assert_close(v @ getattr(model, name).detach(), v @ old[name], atol=1e-5, rtol=1e-5)


def test_oja_captures_more_energy_than_a_random_subspace(model):
    projectors = learnt(model)
    energy = projectors.energy(model, [tokens(20)])
    for name, x in map_inputs(model, tokens(20)).items():
        # A random k-dimensional subspace of R^n holds k / n of any inputs' energy on average; the
        # top k eigenvectors of X^T X hold the most any k-dimensional subspace can.
        eigenvalues = torch.linalg.eigvalsh(x.T @ x).flip(0)
        best = float(eigenvalues[: RANKS[name]].sum() / eigenvalues.sum())
        assert RANKS[name] / x.shape[1] + 0.05 < energy[name] <= best + 1e-6


def test_ranks_must_fit_the_inputs(model):
    with pytest.raises(ConfigError):
        BDHProjectors(model, {**RANKS, "encoder_x": 17}, LR)
    with pytest.raises(ConfigError):
        BDHProjectors(model, {"encoder_x": 4}, LR)
