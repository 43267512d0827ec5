"""What the inference commands do, as library functions: stream a continuation, score a corpus."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from synaptorch.checkpoint import load_for_inference
from synaptorch.data.corpus import Corpus, load_corpus
from synaptorch.data.tokenizer import StreamDecoder, Tokenizer
from synaptorch.device import pick_device
from synaptorch.errors import ConfigError, DataError
from synaptorch.models.bdh import BDH
from synaptorch.models.sampling import check_sampling, stream_tokens
from synaptorch.train.distill import DistillConfig
from synaptorch.train.spiking import (
    METHODS,
    ReLUResult,
    SpikingResult,
    as_records,
    check_time_steps,
    convert,
    evaluate_spiking,
    finetune_spiking,
)
from synaptorch.train.teacher import TeacherSignal
from synaptorch.train.trainer import bits_per_byte, evaluate_loss

SPLITS = ("val", "train", "all")


def _check_split(split: str, val_fraction: float) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {val_fraction}")


def stream_text(
    checkpoint: str | Path,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    device: str = "auto",
    compile_step: bool = False,
) -> Iterator[str]:
    """Pieces of text continuing `prompt`, as the checkpoint's model samples them.

    The pieces never split a UTF-8 character or a BPE merge; joined, they are the decoded
    continuation. Memory and time per token do not grow with the context.
    """
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling(temperature, top_k, top_p)
    dev = pick_device(device)
    loaded = load_for_inference(checkpoint, dev)
    ids = loaded.tokenizer.encode(prompt)
    if not ids:
        raise DataError("the prompt is empty after tokenization")
    if compile_step and hasattr(loaded.model, "compile_step"):
        loaded.model.compile_step()
    decoder = StreamDecoder(loaded.tokenizer)
    tokens = stream_tokens(
        loaded.model,
        torch.tensor([ids], device=dev),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    for token in tokens:
        piece = decoder.push(int(token[0]))
        if piece:
            yield piece
    yield decoder.flush()


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str = "pydoc",
    split: str = "val",
    val_fraction: float = 0.1,
    tokenizer: str | None = None,
    block_size: int | None = None,
    batch_size: int = 16,
    max_tokens: int = 0,
    device: str = "auto",
) -> dict:
    """Loss (nats per token) and bits per byte of a checkpoint on a split of a corpus.

    `block_size` defaults to the training block size; `max_tokens` 0 scores the whole split.
    """
    _check_split(split, val_fraction)
    if (block_size is not None and block_size <= 0) or batch_size <= 0 or max_tokens < 0:
        raise ConfigError("--block-size and --batch-size must be positive, --max-tokens >= 0")
    dev = pick_device(device)
    loaded = load_for_inference(checkpoint, dev, tokenizer=tokenizer)
    corpus = load_corpus(data, loaded.tokenizer, val_fraction)
    window = block_size or loaded.block_size
    loss, n_tokens = evaluate_loss(loaded.model, corpus.split(split), window, batch_size, dev, max_tokens)
    return {
        "checkpoint": str(loaded.folder),
        "data": str(data),
        "split": split,
        "tokens": n_tokens,
        "loss": round(loss, 6),
        "bpb": round(bits_per_byte(loss, corpus), 6),
    }


@dataclass
class SpikeEvaluation:
    """What `spike_eval_checkpoint` measured: the ReLU model, a result per T, and a JSON record."""

    relu: ReLUResult
    results: list[SpikingResult]  # one per T
    record: dict
    finetune_losses: list[float] = field(default_factory=list)


def spike_eval_checkpoint(
    checkpoint: str | Path,
    time_steps: Sequence[int],
    data: str = "pydoc",
    split: str = "val",
    val_fraction: float = 0.1,
    block_size: int | None = None,
    batch_size: int = 16,
    max_tokens: int = 16384,
    calibration_tokens: int = 4096,
    percentile: float = 99.9,
    finetune_steps: int = 0,
    finetune_t: int = 4,
    finetune_lr: float = 3e-4,
    device: str = "cpu",
    finetune_method: str = "surrogate",
    finetune_seconds: float = 0.0,
    finetune_gradient: str | None = None,
    teacher: str | None = None,
    teacher_cache: str | Path | None = None,
    distill_alpha: float = 0.5,
    distill_tau: float = 1.0,
) -> SpikeEvaluation:
    """Convert a BDH checkpoint to integrate-and-fire neurons (thresholds calibrated on the start of
    the training split), optionally fine-tune it with the spikes in the loop, and score it at each
    number of time steps per token against the ReLU model.

    Fine-tuning runs `finetune_steps` steps, or `finetune_seconds` seconds, of `finetune_method`
    (see `finetune_spiking`); distillation learns from `teacher` (anything `synaptorch distill`
    takes, its distributions kept in `teacher_cache` when given), by default from the ReLU model.
    """
    check_time_steps(time_steps)
    _check_split(split, val_fraction)
    # Checked before the model is converted and fine-tuned, which take minutes.
    if (block_size is not None and block_size < 1) or batch_size < 1 or calibration_tokens < 1:
        raise ConfigError("--block-size, --batch-size and --calibration-tokens must be positive")
    if max_tokens < 0 or finetune_steps < 0 or not finetune_seconds >= 0:
        raise ConfigError("--max-tokens, --finetune-steps and --finetune-seconds must be >= 0")
    if finetune_method not in METHODS:
        raise ConfigError(f"--finetune-method must be one of {', '.join(METHODS)}, got {finetune_method!r}")
    if (teacher is not None or teacher_cache is not None) and finetune_method != "distill":
        raise ConfigError("--teacher and --teacher-cache go with --finetune-method distill")
    if teacher_cache is not None and teacher is None:
        raise ConfigError("--teacher-cache needs --teacher (the ReLU model is run live)")
    distill = DistillConfig(alpha=distill_alpha, tau=distill_tau)
    dev = pick_device(device)
    loaded = load_for_inference(checkpoint, dev, architecture="bdh")
    window = block_size or loaded.block_size
    corpus = load_corpus(data, loaded.tokenizer, val_fraction)
    train_split = corpus.split("train")
    signal = None
    if teacher is not None:
        signal = _teacher_signal(teacher, teacher_cache, loaded.tokenizer, corpus, distill, dev)
    spiking = convert(loaded.model, train_split[:calibration_tokens], window, percentile)
    record: dict = {"checkpoint": str(loaded.folder), "data": str(data), "split": split}
    losses: list[float] = []
    if finetune_method != "none" and (finetune_steps or finetune_seconds):
        start = time.perf_counter()
        losses = finetune_spiking(
            spiking,
            train_split,
            finetune_steps,
            finetune_t,
            window,
            lr=finetune_lr,
            method=finetune_method,
            seconds=finetune_seconds,
            gradient=finetune_gradient,
            teacher=signal,
            alpha=distill.alpha,
            tau=distill.tau,
        )
        record["finetune"] = {
            "method": finetune_method,
            "steps": len(losses),
            "t": finetune_t,
            "seconds": round(time.perf_counter() - start, 1),
            "first_loss": round(losses[0], 6),
            "last_loss": round(losses[-1], 6),
        }
    relu, results = evaluate_spiking(
        loaded.model, spiking, corpus.split(split), time_steps, window, batch_size, max_tokens
    )
    return SpikeEvaluation(relu, results, record | as_records(relu, results), losses)


def _teacher_signal(
    spec: str,
    cache: str | Path | None,
    tokenizer: Tokenizer,
    corpus: Corpus,
    distill: DistillConfig,
    device: torch.device,
) -> TeacherSignal:
    """The teacher's distributions over `corpus`, from its cache (filled first if missing) or live."""
    from synaptorch.train.distill import open_teacher_cache
    from synaptorch.train.teacher import LiveSignal, load_teacher

    loaded = load_teacher(spec, device)
    if loaded.tokenizer.identity() != tokenizer.identity():
        raise DataError(f"teacher {spec} does not use the checkpoint's tokenizer; the distributions must share ids")
    if cache is None:
        return LiveSignal(loaded, corpus.tokens, distill.for_signal(cached=False).top_k)
    return open_teacher_cache(cache, loaded, corpus, distill)[0]


