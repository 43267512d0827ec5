"""End-To-End Memory Network (Sukhbaatar, Szlam, Weston and Fergus, NeurIPS 2015), the bAbI baseline.

Each non-padding sentence x_i of the story becomes a memory, indexed by its age i (0 = the newest
sentence, the one nearest the question); only the `memory_size` newest are kept. With K hops and
K + 1 embeddings E_0 .. E_K (adjacent weight tying: A_k = E_{k-1}, C_k = E_k, the question's
B = E_0 and the answer's W^T = E_K) and temporal tables T_0 .. T_K tied the same way:

    enc_k(x) = sum_j l_j * E_k[x_j]       l_kj = (1 - j/J) - (k/d)(1 - 2j/J), position encoding
                                          (j = 1..J the words of the sentence, k = 1..d the dims)
    m_i = enc_{k-1}(x_i) + T_{k-1}[i],   c_i = enc_k(x_i) + T_k[i]
    u_1 = enc_0(question)
    p = softmax(u_k . m_i),  o_k = sum_i p_i c_i,  u_{k+1} = u_k + o_k
    logits = E_K u_{K+1}

Linear start (`linear_start`, then `end_linear_start()`): p = u_k . m_i without the softmax, the
paper's way to avoid poor local minima, until the validation loss stops falling. Random noise
(`random_noise`): in training, that fraction of empty memories (no words, only their temporal
vector) is inserted at random ages, so that the temporal tables do not over-fit.

Defaults are the paper's bAbI settings: d = 20 for a model per task (50 for one model trained on
all tasks jointly), 3 hops, the 50 most recent sentences, weights drawn from N(0, 0.1), padding
id 0 embedded as zero; training in `MemN2NTrainConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.fields import check_positive_ints, setting


@dataclass(frozen=True)
class MemN2NConfig:
    vocab_size: int  # ids 0 (padding) to vocab_size - 1, answers included
    d: int = setting(20, "Embedding width: 20 for one model per bAbI task, 50 for one model on all tasks.")
    hops: int = setting(3, "Memory layers K.")
    memory_size: int = setting(50, "The most recent sentences kept as memories.")
    position_encoding: bool = setting(True, "Weigh words by position (PE); else a bag of words.")
    temporal_encoding: bool = setting(True, "Add a learned vector per memory age (TE).")
    linear_start: bool = setting(False, "Start without softmax in the memory layers (LS).")
    random_noise: float = setting(0.1, "Fraction of empty memories inserted in training (RN).")
    init_std: float = setting(0.1, "Standard deviation of the normal initialisation.")

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "d", "hops", "memory_size"))
        if not 0 <= self.random_noise < 1:
            raise ConfigError(f"random_noise must be in [0, 1), got {self.random_noise}")
        if not self.init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {self.init_std}")


@dataclass(frozen=True)
class MemN2NTrainConfig:
    """The paper's bAbI training: SGD at lr 0.01 halved every 25 epochs for 100 epochs, gradient
    norm clipped to 40, batches of 32. Runs with linear start begin at lr 0.005 and reinsert the
    softmax when the validation loss stops falling; 10% of the training set is held out for it.
    The loss is summed over a batch, not averaged, as in the paper's Matlab code (and the
    TensorFlow ports): its rates and its clipping are for the summed gradient, 32 times the mean's."""

    lr: float = setting(0.01, "SGD learning rate.")
    lr_halve_every: int = setting(25, "Epochs between halvings of the learning rate.")
    linear_start_lr: float = setting(0.005, "Initial learning rate of runs with linear start.")
    grad_clip: float = setting(40.0, "Clip the gradient norm to this.")
    batch_size: int = setting(32, "Examples per batch.")
    epochs: int = setting(100, "Passes over the training set.")
    summed_loss: bool = True

    def learning_rate(self, epoch: int, linear_start: bool = False) -> float:
        """The rate of 0-based `epoch`."""
        return (self.linear_start_lr if linear_start else self.lr) * 0.5 ** (epoch // self.lr_halve_every)


def position_weights(words: Tensor, d: int) -> Tensor:
    """The paper's l_kj for words (..., W), J counting only non-padding words: (..., W, d)."""
    real = words.ne(0)
    j = real.cumsum(-1)  # 1-based position among the sentence's words
    ratio = (j / real.sum(-1, keepdim=True).clamp(min=1)).unsqueeze(-1)  # j / J, (..., W, 1)
    k = torch.arange(1, d + 1, device=words.device) / d
    return (1 - ratio) - k * (1 - 2 * ratio)


class MemN2N(nn.Module):
    """forward(stories (B, L, W), questions (B, Wq)) -> logits (B, vocab_size).

    Word id 0 is padding; a sentence of zeros is no memory. Sentences are in story order, oldest first.
    """

    def __init__(self, config: MemN2NConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embeddings = nn.ModuleList(nn.Embedding(c.vocab_size, c.d, padding_idx=0) for _ in range(c.hops + 1))
        self.temporal = nn.Parameter(torch.empty(c.hops + 1, c.memory_size, c.d)) if c.temporal_encoding else None
        self.linear = c.linear_start  # a phase of training, switched off by end_linear_start
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for embedding in self.embeddings:
                nn.init.normal_(embedding.weight, std=self.config.init_std)
                embedding.weight[0].zero_()
            if self.temporal is not None:
                nn.init.normal_(self.temporal, std=self.config.init_std)

    def end_linear_start(self) -> None:
        """Put the softmax back into the memory layers."""
        self.linear = False

    def _position(self, words: Tensor) -> Tensor | None:
        return position_weights(words, self.config.d) if self.config.position_encoding else None

    def _encode(self, words: Tensor, embedding: nn.Embedding, weights: Tensor | None) -> Tensor:
        vectors = embedding(words)  # (..., W, d)
        return (vectors if weights is None else vectors * weights).sum(-2)

    def _with_empty_memories(self, stories: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Stories with empty sentences appended, which memories are present, and each slot's story
        order: the real sentences' ranks and, for the empty ones, random places among them."""
        B, L, W = stories.shape
        n = present.sum(-1, keepdim=True)  # (B, 1)
        slots = math.ceil(self.config.random_noise * L)
        empty = torch.arange(slots, device=stories.device) < (self.config.random_noise * n).round()  # (B, slots)
        rank = present.cumsum(-1) - 0.5  # real sentence r of a story sits at r + 0.5, r = 0..n-1
        places = torch.rand(B, slots, device=stories.device) * n  # uniform over [0, n)
        stories = torch.cat([stories, stories.new_zeros(B, slots, W)], 1)
        return stories, torch.cat([present, empty], -1), torch.cat([rank, places], -1)

    def forward(self, stories: Tensor, questions: Tensor) -> Tensor:
        c = self.config
        present = stories.ne(0).any(-1)  # (B, L)
        order = torch.arange(stories.shape[1], device=stories.device).expand_as(present).float()
        if self.training and c.random_noise > 0:
            stories, present, order = self._with_empty_memories(stories, present)
        # Age: how many present memories are newer; (B, S, S) comparisons, S sentences at most a few hundred.
        age = ((order.unsqueeze(1) > order.unsqueeze(2)) & present.unsqueeze(1)).sum(-1)  # (B, S)
        in_memory = present & (age < c.memory_size)
        age = age.clamp(max=c.memory_size - 1)
        weights = self._position(stories)  # (B, S, W, d)
        memories = []  # memories[k]: (B, S, d), sentences seen through E_k and T_k
        for k, embedding in enumerate(self.embeddings):
            memory = self._encode(stories, embedding, weights)
            memories.append(memory if self.temporal is None else memory + self.temporal[k][age])
        u = self._encode(questions, self.embeddings[0], self._position(questions))  # (B, d)
        for k in range(c.hops):
            scores = (memories[k] @ u.unsqueeze(-1)).squeeze(-1)  # (B, S)
            if self.linear:
                p = scores * in_memory
            else:
                # Softmax over the memories; a story without any gives all zeros rather than NaN.
                p = scores.masked_fill(~in_memory, torch.finfo(scores.dtype).min).softmax(-1) * in_memory
            u = u + (p.unsqueeze(-1) * memories[k + 1]).sum(1)
        return u @ self.embeddings[-1].weight.T
