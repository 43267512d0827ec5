"""BDH as a bAbI reader: the story's words stream into its Hebbian synapses, then the question is read out.

The non-padding words of the story, sentence by sentence, each sentence closed by an end-of-sentence
token, go through `BDH.forward_recurrent` as one chunk; the question, closed by an end-of-question
token, follows as a second chunk from the state the story left. The only thing passed from the
first call to the second is that state, the synapse matrices rho (per layer, N x d per head) that
the linear attention writes, rho += q_t^T x_t: the story is remembered there or not at all. The
answer is read from the logits at the end-of-question token, restricted to the bAbI vocabulary.

The two extra tokens take the ids vocab_size and vocab_size + 1 of a BDH over vocab_size + 2
tokens. Padding (id 0) is embedded as the zero vector and kept there (`padding_idx`): a zero
residual stream gives zero neurons, x_sparse = relu(0 Dx) = 0, so a padding token neither reads
nor writes rho and leaves the stream at zero, layer after layer (layernorm(0) = 0). Stories are
padded on the left and questions on the right, and the logits are taken at each question's own
end: with RoPE the scores <q_t, q_s> depend on t - s only, so a sample's answer does not depend
on the others in its batch.

The sizes are this library's choice, small enough to train on a CPU in minutes on a 1k task:
2 layers, d = 64, 4 heads of 128 neurons (about 0.1 M parameters, the readout included), no
dropout. `BDHReaderTrainConfig` is Adam at a constant rate, as for the LSTM baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from synaptorch.errors import ConfigError
from synaptorch.fields import setting
from synaptorch.models.bdh import BDH, BDHConfig


@dataclass(frozen=True)
class BDHReaderConfig:
    vocab_size: int  # ids 0 (padding) to vocab_size - 1, answers included
    n_layer: int = setting(2, "BDH layers (all share one set of weights).")
    n_embd: int = setting(64, "Width d of the residual stream.")
    n_head: int = setting(4, "Heads.")
    n_neuron: int = setting(128, "Neurons N per head (even).")
    dropout: float = setting(0.0, "Dropout on the neuron activations.")
    rope_theta: float = setting(2.0**16, "RoPE base.")

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or isinstance(self.vocab_size, bool) or self.vocab_size <= 1:
            raise ConfigError(f"vocab_size must be an integer above 1, got {self.vocab_size!r}")
        self.bdh_config()  # BDHConfig checks the rest

    def bdh_config(self) -> BDHConfig:
        """The language model's config: the bAbI words and the two end tokens."""
        return BDHConfig(
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
            n_neuron=self.n_neuron,
            vocab_size=self.vocab_size + 2,
            dropout=self.dropout,
            rope_theta=self.rope_theta,
        )


@dataclass(frozen=True)
class BDHReaderTrainConfig:
    """Adam at a constant rate of 1e-3, gradient norm clipped to 1 (the language model trainer's
    clip), batches of 32, 100 epochs: this library's choice, as the LSTM baseline's."""

    lr: float = setting(1e-3, "Adam learning rate.")
    grad_clip: float = setting(1.0, "Clip the gradient norm to this.")
    batch_size: int = setting(32, "Examples per batch.")
    epochs: int = setting(100, "Passes over the training set.")

    def learning_rate(self, epoch: int) -> float:
        return self.lr


def _pack(words: Tensor, padding_first: bool) -> Tensor:
    """The rows of words (B, T) with their zeros moved to the front (or back), the other ids in their order."""
    key = words.ne(0) if padding_first else words.eq(0)
    return words.gather(1, key.to(torch.int8).argsort(dim=1, stable=True))


class BDHReader(nn.Module):
    """forward(stories (B, L, W), questions (B, Wq)) -> logits (B, vocab_size); word id 0 is padding."""

    def __init__(self, config: BDHReaderConfig) -> None:
        super().__init__()
        self.config = config
        self.end_of_sentence = config.vocab_size
        self.end_of_question = config.vocab_size + 1
        self.bdh = BDH(config.bdh_config())
        self.bdh.embed.padding_idx = 0  # no gradient reaches the padding row, which stays zero
        with torch.no_grad():
            self.bdh.embed.weight[0].zero_()

    def story_tokens(self, stories: Tensor) -> Tensor:
        """(B, T): each sample's sentences, each closed by the end-of-sentence token, padded on the left."""
        present = stories.ne(0).any(-1, keepdim=True)  # (B, L, 1)
        ends = torch.where(present, self.end_of_sentence, 0)
        words = _pack(torch.cat([stories, ends], -1).flatten(1), padding_first=True)
        length = int(words.ne(0).sum(1).max().clamp(min=1))
        return words[:, -length:]

    def question_tokens(self, questions: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T): the questions closed by the end-of-question token, right-padded; and where that token is (B,)."""
        words = _pack(questions, padding_first=False)
        lengths = words.ne(0).sum(1)
        words = torch.cat([words, words.new_zeros(words.shape[0], 1)], 1)
        words = words.scatter(1, lengths[:, None], self.end_of_question)
        return words[:, : int(lengths.max()) + 1], lengths

    def forward(self, stories: Tensor, questions: Tensor) -> Tensor:
        _, state = self.bdh.forward_recurrent(self.story_tokens(stories))
        tokens, ends = self.question_tokens(questions)
        logits, _ = self.bdh.forward_recurrent(tokens, state)  # (B, T, vocab_size + 2)
        answer = logits[torch.arange(len(ends), device=ends.device), ends]
        return answer[:, : self.config.vocab_size]
