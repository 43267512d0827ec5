import math

import pytest
import torch

from synaptorch.errors import ConfigError
from synaptorch.local.df import DF, DFConfig, centroid_distances, n_pair_margin_loss
from synaptorch.local.ff import rms_normalize


def test_n_pair_margin_loss_by_hand():
    distances = torch.tensor([[0.2, 0.5, 0.9], [0.4, 0.1, 0.3]])
    labels = torch.tensor([0, 2])
    first = math.log(1 + math.exp(10 * (0.2 - 0.5 + 0.1)) + math.exp(10 * (0.2 - 0.9 + 0.1)))
    second = math.log(1 + math.exp(10 * (0.3 - 0.4 + 0.1)) + math.exp(10 * (0.3 - 0.1 + 0.1)))
    loss = n_pair_margin_loss(distances, labels, scale=10.0, margin=0.1)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_centroid_distances_by_hand():
    h = torch.tensor([[3.0, 4.0]])
    centroids = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    n = h / (12.5**0.5)
    expected = torch.stack([((n - c) ** 2).sum(dim=-1) / 2 for c in centroids], dim=-1)
    assert torch.allclose(centroid_distances(h, centroids), expected, atol=1e-5)


@pytest.mark.parametrize("collaboration", [True, False])
def test_one_update_follows_the_stated_equations(collaboration):
    """Layer l descends L_l of its own distances plus the others' as constants, with plain SGD."""
    config = DFConfig(n_inputs=6, n_classes=3, layers=(5, 4), lr=0.2, momentum=0.0, collaboration=collaboration)
    model = DF(config)
    x, y = torch.rand(4, 6), torch.tensor([0, 2, 1, 2])
    before = [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in model.layers]
    centroids = [c.detach().clone() for c in model.centroids]
    with torch.no_grad():  # the equations, written out: inputs and distances before any update
        inputs, h, distances = [], x, []
        for (w, b), mu in zip(before, centroids, strict=True):
            inputs.append(rms_normalize(h))
            h = torch.relu(inputs[-1] @ w.T + b)
            distances.append(((rms_normalize(h)[:, None, :] - mu[None]) ** 2).sum(-1) / h.shape[1])
    expected = []
    for index, ((w, b), mu) in enumerate(zip(before, centroids, strict=True)):
        w, b, mu = (t.clone().requires_grad_() for t in (w, b, mu))
        h = torch.relu(inputs[index] @ w.T + b)
        own = ((rms_normalize(h)[:, None, :] - mu[None]) ** 2).sum(-1) / h.shape[1]
        others = sum(d for k, d in enumerate(distances) if k != index) if collaboration else 0.0
        total = own + others
        true = total.gather(1, y[:, None])
        terms = torch.exp(10.0 * (true - total + 0.1)).scatter(1, y[:, None], 0.0)
        torch.log1p(terms.sum(dim=1)).mean().backward()
        expected.append([t.detach() - 0.2 * t.grad for t in (w, b, mu)])
    model.train_batch(x, y, progress=0.0)
    for (w, b, mu), layer, centroid in zip(expected, model.layers, model.centroids, strict=True):
        assert torch.allclose(layer.weight, w, atol=1e-5)
        assert torch.allclose(layer.bias, b, atol=1e-5)
        assert torch.allclose(centroid, mu, atol=1e-5)


def test_each_layer_learns_from_its_own_loss_only(parameters_stepped):
    model = DF(DFConfig(n_inputs=10, n_classes=3, layers=(6, 6, 6)))
    pairs = zip(model.layers, model.centroids, strict=True)
    owned = [set(map(id, [*layer.parameters(), centroid])) for layer, centroid in pairs]
    assert parameters_stepped(model, torch.rand(5, 10), torch.tensor([0, 1, 2, 0, 1])) == owned


def test_learns_an_easy_task(clustered):
    images, labels = clustered(900, 6, 3, 0)
    x = images.view(900, -1).float() / 255
    model = DF(DFConfig(n_inputs=36, n_classes=3, layers=(32, 32)))
    for epoch in range(3):
        for batch in torch.arange(600).split(50):
            model.train_batch(x[batch], labels[batch], progress=epoch / 3)
    assert (model.predict(x[600:]) == labels[600:]).float().mean() > 0.9


@pytest.mark.parametrize("bad", [{"scale": 0.0}, {"margin": -0.1}, {"momentum": 1.0}, {"layers": (4, -1)}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        DFConfig(**bad)
