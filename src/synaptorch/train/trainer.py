"""The trainer shared by every language model of synaptorch.

AdamW with linear warm-up and cosine decay, gradient clipping and accumulation, periodic
evaluation (loss in nats per token and bits per byte), metrics as JSON lines, and checkpoints
that resume exactly: the optimizer, every random generator and the data sampler are saved.

A run folder is locked for the life of its trainer, so two processes never write into one.
SIGINT (Ctrl-C) and SIGTERM (preemption, `docker stop`, `timeout`) end a run at the next step
boundary with a checkpoint, so a resumed run equals one that was never stopped; a second
signal stops at once, keeping the last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from synaptorch.checkpoint import (
    METRICS,
    check_vocab,
    load_checkpoint_tokenizer,
    load_model,
    load_trainer_state,
    read_meta,
    read_metrics,
    save_model,
    step_checkpoints,
)
from synaptorch.data.corpus import Corpus, corpus_location, load_corpus
from synaptorch.data.tokenizer import load_tokenizer
from synaptorch.device import (
    FP32,
    PRECISIONS,
    Precision,
    autocast_for,
    bf16_probe,
    check_precision,
    pick_device,
    precision_for,
)
from synaptorch.errors import ConfigError, DataError
from synaptorch.io import (
    FolderLock,
    atomic_write_text,
    check_folder_path,
    fsync_path,
    make_folder,
    recover_leftovers,
)
from synaptorch.registry import model_class
from synaptorch.train.config import RunConfig, RunRequest, TrainConfig, resumed_run_config, with_vocab
from synaptorch.train.distributed import (
    SINGLE,
    World,
    check_global_batch,
    current_world,
    device_for,
    full_states,
    is_sharded,
    launch_id,
    load_sharded_optimizer,
    restart_attempt,
    shard_model,
)
from synaptorch.train.streams import (
    CarriedState,
    RecurrentForward,
    StreamLayout,
    check_carry,
    document_starts,
    stream_losses,
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """A signal stopped the run: at a step boundary after `checkpoint` was written, or, for a second
    signal, at once (`at_once`), `checkpoint` then being the last one written before."""

    def __init__(self, signum: int, checkpoint: Path | None, at_once: bool = False) -> None:
        self.signum, self.checkpoint, self.at_once = signum, checkpoint, at_once
        done = "stopped at once; the last checkpoint is" if at_once else "saved"
        super().__init__(f"{signal.Signals(signum).name}: {done} {checkpoint}")


def learning_rate(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Linear warm-up over `warmup_steps`, then cosine or linear decay from lr to min_lr at max_steps,
    or, with `time_schedule`, at `max_time` seconds: `elapsed` is the time the run has taken."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.time_schedule:
        progress = min(1.0, elapsed / cfg.max_time)
    else:
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    if cfg.schedule == "linear":
        return cfg.lr + (cfg.min_lr - cfg.lr) * progress
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def unit_norms(t: Tensor) -> Tensor:
    """The norm of each unit of a parameter: of each slice along its first dimension (a row of a
    matrix, a head of BDH's encoders), or of the whole of a vector; shaped to broadcast against t."""
    if t.dim() <= 1:
        return t.norm()
    return t.norm(dim=tuple(range(1, t.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_(parameters, ratio: float, eps: float = 1e-3) -> None:
    """Adaptive gradient clipping (Brock et al. 2021, NFNets): each unit's gradient G_i is scaled
    down to ratio * max(||W_i||, eps) where ||G_i|| exceeds it. eps = 1e-3 is the paper's: it keeps
    units initialised at zero from being frozen."""
    for p in parameters:
        if p.grad is None:
            continue
        most = unit_norms(p).clamp_min(eps) * ratio
        norm = unit_norms(p.grad).clamp_min(1e-6)
        p.grad.mul_(torch.where(norm > most, most / norm, torch.ones_like(norm)))


def equal_chunks(items: list[int], most: int) -> list[list[int]]:
    """`items` cut into the fewest chunks of one size no larger than `most`."""
    size = max(d for d in range(1, min(most, len(items)) + 1) if len(items) % d == 0)
    return [items[i : i + size] for i in range(0, len(items), size)]


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

    With `max_tokens`, evenly spaced windows are taken, always the same ones: the documents of
    `document_starts` one window long.
    """
    return document_starts(n_tokens, block_size, max_tokens)


def eval_windows(
    tokens: np.ndarray, block_size: int, batch_size: int, max_tokens: int = 0, world: World = SINGLE
) -> Iterator[tuple[list[int], Tensor]]:
    """(window starts, tokens (B, block_size + 1) int64) for batches of the `eval_window_starts`
    windows of `tokens`: inputs and their next-token targets. Each process of `world` takes its
    share of the windows."""
    starts = world.part(eval_window_starts(len(tokens), block_size, max_tokens))
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
    world: World = SINGLE,
    precision: Precision | None = None,
) -> Iterator[tuple[list[int], Tensor, Tensor]]:
    """(window starts, logits (B, T, V) in float32, targets (B, T)) for batches of the
    `eval_window_starts` windows of `tokens` (this process's share of them), without gradients,
    with the model in eval mode and its forward pass in `precision` (by default the device's)."""
    was_training = model.training
    model.eval()
    # A sharded model's forward pass is a collective: every process makes as many as the one
    # with the most windows, the extra ones on a window of its own whose results are dropped.
    windows = len(eval_window_starts(len(tokens), block_size, max_tokens))
    lockstep = math.ceil(math.ceil(windows / world.size) / batch_size) if is_sharded(model) else 0
    try:
        for batch_starts, batch in eval_windows(tokens, block_size, batch_size, max_tokens, world):
            batch = batch.to(device)
            with torch.no_grad(), autocast_for(device, precision):
                logits = model(batch[:, :-1])
            lockstep -= 1
            yield batch_starts, logits.float(), batch[:, 1:]
        for _ in range(lockstep):
            with torch.no_grad(), autocast_for(device, precision):
                model(torch.from_numpy(tokens[None, :block_size].astype(np.int64)).to(device))
    finally:
        model.train(was_training)


def evaluate_loss(
    model: nn.Module,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int = 0,
    world: World = SINGLE,
    precision: Precision | None = None,
) -> tuple[float, int]:
    """Mean next-token loss (nats) over the `eval_window_starts` windows of `tokens`, and the tokens
    scored; the processes of `world` score their shares and add them up."""
    total, count = 0.0, 0
    batches = eval_batches(model, tokens, block_size, batch_size, device, max_tokens, world, precision)
    for _, logits, targets in batches:
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    total, count = world.sum([total, count], device)
    return total / count, int(count)


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


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def released_on_error(lock: FolderLock | None) -> Iterator[None]:
    """Release `lock` if the block fails: a refused run frees its folder at once, not when collected."""
    try:
        yield
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _lock_and_repair(out: Path) -> FolderLock:
    """Lock a run folder, then repair what a crash inside a checkpoint write left there."""
    lock = FolderLock(out, "run folder")
    for message in recover_leftovers(out):
        print(f"{out}: {message}", file=sys.stderr)
    return lock


# config.json entries of runs that only a subclass of Trainer can continue, and the command making them.
SUBCLASS_RUNS = {"distill": "synaptorch distill"}


class Trainer:
    """Trains one model into a run folder of `step-NNNNNNN` checkpoints and `metrics.jsonl`.

    `Trainer(run, out)` starts a new run; `Trainer.resume(out)` continues the latest checkpoint
    of one. With `progress`, a progress bar goes to stderr and a line per evaluation to stdout.
    """

    owned_entry: str | None = None  # the entry of SUBCLASS_RUNS this trainer writes and resumes

    def __init__(
        self,
        run: RunConfig,
        out: str | Path,
        progress: bool = True,
        resume_from: Path | None = None,
        lock: FolderLock | None = None,
    ) -> None:
        self.out = Path(out)
        self.world = current_world()
        self.progress = progress and self.world.is_main
        check_folder_path(self.out, "--out")
        # The lock is held from before anything is written (a repair included) to the end of `fit`,
        # by the one process that writes; a folder that does not exist yet is made and locked once
        # the inputs are checked.
        self._lock = lock
        if lock is None and self.world.is_main and self.out.is_dir():
            self._lock = _lock_and_repair(self.out)
        self.world.barrier()  # the others read the folder once it is repaired
        try:
            self._start(run, resume_from)
        except BaseException:
            self.close()  # the lock of this folder, whenever `_start` took it
            raise

    def _start(self, run: RunConfig, resume_from: Path | None) -> None:
        if resume_from is None and step_checkpoints(self.out):
            raise ConfigError(
                f"{self.out} already holds checkpoints; pass --resume to continue or choose another --out"
            )
        cfg = run.train
        self.device = pick_device(device_for(self.world, cfg.device))
        check_precision(self.device, cfg.precision)  # refused before anything is written
        self.local_batch = check_global_batch(self.world, cfg.batch_size, cfg.grad_accum)
        # A resumed run reads the copy of its tokenizer saved with the checkpoint.
        if resume_from is None:
            self.tokenizer = load_tokenizer(cfg.tokenizer)
        else:
            self.tokenizer = load_checkpoint_tokenizer(resume_from)
            if cfg.tokenizer != read_meta(resume_from)["train"]["tokenizer"]:
                given = load_tokenizer(cfg.tokenizer).identity()
                if given != self.tokenizer.identity():
                    raise ConfigError(f"--tokenizer {cfg.tokenizer} is not the tokenizer the run was trained with")
        # The main process tokenizes a new corpus once; the others then read its cache.
        for turn in (True, False):
            if self.world.is_main == turn:
                self.corpus = self._corpus(resume_from, cfg)
            self.world.barrier()
        cfg = replace(cfg, data=corpus_location(cfg.data))
        for split in ("train", "val"):
            if len(self.corpus.split(split)) < cfg.block_size + 1:
                raise DataError(
                    f"corpus {cfg.data}: {split} split has {len(self.corpus.split(split))} tokens, "
                    f"fewer than one block of {cfg.block_size} + 1"
                )

        self.check_inputs()
        if self._lock is None and self.world.is_main:
            self._lock = FolderLock(self.out, "run folder")
            if resume_from is None and step_checkpoints(self.out):  # another run got here first
                raise ConfigError(f"{self.out} already holds checkpoints; pass --resume or choose another --out")
        torch.manual_seed(cfg.seed)
        if resume_from is not None:
            self.model = load_model(resume_from).to(self.device)
            check_vocab(self.model, self.tokenizer)
        else:
            run = with_vocab(run, self.tokenizer.vocab_size)
            self.model = model_class(run.architecture)(run.model).to(self.device)
            if cfg.init_from is not None:
                self._start_from(Path(cfg.init_from), cfg.tokenizer)
        self.run = RunConfig(run.architecture, self.model.config, cfg)
        self.cfg = cfg
        # Timed on a micro-batch of random tokens, not the sampler's windows, whose draws stay the run's.
        micro_batch = (min(self.local_batch, cfg.batch_size), cfg.block_size)
        probe_batch = torch.randint(self.model.config.vocab_size, micro_batch, generator=torch.Generator())
        self.precision = self._resumed_precision(resume_from) or precision_for(
            self.device, cfg.precision, bf16_probe(self.model, probe_batch.to(self.device))
        )
        if self.world.any(self.precision == FP32, self.device):  # all processes in one precision, the safe one
            self.precision = FP32
        self.model.recompute = cfg.recompute
        if cfg.detach_kv or cfg.carry_state:
            check_carry(self.model, "--detach-kv" if cfg.detach_kv else "--carry-state")
            self.model.detach_kv = cfg.detach_kv
        self.sharded = cfg.fsdp and self.world.distributed
        if self.sharded:
            if cfg.carry_state:
                raise ConfigError("--carry-state does not combine with --fsdp: shard, or carry the states")
            if self.precision.scale_loss:
                raise ConfigError("--fsdp trains in bf16 or fp32; fp16 with loss scaling is for one device")
            shard_model(self.model)  # before the optimizer, which then holds the shards
        self.optimizer = make_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.scale_loss)
        self.sampler = BatchSampler(self.corpus.split("train"), cfg.block_size, cfg.batch_size, cfg.seed)
        self.elapsed = 0.0  # seconds of this `fit`, which a time schedule follows
        self.last_lr = cfg.lr
        self.streams: StreamLayout | None = None
        if cfg.carry_state:
            rows = cfg.batch_size * cfg.grad_accum
            shuffle_seed = cfg.seed if cfg.carry_shuffle else None
            self.streams = StreamLayout.of(
                len(self.corpus.split("train")), cfg.block_size, rows, cfg.carry_reset, shuffle_seed
            )
            self.carried = CarriedState(self.model, rows, self.device)
            self.own_rows = list(self.world.part(range(rows)))
        self.step = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0  # time spent in training steps, evaluations and saving excluded
        self.last_checkpoint: Path | None = resume_from
        if resume_from is not None:
            state = load_trainer_state(resume_from)
            if self.sharded:
                load_sharded_optimizer(self.model, self.optimizer, state["optimizer"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.sampler.load_state_dict(state["sampler"])
            if self.streams is not None:
                self.carried.load_state_dict(state["carried"])
            if "scaler" in state and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"])
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
            self.train_seconds = state.get("train_seconds", 0.0)
        if self.world.is_main:
            self._forget_metrics_after(self.step)  # a new run drops the records of an attempt that saved nothing
        # DDP exchanges the gradients of computations made through its module's call: with carried
        # states that call is the recurrent form.
        self.ddp = RecurrentForward(self.model) if self.streams is not None else self.model
        if self.world.distributed and not self.sharded:
            from torch.nn.parallel import DistributedDataParallel

            devices = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.ddp, device_ids=devices)
        self.forward = torch.compile(self.ddp) if cfg.compile else self.ddp
        self._stop_signal: int | None = None

    @classmethod
    def resume(cls, out: str | Path, request: RunRequest | None = None, progress: bool = True) -> Trainer:
        """Continue the latest checkpoint of the run folder `out` exactly where it stopped.

        `request` holds settings given again; only the run's length and where and how it runs
        (device, intervals, compile, recompute) may differ from the saved ones.
        """
        run, out, checkpoint, lock = cls._resumed(out, request)
        return cls(run, out, progress, resume_from=checkpoint, lock=lock)

    @classmethod
    def _resumed(cls, out: str | Path, request: RunRequest | None) -> tuple[RunConfig, Path, Path, FolderLock | None]:
        """The resumed run's configuration, its folder, its latest checkpoint and the folder's lock
        (held by the main process; every process resumes from the same checkpoint)."""
        out = Path(out)
        check_folder_path(out, "--out")
        world = current_world()
        lock = _lock_and_repair(out) if out.is_dir() and world.is_main else None
        world.barrier()
        with released_on_error(lock):
            existing = step_checkpoints(out)
            if not existing:
                raise ConfigError(f"nothing to resume in {out}")
            meta = read_meta(existing[-1])
            for entry, command in SUBCLASS_RUNS.items():
                if entry in meta and entry != cls.owned_entry:
                    raise ConfigError(f"{out} is a run of `{command}`; resume it with `{command} --resume`")
            if "train" not in meta:
                raise ConfigError(f"{existing[-1]} holds no training state; it cannot be resumed")
            return resumed_run_config(meta, request or RunRequest()), out, existing[-1], lock

    def _resumed_precision(self, checkpoint: Path | None) -> Precision | None:
        """The precision `auto` chose for the run before it stopped, where this device runs it too:
        a timed choice made again could fall the other way and break the exactness of a resume."""
        saved = read_meta(checkpoint).get("precision") if checkpoint is not None else None
        if self.cfg.precision != "auto" or saved is None:
            return None
        try:
            return PRECISIONS[check_precision(self.device, saved)]
        except ConfigError:  # another device, which decides for itself
            return None

    @staticmethod
    def restarted(out: str | Path) -> bool:
        """Whether these are workers torchrun restarted (`--max-restarts`) after the launch's earlier
        workers wrote checkpoints into `out`: the run then continues the latest one."""
        out = Path(out)
        if restart_attempt() == 0 or launch_id() is None or not out.is_dir():
            return False
        existing = step_checkpoints(out)
        return bool(existing) and read_meta(existing[-1]).get("launch") == launch_id()

    def _start_from(self, folder: Path, tokenizer: str) -> None:
        """The weights of a fine-tuning run's starting checkpoint, whose tokenizer it must share."""
        if load_checkpoint_tokenizer(folder).identity() != self.tokenizer.identity():
            raise ConfigError(f"--tokenizer {tokenizer} is not the tokenizer of --init-from {folder}")
        self.model.load_state_dict(load_model(folder).state_dict())

    def _corpus(self, checkpoint: Path | None, cfg: TrainConfig) -> Corpus:
        """The corpus at `cfg.data`; for a resumed run, refused unless it is the one trained on."""
        if checkpoint is None:
            return load_corpus(cfg.data, self.tokenizer, cfg.val_fraction, build=self.world.is_main)
        saved = read_meta(checkpoint).get("corpus", {})
        try:
            corpus = load_corpus(cfg.data, self.tokenizer, cfg.val_fraction, build=self.world.is_main)
        except DataError as exc:
            raise DataError(f"the run's corpus is not readable ({exc}); pass --data with a copy of it") from None
        if saved.get("sha256") not in (None, corpus.sha256):
            raise DataError(
                f"corpus {cfg.data} has changed since the run was trained on it (sha256 "
                f"{saved['sha256'][:12]}, now {corpus.sha256[:12]}); pass --data with the original"
            )
        return corpus

    def check_inputs(self) -> None:
        """Checks of a subclass that need the corpus, made before anything is written to the run folder."""

    def close(self) -> None:
        """Release the run folder for other processes."""
        if self._lock is not None:
            self._lock.release()

    # --- one step -------------------------------------------------------------------

    def train_step(self) -> float:
        """One optimizer step on the global batch of batch_size x grad_accum windows.

        Every process draws the same windows and takes its share, in micro-batches of equal size, so
        the gradient (averaged over the processes) and the returned loss are the global batch's
        mean whatever the number of processes; gradients are exchanged once, on the last micro-batch.
        """
        cfg = self.cfg
        lr = learning_rate(self.step, cfg, self.elapsed)
        self.last_lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        if self.streams is None:
            starts = [start for _ in range(cfg.grad_accum) for start in self.sampler.next_starts()]
            chunks = equal_chunks(self.world.part(starts), cfg.batch_size)
        else:  # each row of the global batch at its place in its own stream
            stream_starts = self.streams.starts(self.step)
            row_chunks = equal_chunks(self.own_rows, cfg.batch_size)
            chunks = [[stream_starts[r] for r in rows] for rows in row_chunks]
        total = 0.0
        for i, chunk in enumerate(chunks):
            x, y = self.sampler.windows(chunk)
            x, y = x.to(self.device), y.to(self.device)
            accumulate = self.world.distributed and i < len(chunks) - 1
            if self.sharded:
                self.model.set_requires_gradient_sync(not accumulate)
            with self.ddp.no_sync() if accumulate and not self.sharded else nullcontext():
                with autocast_for(self.device, self.precision):
                    if self.streams is None:
                        logits = self.forward(x)
                    else:
                        rows = row_chunks[i]
                        logits, state = self.forward(x, self.carried.read(rows, self.streams.position(self.step)))
                        self.carried.write(rows, state)
                loss = self.loss(logits.float(), y, chunk)
                self.scaler.scale(loss / len(chunks)).backward()
            total += loss.item() / len(chunks)
        if cfg.grad_clip > 0 or cfg.agc > 0:
            self.scaler.unscale_(self.optimizer)
        if cfg.agc > 0:
            adaptive_clip_(self.model.parameters(), cfg.agc)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += cfg.batch_size * cfg.block_size * cfg.grad_accum
        return self.world.sum([total], self.device)[0] / self.world.size

    def loss(self, logits: Tensor, targets: Tensor, starts: list[int]) -> Tensor:
        """The training loss of one micro-batch, whose windows start at `starts` in the training split."""
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    # --- evaluation, metrics, checkpoints -------------------------------------------

    def evaluate(self, max_tokens: int | None = None) -> dict:
        """Validation loss and bpb; the eval line prints any further `val_` figures a subclass adds."""
        tokens = self.cfg.eval_tokens if max_tokens is None else max_tokens
        val, cfg = self.corpus.split("val"), self.cfg
        batch, world, precision = cfg.batch_size, self.world, self.precision
        if self.streams is None:
            loss, _ = evaluate_loss(self.model, val, cfg.block_size, batch, self.device, tokens, world, precision)
        else:  # the split read as streams in the run's windows, the state carried as in training
            doc_len = cfg.carry_reset or min(len(val) - 1, tokens or len(val) - 1)
            per_position, _ = stream_losses(
                self.model, val, doc_len, cfg.block_size, batch, self.device, tokens, world, precision
            )
            loss = float(per_position.mean())
        return {"val_loss": loss, "val_bpb": bits_per_byte(loss, self.corpus)}

    def log(self, record: dict) -> None:
        """Append a record to metrics.jsonl and flush it to the disk (the main process's job)."""
        if not self.world.is_main:
            return
        path = make_folder(self.out) / METRICS
        created = not path.exists()
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_path(self.out)

    def _forget_metrics_after(self, step: int) -> None:
        """Drop records of steps that a crash lost (and a line it cut short), so each step is logged once."""
        path = self.out / METRICS
        if path.is_file():
            kept = "".join(json.dumps(record) + "\n" for record in read_metrics(self.out) if record["step"] <= step)
            if kept != path.read_text():  # a run that lost nothing keeps its file as it is
                atomic_write_text(path, kept)

    def last_evaluation(self) -> dict:
        """The latest evaluation record of metrics.jsonl at or before the current step, or {}."""
        evals = [r for r in read_metrics(self.out) if "val_loss" in r and r["step"] <= self.step]
        return evals[-1] if evals else {}

    def checkpoint_meta(self) -> dict:
        """Further entries of config.json that a subclass needs to resume."""
        return {}

    def save(self) -> Path:
        """Write the checkpoint of this step; with several processes the main one writes it and the
        others wait, so that none reads or deletes a checkpoint being written."""
        folder = self.out / f"step-{self.step:07d}"
        # Collectives, made by every process: what the main one writes is gathered from all.
        weights, optimizer = full_states(self.model, self.optimizer) if self.sharded else (None, None)
        carried = self.carried.state_dict(self.world, self.own_rows) if self.streams is not None else None
        if self.world.is_main:
            self._write_checkpoint(folder, weights, optimizer, carried)
        self.world.barrier()
        self.last_checkpoint = folder
        return folder

    def _write_checkpoint(
        self, folder: Path, weights: dict[str, Tensor] | None, optimizer: dict | None, carried: dict | None
    ) -> None:
        state = {
            "optimizer": self.optimizer.state_dict() if optimizer is None else optimizer,
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        if carried is not None:
            state["carried"] = carried | {"stream_starts": self.streams.starts(self.step)}
        save_model(
            self.model,
            folder,
            tokenizer=self.tokenizer,
            trainer_state=state,
            weights=weights,
            train=self.cfg.to_dict(),
            step=self.step,
            tokens_seen=self.tokens_seen,
            corpus={"name": self.corpus.name, "sha256": self.corpus.sha256},
            precision=self.precision.name,
            **({"launch": launch_id()} if launch_id() else {}),
            **self.checkpoint_meta(),
        )
        for old in step_checkpoints(self.out)[: -self.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)

    # --- the loop ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.step >= self.cfg.max_steps

    @contextmanager
    def _stop_at_step_boundaries(self) -> Iterator[None]:
        """While training, SIGINT and SIGTERM ask for a stop at the next step boundary; a second one
        stops at once (RunInterrupted with at_once). Signals can only be caught in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask_to_stop(signum: int, frame: object) -> None:
            if self._stop_signal is not None:
                raise RunInterrupted(signum, self.last_checkpoint, at_once=True)
            self._stop_signal = signum
            print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop now)", file=sys.stderr)

        previous = {signum: signal.signal(signum, ask_to_stop) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                # None: a handler installed outside Python, which cannot be put back from here.
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def fit(self) -> dict:
        """Train to max_steps (or max_time); returns the last evaluation.

        A finished run trains nothing and writes nothing. A stop signal ends the run at the next
        step boundary with a checkpoint, then raises RunInterrupted.
        """
        cfg = self.cfg
        if self.finished:
            self.close()
            return self.last_evaluation()
        if self.world.is_main and not self._lock.held:
            self._lock = FolderLock(self.out, "run folder")
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
        self._stop_signal = None
        try:
            with self._stop_at_step_boundaries():
                while not self.finished:
                    saved = False
                    step_start = time.perf_counter()
                    if cfg.time_schedule:  # one learning rate for all processes, whose clocks differ
                        self.elapsed = self.world.sum([step_start - start], self.device)[0] / self.world.size
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
                                "lr": self.last_lr,
                                "tokens": self.tokens_seen,
                                "train_s": round(self.train_seconds, 3),
                                "tokens_per_s": round(tokens_per_s, 1),
                            }
                        )
                    # Every process takes these decisions together: a signal may reach only some of them.
                    out_of_time = self.world.any(bool(cfg.max_time and elapsed >= cfg.max_time), self.device)
                    if self.step % cfg.eval_interval == 0 or self.finished or out_of_time:
                        last_eval = self._evaluate_and_save(bar, loss, tokens_per_s)
                        saved = True
                    stop = self.world.any(self._stop_signal is not None, self.device)
                    if stop and not self.finished:  # a finished run stops anyway
                        folder = self.last_checkpoint if saved else self.save()
                        raise RunInterrupted(self._stop_signal or signal.SIGTERM, folder)
                    if out_of_time:
                        break
        finally:
            bar.close()
            self.close()
        return last_eval

    def _evaluate_and_save(self, bar: tqdm, loss: float, tokens_per_s: float) -> dict:
        record = {"step": self.step, "tokens": self.tokens_seen, "train_s": round(self.train_seconds, 3)}
        record.update(self.evaluate(), precision=self.precision.name)
        self.log(record)
        if self.progress:
            extra = "".join(
                f" | {key.replace('_', ' ')} {value:.4f}"
                for key, value in record.items()
                if key.startswith("val_") and key not in ("val_loss", "val_bpb")
            )
            bar.write(
                f"step {self.step:6d} | train loss {loss:.4f} | val loss {record['val_loss']:.4f}"
                f" | val bpb {record['val_bpb']:.4f}{extra} | {tokens_per_s:.0f} tok/s"
            )
        self.save()
        return record
