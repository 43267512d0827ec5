"""Single-shot image-symbol association with H-Mem and an LSTM (Limbacher and Legenstein, NeurIPS 2020).

The task, on Fashion-MNIST (`AssociationTask`): a sequence shows `pairs` = 3 frames, each an image
of a different class paired with a symbol 0-9 (distinct symbols drawn anew for every sequence, so
that the pairing exists nowhere but in that sequence), and after each pair `delay` frames of
noise, pixels uniform in [0, 1] without a symbol: T = pairs (delay + 1) frames. Then comes the
query, another image of one of the three classes; the answer is the symbol paired with that class.
Chance is 1/10 for a model blind to the sequence, 1/3 for one that only recalls which symbols it saw.

As in the reference (github.com/IGITUGraz/H-Mem, `image_association_task.py` and
`data/image_association_data.py`), noise is drawn afresh for each frame and follows every pair,
the last one included, and the noise frames are written to the memory like the others. There
a frame is a CIFAR-10 image merged with an MNIST digit that stands for the symbol; here the image
is a Fashion-MNIST one and the symbol is given as such, a one-hot vector, zero for no symbol.

Image features (`ImageEncoder`), shared by both models:

    f = LN(relu(W_f flat(relu(conv2(relu(conv1(x)))))))    conv1: 1 -> 16, 5 x 5, stride 2;
                                                            conv2: 16 -> 32, 3 x 3, stride 2;
                                                            W_f: 128 x 800; LN without gain or bias

`pretrain_encoder` fits it, with a linear classifier on top, to the classes of the training
images; the benchmark then freezes it and hands the same encoder to both models. A frozen shared
encoder makes the comparison one of the memories alone, on identical features, and is the
reference's `--use_pretrained_convnet 1 --retrain_convnet 0` (a ConvNet14 pretrained on CIFAR-10
and MNIST). It is also what makes long delays affordable on a CPU: at delay 40 a sequence has
124 images, and a frozen encoder runs on them without keeping anything for a backward pass.
Passing an encoder whose parameters require gradients trains it end to end instead. The layer
norm keeps keys near unit scale, which the reference gets from batch normalisation of its features.

H-Mem (`HMemAssociation`), one read hop, following `synaptorch.memory.hmem`; s_t the one-hot symbol:

    k_t = relu(W_k f_t),  v_t = relu(W_v s_t)                       W_k: m x 128, W_v: m x 10
    M_0 = 0,  M_t = M_{t-1} + g+ (w_max - M_{t-1}) * (k_t v_t^T) - g- M_{t-1} * (k_t^2 1^T)
    k_q = relu(W_r f_q),  logits = W_o M_T^T k_q                    W_r: m x 128, W_o: 10 x m

No layer has a bias. A noise frame has v = 0, so its write keeps only the depression term,
M <- M * ((1 - g- k^2) 1^T): it weakens what is stored on its active key neurons, which is what
the delay tests. `association_write` folds each run of such frames into one product of these
factors, equal to writing them one by one with `hebbian_write` and far cheaper. m = 200 and one
hop are the paper's; g+ = g- = 0.01 and w_max = 1 are the defaults of the reference's
`image_association_task.py` (the paper's text for this experiment: unconfirmed); the L2 term of
1e-3 on W_k, W_v and W_r is the reference's `kernel_regularizer`.

LSTM (`LSTMAssociation`): one layer of 200 cells (the reference's `image_association_task_lstm.py`)
reads [f_t ; s_t] for every frame and then [f_q ; 0] for the query; logits = W_o h_last.

Training (`AssociationTrainConfig`, `train_association`): Adam at lr 1e-3, batches of 32, the
gradient norm clipped to 10, softmax cross-entropy plus the model's L2 term, on fresh sequences
of training images; `evaluate_association` scores sequences of test images. The reference
clips each weight's gradient separately (Keras's `clipnorm`), here the global norm; it trains
100 epochs of 11,250 sequences with a decay of the rate after epoch 50, far beyond a CPU budget,
so the rate here stays constant; its dropout on the features is left out with the frozen encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.errors import ConfigError, DataError
from synaptorch.fields import check_positive_ints, setting
from synaptorch.plasticity.hebbian import hebbian_read, hebbian_write

N_SYMBOLS = 10
NO_SYMBOL = N_SYMBOLS  # the symbol of a noise frame and its one-hot code, all zeros
IMAGE_SIZE = 28


def symbol_codes(symbols: Tensor) -> Tensor:
    """One-hot codes (..., 10) of symbols (...) in 0 to 9, the zero vector for NO_SYMBOL."""
    return F.one_hot(symbols, N_SYMBOLS + 1)[..., :N_SYMBOLS].float()


class AssociationBatch(NamedTuple):
    frames: Tensor  # (B, T, 1, 28, 28) float in [0, 1]
    symbols: Tensor  # (B, T) long, 0 to 9, NO_SYMBOL on noise frames
    query: Tensor  # (B, 1, 28, 28) float in [0, 1]
    target: Tensor  # (B,) long, the symbol paired with the query's class
    frame_index: Tensor  # (B, T) long, the data set index of each frame's image, -1 on noise frames
    query_index: Tensor  # (B,) long, the data set index of the query image


class AssociationTask:
    """Sequences of `pairs` image-symbol pairs, each followed by `delay` noise frames, and a query.

    images (N, 28, 28) uint8 and labels (N,) in 0 to C - 1, with C >= pairs classes of at least
    two images each. `sample` draws from a generator seeded with `seed`, so that two tasks of the
    same seed give the same batches.
    """

    def __init__(self, images: Tensor, labels: Tensor, delay: int = 0, pairs: int = 3, seed: int = 0) -> None:
        if pairs <= 0 or delay < 0:
            raise ConfigError(f"need pairs > 0 and delay >= 0, got pairs {pairs} and delay {delay}")
        if pairs > N_SYMBOLS:
            raise ConfigError(f"pairs must be at most {N_SYMBOLS}, the number of symbols, got {pairs}")
        if images.dim() != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(labels) != len(images):
            raise DataError(
                f"need images (N, 28, 28) and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        counts = torch.bincount(labels.long())
        if (counts > 0).sum() < pairs or (counts == 1).any():
            raise DataError(
                f"need {pairs} classes, each with at least two images; the class sizes are {counts.tolist()}"
            )
        self.images, self.delay, self.pairs = images, delay, pairs
        self.counts = counts
        self.by_class = labels.long().argsort(stable=True)  # indices of class 0, then class 1, ...
        self.offsets = torch.cumsum(counts, 0) - counts
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def frames_per_sequence(self) -> int:
        return self.pairs * (self.delay + 1)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> AssociationBatch:
        """A batch of fresh sequences, drawn from `generator` if given, else from the task's own."""
        g = self.generator if generator is None else generator
        b, p = batch_size, self.pairs
        present = torch.nonzero(self.counts).squeeze(1)
        classes = present[torch.rand(b, len(present), generator=g).argsort(1)[:, :p]]  # (B, P), distinct
        symbols = torch.rand(b, N_SYMBOLS, generator=g).argsort(1)[:, :p]  # distinct within a sequence
        asked = torch.randint(p, (b,), generator=g)
        counts = self.counts[classes]
        shown = (torch.rand(b, p, generator=g) * counts).long()  # rank of each image within its class
        rows = torch.arange(b)
        # The query is another image of the asked class: a rank drawn among the others.
        other = (torch.rand(b, generator=g) * (counts[rows, asked] - 1)).long()
        other = other + (other >= shown[rows, asked]).long()
        pair_index = self.by_class[self.offsets[classes] + shown]  # (B, P)
        query_index = self.by_class[self.offsets[classes[rows, asked]] + other]

        t = self.frames_per_sequence
        frames = torch.rand(b, t, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
        frames[:, :: self.delay + 1, 0] = self.images[pair_index].float() / 255
        frame_symbols = torch.full((b, t), NO_SYMBOL, dtype=torch.long)
        frame_symbols[:, :: self.delay + 1] = symbols
        frame_index = torch.full((b, t), -1, dtype=torch.long)
        frame_index[:, :: self.delay + 1] = pair_index
        query = self.images[query_index].float().unsqueeze(1) / 255
        return AssociationBatch(frames, frame_symbols, query, symbols[rows, asked], frame_index, query_index)


@dataclass(frozen=True)
class EncoderConfig:
    features: int = setting(128, "Width of the image features (the reference's dense_size).")

    def __post_init__(self) -> None:
        check_positive_ints(self, ("features",))


class ImageEncoder(nn.Module):
    """forward(images (N, 1, 28, 28)) -> features (N, features): two strided convolutions, a
    linear layer, and a layer norm without parameters."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        self.conv1 = nn.Conv2d(1, 16, 5, stride=2)  # 28 -> 12
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2)  # 12 -> 5
        self.dense = nn.Linear(32 * 5 * 5, self.config.features)

    def forward(self, images: Tensor) -> Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(images))))
        x = F.relu(self.dense(x.flatten(1)))
        return F.layer_norm(x, x.shape[-1:])


def pretrain_encoder(
    encoder: ImageEncoder,
    images: Tensor,
    labels: Tensor,
    steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> nn.Linear:
    """Fit `encoder` to classify images (N, 28, 28) uint8 by labels (N,) with Adam, through a
    linear layer that is returned, so that one can measure the classifier."""
    n_classes = int(labels.max()) + 1
    head = nn.Linear(encoder.config.features, n_classes)
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    encoder.train()
    for _ in range(steps):
        index = torch.randint(len(images), (batch_size,), generator=generator)
        loss = F.cross_entropy(head(encoder(images[index].float().unsqueeze(1) / 255)), labels[index].long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head


def association_write(
    keys: Tensor,
    values: Tensor,
    present: Tensor,
    gain_plus: float | Tensor,
    gain_minus: float | Tensor,
    w_max: float | Tensor,
) -> Tensor:
    """Memory (B, m, n) after writing keys (B, T, m) and values (B, T, n) in order of T, from zero.

    Frames where present (B, T) is False have no symbol: they are written with the value zero,
    which leaves M <- M * ((1 - g- k^2) 1^T). Where no sequence of the batch has a symbol, the
    factors of consecutive frames are multiplied together and applied once.
    """
    values = values * present.unsqueeze(-1).to(values.dtype)
    memory = keys.new_zeros(keys.shape[0], keys.shape[-1], values.shape[-1])
    decay = None
    # unbind, not keys[:, t]: the backward of each index would fill a zero tensor of all T frames.
    for key, value, any_present in zip(keys.unbind(1), values.unbind(1), present.any(0).tolist(), strict=True):
        if any_present:
            if decay is not None:
                memory, decay = memory * decay.unsqueeze(-1), None
            memory = hebbian_write(memory, key, value, gain_plus, gain_minus, w_max)
        else:
            factor = 1 - gain_minus * key.square()
            decay = factor if decay is None else decay * factor
    return memory if decay is None else memory * decay.unsqueeze(-1)


class AssociationModel(nn.Module):
    """forward(frames (B, T, 1, 28, 28), symbols (B, T), query (B, 1, 28, 28)) -> logits (B, 10).

    The encoder turns every image into features; `respond` is the model proper.
    """

    def __init__(self, encoder: ImageEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, frames: Tensor, symbols: Tensor, query: Tensor) -> Tensor:
        if frames.shape[:2] != symbols.shape or frames.shape[2:] != query.shape[1:]:
            raise ValueError(
                f"need frames (B, T, 1, 28, 28), symbols (B, T) and query (B, 1, 28, 28), got "
                f"{tuple(frames.shape)}, {tuple(symbols.shape)} and {tuple(query.shape)}"
            )
        features = self.encoder(frames.flatten(0, 1)).unflatten(0, symbols.shape)
        return self.respond(features, symbols, self.encoder(query))

    def respond(self, features: Tensor, symbols: Tensor, query: Tensor) -> Tensor:
        """Logits (B, 10) from frame features (B, T, F), symbols (B, T) and query features (B, F)."""
        raise NotImplementedError

    def l2_penalty(self) -> Tensor:
        """The weight penalty to add to the loss; none unless a model defines one."""
        return torch.zeros(())


@dataclass(frozen=True)
class HMemAssociationConfig:
    m: int = setting(200, "Key and value neurons of the memory, which is m x m (the paper's 200).")
    gain_plus: float = setting(0.01, "Potentiation rate g+ (the reference's gamma_pos).")
    gain_minus: float = setting(0.01, "Depression rate g- (the reference's gamma_neg).")
    w_max: float = setting(1.0, "Soft upper bound of the synapses (the reference's w_assoc_max).")
    l2: float = setting(1e-3, "L2 coefficient on W_k, W_v and W_r (the reference's kernel_regularizer).")

    def __post_init__(self) -> None:
        check_positive_ints(self, ("m",))
        for name in ("gain_plus", "gain_minus", "l2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.w_max > 0:
            raise ConfigError(f"w_max must be > 0, got {self.w_max}")


class HMemAssociation(AssociationModel):
    """H-Mem with one read hop: keys from image features, values from symbols, a Hebbian memory."""

    def __init__(self, encoder: ImageEncoder, config: HMemAssociationConfig | None = None) -> None:
        super().__init__(encoder)
        self.config = c = config or HMemAssociationConfig()
        width = encoder.config.features
        self.key = nn.Linear(width, c.m, bias=False)
        self.value = nn.Linear(N_SYMBOLS, c.m, bias=False)
        self.query = nn.Linear(width, c.m, bias=False)
        self.out = nn.Linear(c.m, N_SYMBOLS, bias=False)
        for layer in (self.key, self.value, self.query, self.out):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")  # Keras's he_uniform, as the reference

    def memory(self, features: Tensor, symbols: Tensor) -> Tensor:
        """The memory (B, m, m) after the frames' features (B, T, F) and symbols (B, T)."""
        keys = F.relu(self.key(features))
        values = F.relu(self.value(symbol_codes(symbols)))
        c = self.config
        return association_write(keys, values, symbols.ne(NO_SYMBOL), c.gain_plus, c.gain_minus, c.w_max)

    def respond(self, features: Tensor, symbols: Tensor, query: Tensor) -> Tensor:
        return self.out(hebbian_read(self.memory(features, symbols), F.relu(self.query(query))))

    def l2_penalty(self) -> Tensor:
        """l2 * (|W_k|^2 + |W_v|^2 + |W_r|^2)."""
        return self.config.l2 * sum(layer.weight.square().sum() for layer in (self.key, self.value, self.query))


@dataclass(frozen=True)
class LSTMAssociationConfig:
    hidden: int = setting(200, "LSTM cells (the reference's hidden_size).")

    def __post_init__(self) -> None:
        check_positive_ints(self, ("hidden",))


class LSTMAssociation(AssociationModel):
    """An LSTM over [features ; symbol code] of every frame and then of the query, read at the end."""

    def __init__(self, encoder: ImageEncoder, config: LSTMAssociationConfig | None = None) -> None:
        super().__init__(encoder)
        self.config = config or LSTMAssociationConfig()
        self.lstm = nn.LSTM(encoder.config.features + N_SYMBOLS, self.config.hidden, batch_first=True)
        self.out = nn.Linear(self.config.hidden, N_SYMBOLS, bias=False)

    def respond(self, features: Tensor, symbols: Tensor, query: Tensor) -> Tensor:
        query_step = torch.cat([query, query.new_zeros(query.shape[0], N_SYMBOLS)], -1)
        steps = torch.cat([torch.cat([features, symbol_codes(symbols)], -1), query_step.unsqueeze(1)], 1)
        _, (hidden, _) = self.lstm(steps)
        return self.out(hidden[-1])


@dataclass(frozen=True)
class AssociationTrainConfig:
    lr: float = setting(1e-3, "Adam learning rate (the paper's).")
    batch_size: int = setting(32, "Sequences per batch (the paper's).")
    grad_clip: float = setting(10.0, "Clip the global gradient norm to this (the reference's max_grad_norm).")

    def __post_init__(self) -> None:
        check_positive_ints(self, ("batch_size",))
        if not self.lr > 0 or not self.grad_clip > 0:
            raise ConfigError(f"lr and grad_clip must be > 0, got {self.lr} and {self.grad_clip}")


def train_association(
    model: AssociationModel,
    task: AssociationTask,
    steps: int,
    config: AssociationTrainConfig | None = None,
) -> list[float]:
    """Train the parameters of `model` that require gradients for `steps` batches of `task`;
    returns the loss of each step (cross-entropy plus the L2 term)."""
    config = config or AssociationTrainConfig()
    trainable = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    model.train()
    losses = []
    for _ in range(steps):
        batch = task.sample(config.batch_size)
        logits = model(batch.frames, batch.symbols, batch.query)
        loss = F.cross_entropy(logits, batch.target) + model.l2_penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate_association(
    model: AssociationModel, task: AssociationTask, sequences: int = 1000, batch_size: int = 100, seed: int = 0
) -> float:
    """Accuracy on `sequences` sequences of `task` drawn from `seed`, the same ones for every model."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    correct = 0
    for start in range(0, sequences, batch_size):
        batch = task.sample(min(batch_size, sequences - start), generator)
        correct += int((model(batch.frames, batch.symbols, batch.query).argmax(-1) == batch.target).sum())
    return correct / sequences
