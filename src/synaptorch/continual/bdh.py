"""HLOP for BDH: Hebbian subspaces of the inputs of Dx, Dy and E, out of which later updates are projected.

BDH's three neuron matrices are linear maps of their inputs, shared by every layer:

    Dx (nh, d, N)   x_sparse_h = relu(x Dx_h)             input x: the residual stream (B T, d)
    Dy (nh, d, N)   y_sparse_h = relu(layernorm(a_h) Dy_h)  input layernorm(a_h) (B T, d), per head
    E  (nh N, d)    y = concat_h(xy_h) E                    input the concatenation of xy over heads (B T, nh N)

Each map is applied as X @ W with X (B, n) its inputs, so its weight gradient is X^T G (G the
gradient of the outputs) and its input axis is the first of W (the second of Dx, Dy: dim 1).
With H (k, n) orthonormal rows and P = H^T H, the gradient computed with the projected inputs
X - X P is

    (X - X P)^T G = (I - P) X^T G = dW - P dW   (P symmetric),

the finished gradient projected along its input axis: that is `project_gradients`. For any old
input v in span(H), v^T (W - lr (dW - P dW)) = v^T W - lr (v^T - v^T P) dW = v^T W, because
v^T P = v^T: the map's response to inputs of the learnt subspace does not move.

HLOP (Xiao et al. 2024, "Hebbian learning based orthogonal projection for continual learning of
spiking neural networks", ICLR) learns H with Oja's subspace rule, dH = y (x - H^T y)^T / B with
y = H x (`synaptorch.plasticity.oja`), one `HebbianProjector` per map. The inputs of all layers
go into one projector, because the layers share their weights; Dy's heads do too, one subspace of
R^d for all four heads, so that the gradient of each head's Dy_h keeps out of every head's inputs
at the cost of a somewhat larger subspace than per-head projectors would need.

With AdamW the projected gradient alone is not enough: Adam divides each entry by its own running
RMS and decoupled weight decay shrinks the whole matrix, both of which move W v for v in the
subspace. `projected_update` therefore also projects the change the optimizer made, W_new - W_old,
along the input axis; for plain SGD without weight decay it changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from synaptorch.continual.projection import HebbianProjector, project_gradient
from synaptorch.errors import ConfigError
from synaptorch.models.bdh import BDH
from synaptorch.models.layers import layer_norm
from synaptorch.plasticity.oja import orthonormal_basis

# The input axis of each map's weight: Dx and Dy are (nh, d, N) applied as x @ W_h, E (nh N, d) as x @ E.
INPUT_DIMS = {"encoder_x": 1, "encoder_y": 1, "decoder": 0}


@torch.no_grad()
def map_inputs(model: BDH, idx: Tensor) -> dict[str, Tensor]:
    """The inputs of Dx, Dy and E on tokens idx (B, T), over every layer, as rows.

    encoder_x: (L B T, d) the residual stream; encoder_y: (L nh B T, d) layernorm(a) of every
    head; decoder: (L B T, nh N) xy of the heads side by side, the row that multiplies E.
    The layer's observer is not given Dy's input, and `BDH.neuron_density`'s observer takes no
    extra keywords, so it is recomputed here rather than passed: the recurrent form from an empty
    state reads q @ rho = 0, so a is the causal attention of q and the residual, as in the layer.
    """
    rows: dict[str, list[Tensor]] = {name: [] for name in INPUT_DIMS}

    def observe(layer: int, residual: Tensor, q: Tensor, xy: Tensor, **_: Tensor) -> None:
        d = residual.shape[-1]
        rows["encoder_x"].append(residual.reshape(-1, d))
        rows["encoder_y"].append(layer_norm(model._attend(q, residual)).reshape(-1, d))
        rows["decoder"].append(xy.permute(1, 2, 0, 3).reshape(-1, xy.shape[0] * xy.shape[-1]))

    was_training = model.training
    model.eval()
    try:
        model.forward_recurrent(idx, observe=observe)
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in rows.items()}


class BDHProjectors:
    """One `HebbianProjector` per map of BDH (Dx, Dy, E), learnt from a corpus, frozen, then projected out.

    `ranks`: lateral neurons per map, at most its input width (d for Dx and Dy, nh N for E).
    `lr`: Oja's learning rate per map, in the units of the raw inputs: the residual stream and
    layernorm(a) have unit mean square entries, so their second moment's eigenvalues average 1;
    xy is sparse and smaller. `iterations` steps of the rule per batch, as HLOP.
    """

    def __init__(
        self,
        model: BDH,
        ranks: dict[str, int],
        lr: dict[str, float],
        iterations: int = 5,
        generator: torch.Generator | None = None,
    ) -> None:
        if set(ranks) != set(INPUT_DIMS) or set(lr) != set(INPUT_DIMS):
            raise ConfigError(f"ranks and lr need one entry for each of {sorted(INPUT_DIMS)}")
        c = model.config
        widths = {"encoder_x": c.n_embd, "encoder_y": c.n_embd, "decoder": c.n_head * c.n_neuron}
        self.projectors = {
            name: HebbianProjector(widths[name], lr[name], iterations=iterations, generator=generator)
            for name in INPUT_DIMS
        }
        for name, projector in self.projectors.items():
            if projector.add_rows(ranks[name]) != ranks[name]:
                raise ConfigError(f"{name} has {widths[name]} inputs, fewer than the {ranks[name]} rows asked")
        # Orthonormal rows spanning each frozen H: Oja's rows are orthonormal only at convergence, and
        # with them P = Q^T Q is an exact projection, so that the guarantee above holds to rounding.
        self.bases = {name: torch.zeros(0, widths[name]) for name in INPUT_DIMS}

    def learn(self, model: BDH, batches: Iterable[Tensor]) -> None:
        """Run Oja's rule on the maps' inputs over token batches (B, T), then freeze the rows as the past."""
        for idx in batches:
            for name, x in map_inputs(model, idx).items():
                self.projectors[name].learn(x)
        for name, projector in self.projectors.items():
            projector.freeze()
            self.bases[name] = orthonormal_basis(projector.basis)

    @torch.no_grad()
    def energy(self, model: BDH, batches: Iterable[Tensor]) -> dict[str, float]:
        """Per map, the fraction of its inputs' energy ||X||^2 over the batches inside the learnt subspace."""
        captured = dict.fromkeys(INPUT_DIMS, 0.0)
        total = dict.fromkeys(INPUT_DIMS, 0.0)
        for idx in batches:
            for name, x in map_inputs(model, idx).items():
                square = float(x.square().sum())
                captured[name] += self.projectors[name].energy(x) * square
                total[name] += square
        return {name: captured[name] / total[name] if total[name] else 0.0 for name in INPUT_DIMS}

    def project(self, name: str, tensor: Tensor) -> Tensor:
        """A weight-shaped tensor of map `name` less its component along the subspace on the input axis."""
        basis = self.bases[name].to(tensor)
        if INPUT_DIMS[name] == 0:
            return project_gradient(tensor, basis, input_dim=0)
        # Dx and Dy hold one (d, N) matrix per head, each multiplying the head's inputs from the left.
        return torch.stack([project_gradient(head, basis, input_dim=0) for head in tensor])

    @torch.no_grad()
    def project_gradients(self, model: BDH) -> None:
        """Replace the gradients of Dx, Dy and E in place by their projections (call after backward)."""
        for name, parameter in self._parameters(model):
            if parameter.grad is not None:
                parameter.grad.copy_(self.project(name, parameter.grad))

    @contextmanager
    def projected_update(self, model: BDH) -> Iterator[None]:
        """Around `optimizer.step()`: keep of the change of Dx, Dy and E only its projection."""
        before = {name: parameter.detach().clone() for name, parameter in self._parameters(model)}
        yield
        with torch.no_grad():
            for name, parameter in self._parameters(model):
                parameter.copy_(before[name] + self.project(name, parameter - before[name]))

    def sizes(self) -> dict[str, int]:
        """The dimension of each map's frozen subspace."""
        return {name: basis.shape[0] for name, basis in self.bases.items()}

    def projection_errors(self) -> dict[str, float]:
        """||H H^T - I||_F per map: how far the learnt rows are from orthonormal, so P from a projection."""
        return {name: projector.projection_error() for name, projector in self.projectors.items()}

    @staticmethod
    def _parameters(model: BDH) -> Iterator[tuple[str, torch.nn.Parameter]]:
        for name in INPUT_DIMS:
            yield name, getattr(model, name)
