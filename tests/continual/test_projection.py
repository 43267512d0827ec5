import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.continual import HebbianProjector, SVDProjector, project_gradient
from synaptorch.errors import ConfigError


def _low_rank_rows(samples: int, n: int, rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(n, rank, generator=generator))[0].T  # (rank, n)
    scales = torch.linspace(2.0, 1.0, rank)
    return torch.randn(samples, rank, generator=generator) * scales @ basis, basis


def test_projecting_the_gradient_is_projecting_the_inputs():
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(6, 3, bias=False)
    x, basis = torch.randn(5, 6, generator=generator), torch.linalg.qr(torch.randn(6, 2, generator=generator))[0].T
    layer(x).square().sum().backward()
    # The same loss with the projected inputs x - x B^T B in the weight's gradient only.
    g = 2 * layer(x).detach()  # (B, out): d loss / d output
    expected = g.T @ (x - x @ basis.T @ basis)
    torch.testing.assert_close(project_gradient(layer.weight.grad, basis), expected)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(0, 10_000))
def test_the_projected_update_leaves_old_inputs_alone(k, seed):
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(10, k, generator=generator, dtype=torch.float64))[0].T  # (k, 10)
    grad = torch.randn(4, 10, generator=generator, dtype=torch.float64)  # a weight (out, in)
    v = torch.randn(k, generator=generator, dtype=torch.float64) @ basis  # an old input
    assert (project_gradient(grad, basis) @ v).abs().max() < 1e-10
    # E used as x @ E (in, out): its inputs index the first axis.
    assert (v @ project_gradient(grad.T, basis, input_dim=0)).abs().max() < 1e-10
    with pytest.raises(ConfigError):
        project_gradient(grad, basis, input_dim=2)


def test_hebbian_projector_learns_and_protects_its_subspace():
    x, basis = _low_rank_rows(2048, 16, 3)
    projector = HebbianProjector(16, lr=0.02, generator=torch.Generator().manual_seed(0))
    assert projector.add_rows(3) == 3
    assert projector.basis.shape == (0, 16)  # nothing frozen: no projection yet
    grad = torch.randn(5, 16)
    assert torch.equal(projector.project_gradient(grad), grad)
    for _ in range(3):
        projector.learn(x.split(64))
    projector.freeze()
    assert projector.basis.shape == (3, 16)
    assert projector.projection_error() < 0.05
    assert projector.energy(x) > 0.99
    assert abs(projector.energy(x, orthonormalize=False) - projector.energy(x)) < 0.02
    # The update leaves the response to old inputs nearly unchanged: |dW v| / |grad v| small.
    old = torch.randn(8, 3) @ basis
    assert (projector.project_gradient(grad) @ old.T).norm() < 0.05 * (grad @ old.T).norm()
    # Frozen rows no longer learn; new rows go to what is left.
    before = projector.weight.clone()
    assert projector.add_rows(2) == 2
    projector.learn(torch.randn(64, 16))
    assert torch.equal(projector.weight[:3], before)
    assert projector.add_rows(100) == 11  # capped at n


def test_svd_projector_keeps_the_threshold_of_energy():
    # Energies 4, 1, 0.01 per direction (axes 0, 1, 2): 0.9 of 5.01 needs two directions.
    x = torch.zeros(3, 8)
    x[0, 0], x[1, 1], x[2, 2] = 2.0, 1.0, 0.1
    projector = SVDProjector(8)
    assert projector.update(x, 0.9) == 2
    torch.testing.assert_close(projector.basis.abs(), torch.eye(8)[:2])
    assert projector.update(x, 0.9) == 0  # already above the threshold
    assert projector.update(x, 1.0) == 1  # the residual direction
    torch.testing.assert_close(projector.basis @ projector.basis.T, torch.eye(3))
    assert projector.energy(x) == pytest.approx(1.0)
    assert projector.projection_error() < 1e-5
    with pytest.raises(ConfigError):
        projector.update(x, 1.5)
