import torch
import torch.nn.functional as F

from synaptorch.local.bp import BP, BPConfig


def test_one_update_is_sgd_on_the_cross_entropy_through_every_layer():
    model = BP(BPConfig(n_inputs=5, n_classes=3, layers=(4, 4), lr=0.1, momentum=0.0))
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    x, y = torch.rand(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    (w1, b1, w2, b2, w3, b3) = params
    logits = torch.relu(torch.relu(x @ w1.T + b1) @ w2.T + b2) @ w3.T + b3
    F.cross_entropy(logits, y).backward()
    model.train_batch(x, y, progress=0.0)
    for after, before in zip(model.parameters(), params, strict=True):
        assert torch.allclose(after, before.detach() - 0.1 * before.grad, atol=1e-6)
    assert all(before.grad.abs().sum() > 0 for before in params), "the error reaches every layer"


def test_learns_an_easy_task(clustered):
    images, labels = clustered(900, 6, 3, 0)
    x = images.view(900, -1).float() / 255
    model = BP(BPConfig(n_inputs=36, n_classes=3, layers=(32,)))
    for batch in torch.arange(600).split(50):
        model.train_batch(x[batch], labels[batch], progress=0.0)
    assert (model.predict(x[600:]) == labels[600:]).float().mean() > 0.9
