"""The trainer shared by every language model of synaptorch.

AdamW with linear warm-up and cosine decay, gradient clipping and accumulation, periodic
evaluation (loss in nats per token and bits per byte), metrics as JSON lines, and checkpoints
that resume exactly: the optimizer, every random generator and the data sampler are saved.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from synaptorch.checkpoint import (
    load_checkpoint_tokenizer,
    load_model,
    load_trainer_state,
    read_meta,
    save_model,
    step_checkpoints,
)
from synaptorch.data.corpus import Corpus, load_corpus
from synaptorch.data.tokenizer import load_tokenizer
from synaptorch.errors import ConfigError, DataError
from synaptorch.io import check_folder_path
from synaptorch.registry import model_class
from synaptorch.train.config import RunConfig, TrainConfig, with_vocab

METRICS = "metrics.jsonl"


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r} (auto, cpu, cuda, cuda:N, mps)") from None


def autocast_for(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; fp32 elsewhere, where bf16 matmuls are slower than fp32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay from lr to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


class BatchSampler:
    """Random windows of block_size + 1 tokens from the training split, from its own generator."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int) -> None:
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def next_starts(self) -> list[int]:
        """Where the next batch's windows start in the training split."""
        starts = torch.randint(len(self.tokens) - self.block_size, (self.batch_size,), generator=self.generator)
        return starts.tolist()

    def windows(self, starts: list[int]) -> tuple[Tensor, Tensor]:
        """Inputs and next-token targets, (B, block_size) each, of the windows at `starts`."""
        rows = [torch.from_numpy(self.tokens[s : s + self.block_size + 1].astype(np.int64)) for s in starts]
        batch = torch.stack(rows)
        return batch[:, :-1], batch[:, 1:]

    def next(self) -> tuple[Tensor, Tensor]:
        return self.windows(self.next_starts())

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def eval_window_starts(n_tokens: int, block_size: int, max_tokens: int = 0) -> np.ndarray:
    """Starts of the non-overlapping windows of block_size + 1 tokens that evaluations score.

    With `max_tokens`, evenly spaced windows are taken, always the same ones.
    """
    n_windows = (n_tokens - 1) // block_size
    if n_windows < 1:
        raise DataError(f"need more than {block_size} tokens to evaluate, have {n_tokens}")
    starts = np.arange(n_windows) * block_size
    if max_tokens and n_windows * block_size > max_tokens:
        keep = max(1, max_tokens // block_size)
        starts = starts[np.linspace(0, n_windows - 1, keep).round().astype(np.int64)]
    return starts


def eval_windows(
    tokens: np.ndarray, block_size: int, batch_size: int, max_tokens: int = 0
) -> Iterator[tuple[list[int], Tensor]]:
    """(window starts, tokens (B, block_size + 1) int64) for batches of the `eval_window_starts`
    windows of `tokens`: inputs and their next-token targets."""
    starts = eval_window_starts(len(tokens), block_size, max_tokens)
    for i in range(0, len(starts), batch_size):
        batch_starts = [int(s) for s in starts[i : i + batch_size]]
        rows = [tokens[s : s + block_size + 1].astype(np.int64) for s in batch_starts]
        yield batch_starts, torch.from_numpy(np.stack(rows))


def eval_batches(
    model: nn.Module,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int = 0,
) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """(window starts, logits (B, T, V) in float32, targets (B, T)) for batches of the
    `eval_window_starts` windows of `tokens`, without gradients and with the model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        for batch_starts, batch in eval_windows(tokens, block_size, batch_size, max_tokens):
            batch = batch.to(device)
            with torch.no_grad(), autocast_for(device):
                logits = model(batch[:, :-1])
            yield batch_starts, logits.float(), batch[:, 1:]
    finally:
        model.train(was_training)


def evaluate_loss(
    model: nn.Module,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int = 0,
) -> tuple[float, int]:
    """Mean next-token loss (nats) over the `eval_window_starts` windows of `tokens`, and the tokens scored."""
    total, count = 0.0, 0
    for _, logits, targets in eval_batches(model, tokens, block_size, batch_size, device, max_tokens):
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    return total / count, count


def bits_per_byte(loss: float, corpus: Corpus) -> float:
    return loss * corpus.tokens_per_byte / math.log(2)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Weight decay on matrices only; vectors (norm gains, biases) are not decayed."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False)


def read_metrics(run_folder: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl, skipping a line that a crash cut short."""
    path = Path(run_folder) / METRICS
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# config.json entries of runs that only a subclass of Trainer can continue, and the command making them.
SUBCLASS_RUNS = {"distill": "synaptorch distill"}


class Trainer:
    """Trains one model into a run folder of `step-NNNNNNN` checkpoints and `metrics.jsonl`.

    With `progress`, a progress bar goes to stderr and a line per evaluation to stdout.
    """

    owned_entry: str | None = None  # the entry of SUBCLASS_RUNS this trainer writes and resumes

    def __init__(self, run: RunConfig, out: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.out = Path(out)
        self.progress = progress
        existing = step_checkpoints(self.out)
        if existing and not resume:
            raise ConfigError(
                f"{self.out} already holds checkpoints; pass --resume to continue or choose another --out"
            )
        if resume and not existing:
            raise ConfigError(f"nothing to resume in {self.out}")
        check_folder_path(self.out, "--out")

        resume_from = existing[-1] if resume else None
        if resume_from is not None:
            meta = read_meta(resume_from)
            for entry, command in SUBCLASS_RUNS.items():
                if entry in meta and entry != self.owned_entry:
                    raise ConfigError(f"{self.out} is a run of `{command}`; resume it with `{command} --resume`")
            saved_train = TrainConfig.from_dict(meta["train"])
            # Only the length of the run may change on resume; everything else is the saved run's.
            run = replace(run, train=replace(saved_train, max_steps=run.train.max_steps, max_time=run.train.max_time))
        self.cfg = cfg = run.train
        self.device = pick_device(cfg.device)
        # A resumed run reads the copy of its tokenizer saved with the checkpoint.
        self.tokenizer = (
            load_tokenizer(cfg.tokenizer) if resume_from is None else load_checkpoint_tokenizer(resume_from)
        )
        self.corpus = load_corpus(cfg.data, self.tokenizer, cfg.val_fraction)
        for split in ("train", "val"):
            if len(self.corpus.split(split)) < cfg.block_size + 1:
                raise DataError(
                    f"corpus {cfg.data}: {split} split has {len(self.corpus.split(split))} tokens, "
                    f"fewer than one block of {cfg.block_size} + 1"
                )

        torch.manual_seed(cfg.seed)
        if resume_from is not None:
            self.model = load_model(resume_from).to(self.device)
            if self.model.config.vocab_size != self.tokenizer.vocab_size:
                raise DataError("the checkpoint's vocabulary does not match its tokenizer")
            run = RunConfig(self.model.architecture, self.model.config, cfg)
        else:
            run = with_vocab(run, self.tokenizer.vocab_size)
            self.model = model_class(run.architecture)(run.model).to(self.device)
        self.run = run
        self.optimizer = make_optimizer(self.model, cfg)
        self.sampler = BatchSampler(self.corpus.split("train"), cfg.block_size, cfg.batch_size, cfg.seed)
        self.step = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0  # time spent in training steps, evaluations and saving excluded
        self.last_checkpoint: Path | None = None
        if resume_from is not None:
            state = load_trainer_state(resume_from)
            self.optimizer.load_state_dict(state["optimizer"])
            self.sampler.load_state_dict(state["sampler"])
            _set_rng_state(state["rng"])
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
            self.train_seconds = state.get("train_seconds", 0.0)
            self._forget_metrics_after(self.step)
        self.model.recompute = cfg.recompute
        self.forward = torch.compile(self.model) if cfg.compile else self.model

    # --- one step -------------------------------------------------------------------

    def train_step(self) -> float:
        cfg = self.cfg
        lr = learning_rate(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total = 0.0
        for _ in range(cfg.grad_accum):
            starts = self.sampler.next_starts()
            x, y = self.sampler.windows(starts)
            x, y = x.to(self.device), y.to(self.device)
            with autocast_for(self.device):
                logits = self.forward(x)
            loss = self.loss(logits.float(), y, starts)
            (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += cfg.batch_size * cfg.block_size * cfg.grad_accum
        return total

    def loss(self, logits: Tensor, targets: Tensor, starts: list[int]) -> Tensor:
        """The training loss of one micro-batch, whose windows start at `starts` in the training split."""
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    # --- evaluation, metrics, checkpoints -------------------------------------------

    def evaluate(self, max_tokens: int | None = None) -> dict:
        """Validation loss and bpb; the eval line prints any further `val_` figures a subclass adds."""
        tokens = self.cfg.eval_tokens if max_tokens is None else max_tokens
        loss, _ = evaluate_loss(
            self.model, self.corpus.split("val"), self.cfg.block_size, self.cfg.batch_size, self.device, tokens
        )
        return {"val_loss": loss, "val_bpb": bits_per_byte(loss, self.corpus)}

    def log(self, record: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _forget_metrics_after(self, step: int) -> None:
        """Drop records of steps that a crash lost, so a resumed run logs each step once."""
        if (self.out / METRICS).is_file():
            kept = [record for record in read_metrics(self.out) if record["step"] <= step]
            (self.out / METRICS).write_text("".join(json.dumps(record) + "\n" for record in kept))

    def checkpoint_meta(self) -> dict:
        """Further entries of config.json that a subclass needs to resume."""
        return {}

    def save(self) -> Path:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
        }
        folder = save_model(
            self.model,
            self.out / f"step-{self.step:07d}",
            tokenizer=self.tokenizer,
            trainer_state=state,
            train=self.cfg.to_dict(),
            step=self.step,
            tokens_seen=self.tokens_seen,
            corpus={"name": self.corpus.name, "sha256": self.corpus.sha256},
            **self.checkpoint_meta(),
        )
        for old in step_checkpoints(self.out)[: -self.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        self.last_checkpoint = folder
        return folder

    # --- the loop ---------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to max_steps (or max_time); returns the last evaluation. Ctrl-C saves first."""
        cfg = self.cfg
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        start, start_tokens, start_seconds = time.perf_counter(), self.tokens_seen, self.train_seconds
        last_eval: dict = {}
        try:
            while self.step < cfg.max_steps:
                step_start = time.perf_counter()
                loss = self.train_step()
                self.train_seconds += time.perf_counter() - step_start
                if not math.isfinite(loss):
                    raise DataError(f"training diverged at step {self.step} (loss {loss}); lower --lr")
                elapsed = time.perf_counter() - start
                tokens_per_s = (self.tokens_seen - start_tokens) / max(self.train_seconds - start_seconds, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:.0f}")
                if self.step % cfg.log_interval == 0:
                    self.log(
                        {
                            "step": self.step,
                            "train_loss": loss,
                            "lr": learning_rate(self.step - 1, cfg),
                            "tokens": self.tokens_seen,
                            "train_s": round(self.train_seconds, 3),
                            "tokens_per_s": round(tokens_per_s, 1),
                        }
                    )
                out_of_time = cfg.max_time and elapsed >= cfg.max_time
                if self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps or out_of_time:
                    last_eval = {
                        "step": self.step,
                        "tokens": self.tokens_seen,
                        "train_s": round(self.train_seconds, 3),
                        **self.evaluate(),
                    }
                    self.log(last_eval)
                    if self.progress:
                        extra = "".join(
                            f" | {key.replace('_', ' ')} {value:.4f}"
                            for key, value in last_eval.items()
                            if key.startswith("val_") and key not in ("val_loss", "val_bpb")
                        )
                        bar.write(
                            f"step {self.step:6d} | train loss {loss:.4f} | val loss {last_eval['val_loss']:.4f}"
                            f" | val bpb {last_eval['val_bpb']:.4f}{extra} | {tokens_per_s:.0f} tok/s"
                        )
                    self.save()
                if out_of_time:
                    break
        except KeyboardInterrupt:
            bar.close()
            folder = self.save()
            print(f"interrupted: saved {folder}", file=sys.stderr)
            raise
        bar.close()
        return last_eval
