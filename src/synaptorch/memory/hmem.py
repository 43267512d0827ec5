"""H-Mem: question answering from a Hebbian association memory (Limbacher and Legenstein, NeurIPS 2020).

A story of L sentences is written, one sentence a step, into an m x m synapse matrix M by the
soft-bounded Hebbian rule of `synaptorch.plasticity.hebbian`; the question then reads M.

Encoding, shared by story and question (one embedding A, d = 80, He-uniform, padding row zero):

    s = sum_j l_j * A[w_j]           l_j: a learned vector per word slot j, initialised to 1; the
                                     last slot holds the sentence's time word and keeps l = 1
    s = BatchNorm(s)                 one for story sentences, one for questions

Write, M_0 = 0, for each non-padding sentence s_t in order (padding sentences leave M unchanged):

    k = relu(W_k s),  v = relu(W_v s)                                   W_k, W_v: m x d
    read before write only:  k = LN(k),  v = LN(W_d [v ; M^T k])        W_d: m x 2m
    M <- M + g+ (w_max - M) * (k v^T) - g- M * (k^2 1^T)

Read, `hops` times with the encoded question q, v_0 = 0:

    k_h = relu(W_r [q ; v_{h-1}]),  v_h = M^T k_h                       W_r: m x (d + m)
    logits = W_o v_hops                                                  W_o: vocab x m

No layer has a bias. Trained with softmax cross-entropy plus `l2_penalty()`. The sizes, gains,
the learned position encoding with its fixed time-word slot, the Keras initialisers and the L2
term on W_k, W_v and W_r follow the paper and its TensorFlow code (github.com/IGITUGraz/H-Mem,
`babi_task_single.py` and `layers/`). Unlike that code, the story's batch normalisation takes its
statistics from real sentences only, so that padding changes nothing in training either.
The single-shot association experiment of the paper uses m = 200 and one hop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.fields import check_positive_ints, setting
from synaptorch.plasticity.hebbian import hebbian_read, hebbian_write, hebbian_write_sequence


@dataclass(frozen=True)
class HMemConfig:
    vocab_size: int  # ids 0 (padding) to vocab_size - 1, answers included
    n_words: int  # word slots of a sentence, the time word's included
    d: int = setting(80, "Width of the word embedding and sentence vectors.")
    m: int = setting(100, "Key and value neurons of the memory, which is m x m.")
    hops: int = setting(3, "Reads of the memory per question.")
    read_before_write: bool = setting(False, "Read the memory with each key before writing it (H-Mem's variant).")
    gain_plus: float = setting(0.01, "Potentiation rate g+ of the Hebbian rule.")
    gain_minus: float = setting(0.01, "Depression rate g- of the Hebbian rule.")
    w_max: float = setting(1.0, "Soft upper bound of the synapses.")
    learn_gain_plus: bool = setting(False, "Learn g+ by gradient descent.")
    learn_gain_minus: bool = setting(False, "Learn g- by gradient descent.")
    learn_w_max: bool = setting(False, "Learn w_max by gradient descent.")
    time_word: bool = setting(True, "The last word slot holds a time word whose position weight stays 1.")
    l2: float = setting(1e-3, "L2 coefficient on W_k, W_v and W_r.")

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "n_words", "d", "m", "hops"))
        for name in ("gain_plus", "gain_minus", "l2"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.w_max > 0:
            raise ConfigError(f"w_max must be > 0, got {self.w_max}")


@dataclass(frozen=True)
class HMemTrainConfig:
    """How the paper trained H-Mem on a bAbI task (10k training examples), from its text and code.

    Adam at lr 3e-3; the plain model multiplies the rate by 0.85 every 20 epochs ("step"), the
    read-before-write model keeps it up to epoch 150 and then multiplies it by
    exp(0.01 (150 - epoch)) ("exponential"). Gradient norm clipped to 20, batches of 128,
    100 epochs (250 for task 16 with read-before-write, see `paper`). The L2 term is the model's:
    `HMemConfig.l2`, added by `HMem.l2_penalty()`.
    """

    lr: float = setting(3e-3, "Adam learning rate.")
    schedule: str = setting("step", "Learning-rate schedule: step or exponential.")
    lr_decay: float = setting(0.85, "Step schedule: factor applied every lr_decay_every epochs.")
    lr_decay_every: int = setting(20, "Step schedule: epochs between decays.")
    lr_hold: int = setting(150, "Exponential schedule: epochs at the initial rate.")
    lr_rate: float = setting(0.01, "Exponential schedule: decay rate per epoch after lr_hold.")
    grad_clip: float = setting(20.0, "Clip the gradient norm to this.")
    batch_size: int = setting(128, "Examples per batch.")
    epochs: int = setting(100, "Passes over the training set.")

    def __post_init__(self) -> None:
        if self.schedule not in ("step", "exponential"):
            raise ConfigError(f"schedule must be step or exponential, got {self.schedule!r}")

    @classmethod
    def paper(cls, read_before_write: bool = False, task: int | None = None) -> HMemTrainConfig:
        """The paper's settings for bAbI `task` (1 to 20) and the model variant."""
        if not read_before_write:
            return cls()
        return cls(schedule="exponential", epochs=250 if task == 16 else 100)

    def learning_rate(self, epoch: int) -> float:
        """The rate of 0-based `epoch`."""
        if self.schedule == "step":
            return self.lr * self.lr_decay ** (epoch // self.lr_decay_every)
        return self.lr * math.exp(self.lr_rate * min(0, self.lr_hold - epoch))


def _plasticity(value: float, learn: bool) -> float | nn.Parameter:
    return nn.Parameter(torch.tensor(value)) if learn else value


class HMem(nn.Module):
    """forward(stories (B, L, n_words), questions (B, W <= n_words)) -> logits (B, vocab_size).

    Word id 0 is padding; a sentence of zeros is a padding sentence.
    """

    def __init__(self, config: HMemConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d, padding_idx=0)
        self.position = nn.Parameter(torch.ones(c.n_words - int(c.time_word), c.d))
        self.norm_story = nn.BatchNorm1d(c.d, eps=1e-3, momentum=0.01)  # Keras's BatchNormalization defaults
        self.norm_question = nn.BatchNorm1d(c.d, eps=1e-3, momentum=0.01)
        self.key = nn.Linear(c.d, c.m, bias=False)
        self.value = nn.Linear(c.d, c.m, bias=False)
        self.query = nn.Linear(c.d + c.m, c.m, bias=False)
        self.out = nn.Linear(c.m, c.vocab_size, bias=False)
        if c.read_before_write:
            self.norm_key = nn.LayerNorm(c.m)
            self.combine = nn.Linear(2 * c.m, c.m, bias=False)
            self.norm_value = nn.LayerNorm(c.m)
        self.gain_plus = _plasticity(c.gain_plus, c.learn_gain_plus)
        self.gain_minus = _plasticity(c.gain_minus, c.learn_gain_minus)
        self.w_max = _plasticity(c.w_max, c.learn_w_max)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            # Keras's he_uniform takes the fan-in of an embedding from its rows, the vocabulary.
            nn.init.kaiming_uniform_(self.embed.weight, mode="fan_out", nonlinearity="relu")
            self.embed.weight[0].zero_()
        for layer in (self.key, self.value, self.query, self.out):
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        if self.config.read_before_write:
            nn.init.xavier_uniform_(self.combine.weight)  # the reference leaves this layer at Keras's default

    def encode(self, words: Tensor) -> Tensor:
        """Sentence vectors: words (..., W) -> (..., d), before batch normalisation."""
        position = self.position
        if self.config.time_word:
            position = torch.cat([position, position.new_ones(1, self.config.d)])
        return (self.embed(words) * position[: words.shape[-1]]).sum(-2)

    def write(self, keys: Tensor, values: Tensor, present: Tensor) -> Tensor:
        """Memory (B, m, m) from keys and values (B, L, m) of the sentences where present (B, L)."""
        plasticity = (self.gain_plus, self.gain_minus, self.w_max)
        if not self.config.read_before_write:
            return hebbian_write_sequence(keys, values, present, None, *plasticity)
        memory = keys.new_zeros(keys.shape[0], self.config.m, self.config.m)
        for t in range(keys.shape[1]):
            key = self.norm_key(keys[:, t])
            value = self.norm_value(self.combine(torch.cat([values[:, t], hebbian_read(memory, key)], -1)))
            memory = hebbian_write(memory, key, value, *plasticity, mask=present[:, t])
        return memory

    def read(self, memory: Tensor, query: Tensor) -> Tensor:
        """The value (B, m) that `hops` reads of memory (B, m, m) retrieve for query (B, d)."""
        value = query.new_zeros(query.shape[0], self.config.m)
        for _ in range(self.config.hops):
            value = hebbian_read(memory, F.relu(self.query(torch.cat([query, value], -1))))
        return value

    def forward(self, stories: Tensor, questions: Tensor) -> Tensor:
        if stories.shape[-1] != self.config.n_words or questions.shape[-1] > self.config.n_words:
            raise ValueError(
                f"sentences must have n_words = {self.config.n_words} slots and questions at most that many, "
                f"got {tuple(stories.shape)} and {tuple(questions.shape)}"
            )
        present = stories.ne(0).any(-1)  # (B, L)
        sentences = self.encode(stories)  # (B, L, d)
        # Normalise real sentences only: padding would bias the batch statistics.
        sentences = torch.zeros_like(sentences).index_put((present,), self.norm_story(sentences[present]))
        mask = present.unsqueeze(-1).to(sentences.dtype)
        keys = F.relu(self.key(sentences)) * mask  # (B, L, m)
        values = F.relu(self.value(sentences)) * mask
        memory = self.write(keys, values, present)  # (B, m, m)
        query = self.norm_question(self.encode(questions))  # (B, d)
        return self.out(self.read(memory, query))

    def l2_penalty(self) -> Tensor:
        """l2 * (|W_k|^2 + |W_v|^2 + |W_r|^2), to add to the loss."""
        return self.config.l2 * sum(layer.weight.square().sum() for layer in (self.key, self.value, self.query))
