import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.errors import ConfigError
from synaptorch.local.ff import (
    FF,
    FFConfig,
    embed_label,
    embed_neutral,
    ff_loss,
    goodness,
    rms_normalize,
    wrong_labels,
)


def test_goodness_and_loss_by_hand():
    h = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    assert goodness(h).tolist() == [5.0, 9.0]
    # -log sigmoid(5 - 3) - log sigmoid(3 - 9), with theta = 3
    expected = torch.log1p(torch.exp(torch.tensor(-2.0))) + torch.log1p(torch.exp(torch.tensor(-6.0)))
    assert torch.isclose(ff_loss(torch.tensor([5.0]), torch.tensor([9.0]), 3.0), expected + 6.0, atol=1e-5)


def test_rms_normalize_gives_unit_mean_square():
    h = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert torch.allclose(rms_normalize(h).pow(2).mean(dim=-1), torch.ones(2), atol=1e-6)
    assert torch.allclose(rms_normalize(h)[0], torch.tensor([3.0, 4.0]) / (12.5**0.5))


def test_label_pixels():
    x = torch.full((2, 5), 0.5)
    out = embed_label(x, torch.tensor([1, 0]), 3, strength=2.0)
    assert out.tolist() == [[0.0, 2.0, 0.0, 0.5, 0.5], [2.0, 0.0, 0.0, 0.5, 0.5]]
    assert torch.allclose(embed_neutral(x, 4)[:, :4], torch.full((2, 4), 0.25))
    assert torch.equal(x, torch.full((2, 5), 0.5)), "the images themselves are left alone"


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 10), st.integers(1, 30), st.integers(0, 2**31 - 1), st.booleans())
def test_a_negative_label_is_never_the_true_one(n_classes, batch, seed, weighted):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (batch,), generator=generator)
    weights = torch.rand(batch, n_classes, generator=generator) if weighted else None
    wrong = wrong_labels(labels, n_classes, generator, weights)
    assert ((wrong != labels) & (wrong >= 0) & (wrong < n_classes)).all()


def test_one_update_against_the_hand_derived_gradient():
    """One layer, no smoothing, peer normalisation or weight cost: W' = W - lr * dL/dW with
    dL/dh = -sigmoid(theta - G+) 2 h+ for the positive and sigmoid(G- - theta) 2 h- for the negative."""
    config = FFConfig(
        n_inputs=4, n_classes=2, layers=(3,), lr=0.1, smoothing=0.0, peer_normalization=0.0, weight_cost=0.0
    )
    model = FF(config)
    x, y = torch.tensor([[0.0, 0.0, 0.8, 0.3], [0.0, 0.0, 0.1, 0.9]]), torch.tensor([1, 0])
    w, b = model.layers[0].weight.detach().clone(), model.layers[0].bias.detach().clone()
    model.train_batch(x, y, progress=0.0)
    grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
    for labels, sign in ((y, -1.0), (1 - y, 1.0)):  # with two classes the only wrong label is the other
        inputs = rms_normalize(embed_label(x, labels, 2))
        h = torch.relu(inputs @ w.T + b)
        g = h.pow(2).sum(dim=1)
        weight = torch.sigmoid(sign * (g - 3.0)) if sign > 0 else torch.sigmoid(3.0 - g)
        d_h = sign * weight[:, None] * 2 * h / len(x)  # the loss is a mean over the batch
        grad_w += d_h.T @ inputs
        grad_b += d_h.sum(dim=0)
    assert torch.allclose(model.layers[0].weight, w - 0.1 * grad_w, atol=1e-6)
    assert torch.allclose(model.layers[0].bias, b - 0.1 * grad_b, atol=1e-6)


@pytest.mark.parametrize("peer", [0.0, 0.03])
def test_each_layer_learns_from_its_own_loss_only(peer, parameters_stepped):
    model = FF(FFConfig(n_inputs=20, n_classes=3, layers=(8, 8, 8), peer_normalization=peer))
    layers = [set(map(id, layer.parameters())) for layer in model.layers]
    stepped = parameters_stepped(model, torch.rand(5, 20), torch.tensor([0, 1, 2, 0, 1]))
    assert stepped == layers, "layer i's loss must reach layer i's weights and no other"


def test_peer_normalisation_raises_units_that_are_rarely_on():
    torch.manual_seed(0)
    config = FFConfig(n_inputs=12, n_classes=2, layers=(4,), lr=0.01, smoothing=0.0, weight_cost=0.0)
    model = FF(config)
    model.mean_activity.copy_(torch.tensor([0.0, 1.0, 1.0, 1.0]))  # unit 0 has been silent
    plain = FF(FFConfig(**{**config.__dict__, "peer_normalization": 0.0}))
    x, y = torch.rand(8, 12) + 0.5, torch.randint(0, 2, (8,))
    model.train_batch(x, y, 0.0)
    plain.train_batch(x, y, 0.0)
    with torch.no_grad():
        inputs = rms_normalize(embed_label(x, y, 2))
        # both saw the same negatives: their generators were seeded alike
        delta = (model.layers[0](inputs) - plain.layers[0](inputs)).mean(dim=0)
    assert delta[0] > 0 and (delta[1:] < 0).all()


def test_learns_an_easy_task_with_both_readouts(clustered):
    images, labels = clustered(900, 6, 3, 0)
    x = images.view(900, -1).float() / 255
    model = FF(FFConfig(n_inputs=36, n_classes=3, layers=(64, 64), epochs=1, lr=0.01))
    for epoch in range(4):
        for batch in torch.arange(600).split(50):
            model.train_batch(x[batch], labels[batch], progress=epoch / 4)
    test_x, test_y = x[600:], labels[600:]
    for readout in ("goodness", "softmax"):
        assert (model.predict_with(test_x, readout) == test_y).float().mean() > 0.8, readout


def test_goodness_scores_score_every_label():
    model = FF(FFConfig(n_inputs=20, n_classes=4, layers=(6, 5)))
    x = torch.rand(3, 20)
    scores = model.goodness_scores(x)
    assert scores.shape == (3, 4)
    with torch.no_grad():
        one = goodness(model.activities(embed_label(x, torch.full((3,), 2), 4))[1])
    assert torch.allclose(scores[:, 2], one, atol=1e-5), "layer 1 is skipped, layer 2 counted"


@pytest.mark.parametrize(
    "bad",
    [{"layers": ()}, {"layers": (10, 0)}, {"negatives": "easy"}, {"readout": "vote"}, {"lr": 0.0}, {"n_inputs": 5}],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        FFConfig(**bad)


def test_predict_refuses_an_unknown_readout():
    with pytest.raises(ConfigError, match="readout"):
        FF(FFConfig(n_inputs=20, n_classes=3, layers=(4,))).predict_with(torch.rand(2, 20), "vote")


def test_loss_helpers_agree_with_torch():
    g = torch.tensor([1.0, 7.0])
    assert torch.isclose(ff_loss(g, g, 4.0), (F.softplus(4.0 - g) + F.softplus(g - 4.0)).mean())
