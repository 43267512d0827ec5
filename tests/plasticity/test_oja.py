import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synaptorch.errors import ConfigError
from synaptorch.plasticity.oja import (
    oja_subspace_step,
    orthogonal_rows,
    orthonormal_basis,
    project_out,
    projection_error,
    subspace_energy,
)


def _data_with_known_subspace(n: int = 20, k: int = 3, samples: int = 4096, seed: int = 0):
    """Rows x = z diag(s) Q^T: the top k of the scales s span the first k columns of the rotation Q."""
    generator = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))[0]
    scales = torch.full((n,), 0.1, dtype=torch.float64)
    scales[:k] = torch.tensor([3.0, 2.0, 1.5], dtype=torch.float64)[:k]
    x = torch.randn(samples, n, generator=generator, dtype=torch.float64) * scales @ rotation.T
    return x, rotation[:, :k].T  # (samples, n), the true principal rows (k, n)


def _learn(H, x, lr, frozen_rows=0, epochs=3, batch=64):
    buffer = None
    for _ in range(epochs):
        for chunk in x.split(batch):
            for _ in range(5):
                H, buffer = oja_subspace_step(H, chunk, lr, frozen_rows, buffer)
    return H


def test_step_by_hand():
    H, x = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    # y = 1, x - H^T y = [0, 1], dH = [0, 1]
    new, buffer = oja_subspace_step(H, x, lr=0.5, momentum=0.0)
    torch.testing.assert_close(new, torch.tensor([[1.0, 0.5]]))
    torch.testing.assert_close(buffer, torch.tensor([[0.0, 1.0]]))
    # Momentum 0.9 as a running mean: the buffer starts at 0.1 dH.
    new, buffer = oja_subspace_step(H, x, lr=0.5)
    torch.testing.assert_close(new, torch.tensor([[1.0, 0.05]]))
    new, buffer = oja_subspace_step(new, x, lr=0.5, momentum_buffer=buffer)
    assert buffer[0, 1] > 0.1  # the second step adds to the first


def test_clip_bounds_the_update():
    H, x = torch.tensor([[1.0, 0.0]]), torch.tensor([[10.0, 10.0]])
    # y = 10, residual [0, 10]: dH = [0, 100], clipped to 10
    new, _ = oja_subspace_step(H, x, lr=1.0, momentum=0.0, clip=10.0)
    torch.testing.assert_close(new, torch.tensor([[1.0, 10.0]]))
    new, _ = oja_subspace_step(H, x, lr=1.0, momentum=0.0, clip=None)
    torch.testing.assert_close(new, torch.tensor([[1.0, 100.0]]))


def test_frozen_rows_and_their_momentum_stay():
    generator = torch.Generator().manual_seed(0)
    H, x, buffer = torch.randn(4, 6, generator=generator), torch.randn(8, 6, generator=generator), torch.ones(4, 6)
    new, new_buffer = oja_subspace_step(H, x, 0.1, frozen_rows=2, momentum_buffer=buffer)
    assert torch.equal(new[:2], H[:2]) and torch.equal(new_buffer[:2], buffer[:2])
    assert not torch.allclose(new[2:], H[2:])
    with pytest.raises(ConfigError):
        oja_subspace_step(H, x, 0.1, frozen_rows=5)


def test_converges_to_the_principal_subspace():
    x, principal = _data_with_known_subspace()
    H = orthogonal_rows(3, 20, generator=torch.Generator().manual_seed(1)).double()
    H = _learn(H, x, lr=0.01)
    # The projection matrices, and so the subspaces (all principal angles), agree.
    assert torch.linalg.matrix_norm(H.T @ H - principal.T @ principal) < 0.05
    cosines = torch.linalg.svdvals(orthonormal_basis(H) @ principal.T)
    assert math.degrees(math.acos(min(1.0, float(cosines.min())))) < 2.0
    assert projection_error(H) < 0.05
    true_energy = subspace_energy(principal, x)
    assert subspace_energy(H, x) == pytest.approx(true_energy, abs=0.01)
    assert subspace_energy(H, x, orthonormalize=False) == pytest.approx(true_energy, abs=0.02)


def test_free_rows_learn_what_the_frozen_ones_miss():
    x, principal = _data_with_known_subspace()
    first = principal[:1]  # the top direction, frozen
    free = orthogonal_rows(2, 20, first, torch.Generator().manual_seed(2)).double()
    H = _learn(torch.cat([first, free]), x, lr=0.01, frozen_rows=1)
    assert torch.equal(H[:1], first)
    rest = principal[1:]
    assert torch.linalg.matrix_norm(H[1:].T @ H[1:] - rest.T @ rest) < 0.05


def test_orthogonal_rows():
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(3, 10, generator=generator)
    new = orthogonal_rows(4, 10, old, generator)
    torch.testing.assert_close(new @ new.T, torch.eye(4), atol=1e-5, rtol=0)
    assert (new @ old.T).abs().max() < 1e-5
    assert orthogonal_rows(0, 10, old).shape == (0, 10)
    with pytest.raises(ConfigError):
        orthogonal_rows(8, 10, old)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 10_000))
def test_project_out_leaves_the_complement(k, seed):
    generator = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(8, k, generator=generator, dtype=torch.float64))[0].T
    x = torch.randn(5, 8, generator=generator, dtype=torch.float64)
    out = project_out(x, Q)
    assert (out @ Q.T).abs().max() < 1e-10  # orthogonal to the row space
    torch.testing.assert_close(project_out(out, Q), out)  # a projection: idempotent
    torch.testing.assert_close(out + (x @ Q.T) @ Q, x)  # nothing else is lost


def test_energy_and_error_of_scaled_rows():
    Q = torch.eye(4)[:2]  # the first two axes
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert subspace_energy(Q, x) == pytest.approx(0.5)
    assert subspace_energy(Q, x, orthonormalize=False) == pytest.approx(0.5)
    assert projection_error(Q) == pytest.approx(0.0)
    # 2Q spans the same subspace, but x - x (2Q)^T (2Q) = x - 4 P x overshoots.
    assert subspace_energy(2 * Q, x) == pytest.approx(0.5)
    assert subspace_energy(2 * Q, x, orthonormalize=False) == pytest.approx(1 - (9 * 2 + 2) / 4)
    assert projection_error(2 * Q) == pytest.approx(3 * math.sqrt(2))
    assert subspace_energy(torch.zeros(0, 4), x) == 0.0
