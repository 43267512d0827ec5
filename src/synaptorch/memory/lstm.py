"""An LSTM that reads the story and then the question as one sequence of words, the bAbI baseline
without an explicit memory (Weston et al. 2015 report one for every task).

The non-padding words of the story, sentence after sentence, then those of the question, are
embedded (d = 50) and read by one LSTM layer of 100 cells; a linear layer maps its last hidden
state to answer logits. Padding words and sentences are dropped before the LSTM, so they change
nothing. The sizes are this library's choice: the LSTM's cells match H-Mem's 100 memory neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from synaptorch.fields import check_positive_ints, setting


@dataclass(frozen=True)
class LSTMConfig:
    vocab_size: int  # ids 0 (padding) to vocab_size - 1, answers included
    d: int = setting(50, "Word embedding width.")
    hidden: int = setting(100, "LSTM cells.")

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "d", "hidden"))


class LSTMBaseline(nn.Module):
    """forward(stories (B, L, W), questions (B, Wq)) -> logits (B, vocab_size); word id 0 is padding."""

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d, padding_idx=0)
        self.lstm = nn.LSTM(config.d, config.hidden, batch_first=True)
        self.out = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, stories: Tensor, questions: Tensor) -> Tensor:
        words = torch.cat([stories.flatten(1), questions], 1)  # (B, L * W + Wq)
        padding = words.eq(0)
        # A stable sort moves the real words to the front and keeps their order.
        words = words.gather(1, padding.to(torch.int8).argsort(dim=1, stable=True))
        lengths = (~padding).sum(1).clamp(min=1).cpu()  # packing wants the lengths on the CPU
        packed = pack_padded_sequence(self.embed(words), lengths, batch_first=True, enforce_sorted=False)
        _, (hidden, _) = self.lstm(packed)  # hidden: (1, B, hidden)
        return self.out(hidden[-1])
