"""Learning a sequence of tasks with one network, five ways, and scoring what it keeps.

`train_continual(method, tasks, config)` trains a fresh `MLP` (or `SpikingMLP`) on the tasks in
order with SGD (a new optimiser per task, cross-entropy on a shared 10-way output) and, after
each task i, tests it on tasks 0..i: `R[i][j]` is the test accuracy on task j after task i. Then

    ACC = mean_j R[N-1][j]                       BWT = mean_{j < N-1} (R[N-1][j] - R[j][j])

(Lopez-Paz and Ranzato 2017). The methods:

- finetune: plain SGD, task after task, the lower bound.
- ewc (Kirkpatrick et al. 2017): after task t the diagonal Fisher F_t of its training data and
  the weights w_t are kept, and later tasks add (lambda / 2) sum_t sum_i F_t,i (w_i - w_t,i)^2 to
  the loss. F is the empirical Fisher, the mean of squared per-example gradients of the
  cross-entropy at the true labels, on `fisher_samples` training examples of the task. The
  penalty is kept as A (w - m)^2 with A = sum_t F_t, m = sum_t F_t w_t / A: the same gradient at
  constant memory. Its step is taken implicitly after each SGD step on the loss (a proximal
  step), w <- (w + lr lambda A m) / (1 + lr lambda A): the explicit step lr lambda A (w - m)
  overshoots and diverges once lr lambda A > 2, and the implicit one is stable for any lambda
  and the same to first order in lr lambda A (this library's choice).
- gpm (Saha et al. 2021): after each task, the inputs of each linear map on `gpm_samples` of its
  training images extend an orthonormal basis (`SVDProjector`) up to the layer's energy
  threshold (`gpm_threshold`, plus `gpm_threshold_step` per task, at most 1); later gradients
  are projected out of the basis. GPM's permuted MNIST code (github.com/sahagobinda/GPM,
  main_pmnist.py) uses 300 samples and thresholds 0.95, 0.99, 0.99, the defaults here. Its
  first task keeps one direction fewer than the threshold needs; here every task keeps enough
  to reach it, as GPM's rule for later tasks does.
- hlop (Xiao et al. 2024): each map has a `HebbianProjector`. Task t opens `subspace_sizes(t)`
  new rows; with `hebbian_when="during"` (the reference code) Oja's rule runs on every training
  batch's inputs of the map, `hebbian_iterations` times, while the gradient is projected out of
  the rows of earlier tasks; with "after" the rule runs over the task's inputs for
  `hebbian_epochs` after its training. The new rows are then frozen.
- joint: after each task, training on the union of every task so far (the upper bound).

Defaults from HLOP's permuted MNIST code (github.com/pkuxmq/HLOP-SNN, spiking_train_pmnist.py):
SGD lr 0.1, batch 64, 1 epoch per task, subspaces of 80, 200, 100 rows for the first task and
70 per layer for each later one, less 20 at tasks 3, 6, 9 (`subspace_decay`, `subspace_decay_every`);
Oja learning rates 0.001 for the image input and 0.01 for hidden layers, 5 iterations, momentum
0.9, clip 10. This library's choices: the EWC lambda (100) and Fisher sample (1000), the
spiking time steps (4; the paper has 20) and the spiking network's neurons and weights
(`SpikingMLP`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.continual.networks import MLP, SpikingMLP
from synaptorch.continual.projection import HebbianProjector, SVDProjector
from synaptorch.continual.tasks import Task
from synaptorch.errors import ConfigError
from synaptorch.fields import check_positive_ints

METHODS = ("finetune", "ewc", "gpm", "hlop", "joint")
HEBBIAN_WHEN = ("during", "after")


TUPLE_FIELDS = ("hidden", "subspace_first", "subspace_step", "hebbian_lr", "gpm_threshold")


@dataclass(frozen=True)
class ContinualConfig:
    """The settings of `train_continual`; defaults and their sources are in the module docstring.

    Lists given for the tuple fields (as JSON and TOML give them) become tuples.
    """

    hidden: tuple[int, ...] = (800, 800)
    spiking: bool = False
    steps: int = 4  # time steps of the spiking network
    epochs: int = 1  # per task
    batch_size: int = 64
    lr: float = 0.1
    eval_batch_size: int = 1000
    # HLOP: one entry per linear map (len(hidden) + 1).
    subspace_first: tuple[int, ...] = (80, 200, 100)
    subspace_step: tuple[int, ...] = (70, 70, 70)
    subspace_decay: int = 20
    subspace_decay_every: int = 3
    hebbian_lr: tuple[float, ...] = (0.001, 0.01, 0.01)
    hebbian_iterations: int = 5
    hebbian_momentum: float = 0.9
    hebbian_clip: float = 10.0
    hebbian_when: str = "during"
    hebbian_epochs: int = 1  # passes of the rule after a task when hebbian_when is "after"
    # EWC
    ewc_lambda: float = 100.0
    fisher_samples: int = 1000  # training examples per task of the Fisher estimate
    # GPM
    gpm_threshold: tuple[float, ...] = (0.95, 0.99, 0.99)
    gpm_threshold_step: float = 0.0
    gpm_samples: int = 300
    energy_samples: int = 1000  # training images per task on which subspace energies are reported
    seed: int = 0

    def __post_init__(self) -> None:
        for name in TUPLE_FIELDS:
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.spiking, bool):
            raise ConfigError(f"spiking must be true or false, got {self.spiking!r}")
        check_positive_ints(
            self,
            (
                "steps",
                "epochs",
                "batch_size",
                "eval_batch_size",
                "hebbian_iterations",
                "hebbian_epochs",
                "gpm_samples",
                "fisher_samples",
                "energy_samples",
                "subspace_decay_every",
            ),
        )
        if not isinstance(self.hidden, tuple) or not self.hidden:
            raise ConfigError(f"hidden must be a non-empty tuple of widths, got {self.hidden!r}")
        if any(not isinstance(w, int) or isinstance(w, bool) or w <= 0 for w in self.hidden):
            raise ConfigError(f"hidden widths must be positive integers, got {self.hidden!r}")
        maps = len(self.hidden) + 1
        for name in ("subspace_first", "subspace_step", "hebbian_lr", "gpm_threshold"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != maps:
                raise ConfigError(f"{name} needs one value per linear map ({maps}), got {value!r}")
        if any(not isinstance(k, int) or k < 0 for k in self.subspace_first + self.subspace_step):
            raise ConfigError("subspace sizes must be non-negative integers")
        if not isinstance(self.subspace_decay, int) or self.subspace_decay < 0:
            raise ConfigError(f"subspace_decay must be non-negative, got {self.subspace_decay}")
        if any(not lr > 0 for lr in self.hebbian_lr) or not self.lr > 0:
            raise ConfigError(f"learning rates must be positive, got lr {self.lr} and hebbian_lr {self.hebbian_lr}")
        if any(not 0 < q <= 1 for q in self.gpm_threshold) or not 0 <= self.gpm_threshold_step < 1:
            raise ConfigError("gpm_threshold values must be in (0, 1] and gpm_threshold_step in [0, 1)")
        if not 0 <= self.hebbian_momentum < 1:
            raise ConfigError(f"hebbian_momentum must be in [0, 1), got {self.hebbian_momentum}")
        if not self.hebbian_clip > 0:
            raise ConfigError(f"hebbian_clip must be positive, got {self.hebbian_clip}")
        if self.hebbian_when not in HEBBIAN_WHEN:
            raise ConfigError(f"hebbian_when must be one of {', '.join(HEBBIAN_WHEN)}, got {self.hebbian_when!r}")
        if not self.ewc_lambda >= 0:
            raise ConfigError(f"ewc_lambda must be non-negative, got {self.ewc_lambda}")

    def subspace_sizes(self, task: int) -> tuple[int, ...]:
        """Rows each map's Hebbian subspace adds for task `task`: the first sizes, then the step less
        `subspace_decay` at every `subspace_decay_every`-th task (never below zero)."""
        if task == 0:
            return self.subspace_first
        cut = self.subspace_decay * (task // self.subspace_decay_every)
        return tuple(max(0, k - cut) for k in self.subspace_step)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LayerSubspace:
    """One map's subspace after a task: its size, the energy of that task's inputs in it, ||H H^T - I||_F."""

    rows: int
    energy: float  # in the span of the rows (orthonormal basis)
    projected_energy: float  # removed by x - x H^T H with H as it is
    projection_error: float


@dataclass
class ContinualResult:
    """A run: `R[i][j]`, the test accuracy on task j after training task i (j <= i), its wall-clock
    seconds, and for gpm and hlop each map's subspace after each task, measured on the first
    `energy_samples` training images of that task."""

    method: str
    accuracy: list[list[float]]  # R[i][j] for j <= i
    seconds: float
    subspaces: list[list[LayerSubspace]] = field(default_factory=list)  # per task, per map (gpm, hlop)
    config: dict = field(default_factory=dict)

    @property
    def acc(self) -> float:
        return average_accuracy(self.accuracy)

    @property
    def bwt(self) -> float:
        return backward_transfer(self.accuracy)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "acc": self.acc, "bwt": self.bwt}


def average_accuracy(accuracy: Sequence[Sequence[float]]) -> float:
    """ACC: the mean of the last row of R (`R[i][j]`, rows of length i + 1 or a square matrix)."""
    last = accuracy[-1][: len(accuracy)]
    return sum(last) / len(last)


def backward_transfer(accuracy: Sequence[Sequence[float]]) -> float:
    """BWT: mean over j < N - 1 of `R[N-1][j] - R[j][j]`; zero for a single task."""
    n = len(accuracy)
    if n < 2:
        return 0.0
    return sum(accuracy[-1][j] - accuracy[j][j] for j in range(n - 1)) / (n - 1)


def make_network(config: ContinualConfig, n_inputs: int, n_classes: int) -> nn.Module:
    if config.spiking:
        return SpikingMLP(n_inputs, config.hidden, n_classes, config.steps)
    return MLP(n_inputs, config.hidden, n_classes)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Accuracy of the model's argmax on rows x (N, D) with labels y (N,)."""
    correct = sum(
        int((model(x[i : i + batch_size]).argmax(-1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return correct / len(x)


@torch.no_grad()
def layer_inputs(model: nn.Module, x: Tensor, batch_size: int = 1000) -> list[Tensor]:
    """The input (N, n_l) of every linear map of the model on rows x (N, D)."""
    parts = [model(x[i : i + batch_size], return_inputs=True)[1] for i in range(0, len(x), batch_size)]
    return [torch.cat(layer) for layer in zip(*parts, strict=True)]


class _EWCPenalty:
    """(lambda / 2) sum_t F_t (w - w_t)^2, summed over tasks as (lambda / 2) A (w - m)^2 (up to a constant)."""

    def __init__(self, params: list[nn.Parameter], strength: float) -> None:
        self.params, self.strength = params, strength
        self.weight = [torch.zeros_like(p) for p in params]  # A = sum_t F_t
        self.anchor = [torch.zeros_like(p) for p in params]  # m = sum_t F_t w_t / A

    def consolidate(self, model: nn.Module, x: Tensor, y: Tensor) -> None:
        """Add the task whose examples x (N, D), labels y (N,) estimate its Fisher, at the current weights."""
        fisher = [torch.zeros_like(p) for p in self.params]
        # One example at a time: the Fisher is a mean of squared per-example gradients, and the
        # square of a batch's mean gradient would lose their spread.
        for i in range(len(x)):
            grads = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), self.params)
            for f, g in zip(fisher, grads, strict=True):
                f.add_(g.square())
        for p, f, a, m in zip(self.params, fisher, self.weight, self.anchor, strict=True):
            f /= len(x)
            total = m * a + f * p.detach()
            a.add_(f)
            m.copy_(torch.where(a > 0, total / a.clamp_min(torch.finfo(a.dtype).tiny), p.detach()))

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """The penalty's gradient step, taken implicitly: w <- (w + lr lambda A m) / (1 + lr lambda A)."""
        for p, a, m in zip(self.params, self.weight, self.anchor, strict=True):
            stiffness = lr * self.strength * a
            p.copy_((p + stiffness * m) / (1 + stiffness))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _record(projectors: list, inputs: list[Tensor]) -> list[LayerSubspace]:
    return [
        LayerSubspace(p.basis.shape[0], p.energy(x), p.energy(x, orthonormalize=False), p.projection_error())
        for p, x in zip(projectors, inputs, strict=True)
    ]


def train_continual(method: str, tasks: Sequence[Task], config: ContinualConfig | None = None) -> ContinualResult:
    """Train a fresh network on `tasks` in order with `method` (`METHODS`) and test it after each task."""
    config = ContinualConfig() if config is None else config
    if method not in METHODS:
        raise ConfigError(f"unknown continual method {method!r}; choose one of {', '.join(METHODS)}")
    if not tasks:
        raise ConfigError("train_continual needs at least one task")
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    # Separate streams, so that every method sees the same batches in the same order.
    generator = torch.Generator().manual_seed(config.seed)
    rows_generator = torch.Generator().manual_seed(config.seed + 1)
    sample_generator = torch.Generator().manual_seed(config.seed + 2)
    n_classes = int(max(int(t.train_y.max()) for t in tasks)) + 1
    model = make_network(config, tasks[0].n_inputs, n_classes)
    layers = list(model.layers)
    params = [layer.weight for layer in layers]
    widths = [layer.in_features for layer in layers]
    projectors: list = []
    if method == "hlop":
        projectors = [
            HebbianProjector(
                n, lr, config.hebbian_iterations, config.hebbian_momentum, config.hebbian_clip, generator=rows_generator
            )
            for n, lr in zip(widths, config.hebbian_lr, strict=True)
        ]
    elif method == "gpm":
        projectors = [SVDProjector(n) for n in widths]
    penalty = _EWCPenalty(params, config.ewc_lambda) if method == "ewc" else None
    result = ContinualResult(method, [], 0.0, config=config.to_dict())

    for t, task in enumerate(tasks):
        if method == "hlop":
            for p, k in zip(projectors, config.subspace_sizes(t), strict=True):
                p.add_rows(k)
        if method == "joint":
            train_x = torch.cat([s.train_x for s in tasks[: t + 1]])
            train_y = torch.cat([s.train_y for s in tasks[: t + 1]])
        else:
            train_x, train_y = task.train_x, task.train_y
        hebbian_now = method == "hlop" and config.hebbian_when == "during"
        optimizer = torch.optim.SGD(params, lr=config.lr)
        model.train()
        for _ in range(config.epochs):
            for index in _batches(len(train_x), config.batch_size, generator):
                logits, inputs = model(train_x[index], return_inputs=True)
                loss = F.cross_entropy(logits, train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                for layer, p in zip(layers, projectors, strict=False):
                    layer.weight.grad = p.project_gradient(layer.weight.grad)
                optimizer.step()
                if penalty is not None and t > 0:
                    penalty.step(config.lr)
                if hebbian_now:
                    for p, x in zip(projectors, inputs, strict=True):
                        p.learn(x)
        model.eval()
        if method == "hlop" and config.hebbian_when == "after":
            for _ in range(config.hebbian_epochs):
                for index in _batches(len(task.train_x), config.batch_size, sample_generator):
                    inputs = layer_inputs(model, task.train_x[index], config.eval_batch_size)
                    for p, x in zip(projectors, inputs, strict=True):
                        p.learn(x)
        if method == "hlop":
            for p in projectors:
                p.freeze()
        elif method == "gpm":
            sample = torch.randperm(len(task.train_x), generator=sample_generator)[: config.gpm_samples]
            inputs = layer_inputs(model, task.train_x[sample], config.eval_batch_size)
            for p, x, q in zip(projectors, inputs, config.gpm_threshold, strict=True):
                p.update(x, min(1.0, q + t * config.gpm_threshold_step))
        elif penalty is not None:
            sample = torch.randperm(len(task.train_x), generator=sample_generator)[: config.fisher_samples]
            penalty.consolidate(model, task.train_x[sample], task.train_y[sample])
        if projectors:
            inputs = layer_inputs(model, task.train_x[: config.energy_samples], config.eval_batch_size)
            result.subspaces.append(_record(projectors, inputs))
        result.accuracy.append([evaluate(model, s.test_x, s.test_y, config.eval_batch_size) for s in tasks[: t + 1]])
    result.seconds = time.perf_counter() - start
    return result
