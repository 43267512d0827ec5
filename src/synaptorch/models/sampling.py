"""Sampling from any model with `forward_recurrent(idx, state) -> (logits, state)`.

The prompt is prefilled in chunks, then each new token costs one recurrent step: for BDH the
state is a fixed-size synapse matrix, so time and memory per token do not grow with context.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from synaptorch.errors import ConfigError


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Scale by temperature and mask (with -inf) all but the top-k / nucleus-p tokens. logits (B, V)."""
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ConfigError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {top_p}")


@torch.no_grad()
def prefill(model: nn.Module, prompt: Tensor, chunk: int = 512) -> tuple[Tensor, object]:
    """Run the prompt (B, T) through the recurrent form in chunks: logits (B, T_last_chunk, V), state."""
    logits, state = None, None
    for start in range(0, prompt.shape[1], chunk):
        logits, state = model.forward_recurrent(prompt[:, start : start + chunk], state)
    return logits, state


@torch.no_grad()
def stream_tokens(
    model: nn.Module,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    prefill_chunk: int = 512,
) -> Iterator[Tensor]:
    """Yield new tokens (B,) one at a time. prompt (B, T) with T >= 1; temperature 0 is greedy."""
    check_sampling(temperature, top_k, top_p)
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ConfigError("the prompt must hold at least one token")
    generator = torch.Generator(device=prompt.device)
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    was_training = model.training
    model.eval()
    try:
        logits, state = prefill(model, prompt, prefill_chunk)
        token = None
        for _ in range(max_new_tokens):
            if token is None:
                last = logits[:, -1]
            else:
                last, state = model.step(token, state)
            if temperature == 0:
                token = last.argmax(-1)
            else:
                probs = filter_logits(last, temperature, top_k, top_p).softmax(-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            yield token
    finally:
        model.train(was_training)


def generate(model: nn.Module, prompt: Tensor, max_new_tokens: int, **sampling) -> Tensor:
    """prompt (B, T) -> prompt followed by max_new_tokens sampled tokens (B, T + max_new_tokens)."""
    new = list(stream_tokens(model, prompt, max_new_tokens, **sampling))
    return torch.cat([prompt, torch.stack(new, dim=1)], dim=1) if new else prompt