@dataclass
class Inspection:
    """A BDH checkpoint ready for the analysis tools, the text to read it on, and the window length."""

    model: BDH  # in eval mode
    tokenizer: Tokenizer
    text: str | None
    window: int
    origins: list[int] | None = None  # of a merged model: per neuron of a head, its source's index


def load_inspection(
    checkpoint: str | Path, text_file: str | Path | None = None, window: int | None = None, device: str = "cpu"
) -> Inspection:
    """The BDH model and tokenizer of a checkpoint, the text of `text_file` (None without one) and
    the window length (default: the training block size)."""
    text = None
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise DataError(f"text file not found: {text_file}")
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise DataError(f"text file {text_file} is empty")
    if window is not None and window <= 0:
        raise ConfigError(f"--window must be positive, got {window}")
    loaded = load_for_inference(checkpoint, pick_device(device), architecture="bdh")
    origins = None
    if "merged_from" in loaded.meta:
        origins = [i for i, source in enumerate(loaded.meta["merged_from"]) for _ in range(source["neurons"])]
    return Inspection(loaded.model, loaded.tokenizer, text, window or loaded.block_size, origins)


def concept(words: str | None, regex: str | None, required: bool) -> re.Pattern | None:
    """The concept of comma-separated `words` or of a regular expression; None if neither is given."""
    from synaptorch.analysis.text import concept_pattern

    if words is None and regex is None:
        if required:
            raise DataError("give a concept with --concept WORD[,WORD...] or --concept-regex RE")
        return None
    return concept_pattern(words.split(",") if words else None, regex)


def inspect_neurons(
    checkpoint: str | Path,
    text_file: str | Path,
    window: int | None = None,
    device: str = "cpu",
    csv_path: str | Path | None = None,
    show: int = 20,
) -> list[dict]:
    """Every neuron's top tokens, contexts and monosemanticity on a text (written to `csv_path` when
    given); returns the `show` most monosemantic neurons. The options are checked before the model
    reads the text."""
    from synaptorch.analysis.neurons import write_csv
    from synaptorch.analysis.report import measure_activity, most_monosemantic

    if show < 0:
        raise ConfigError(f"--show must be >= 0, got {show}")
    if csv_path is not None and Path(csv_path).is_dir():
        raise ConfigError(f"--csv {csv_path} is a folder; give a file name")
    seen = load_inspection(checkpoint, text_file, window, device)
    activity = measure_activity(seen.model, seen.tokenizer, seen.text, seen.window)
    rows = activity.selectivity.rows(activity.encoded, seen.tokenizer, activity.sparsity.x_rate)
    if csv_path is not None:
        write_csv(rows, csv_path)
    return most_monosemantic(rows, show)
