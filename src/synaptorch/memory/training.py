"""Training and evaluation of the question-answering models on bAbI, and their checkpoints.

Each model trains as its reference did (`reference_training`):

    hmem       Adam, lr 3e-3 x 0.85 every 20 epochs, gradient norm clipped to 20, batches of 128,
               100 epochs, loss + `l2_penalty()` (Limbacher and Legenstein 2020; `HMemTrainConfig`)
    hmem-rbw   the same, the rate held to epoch 150 and then x exp(0.01 (150 - epoch)); 250 epochs
               on task 16
    memn2n     SGD, lr 0.01 halved every 25 epochs, clipped to 40, batches of 32, 100 epochs
               (Sukhbaatar et al. 2015; `MemN2NTrainConfig`). With linear start the run starts at
               lr 0.005 without the softmax and puts it back after the first epoch whose validation
               loss is no lower than the one before, the paper's "when the validation loss stopped
               decreasing"
    lstm       Adam at a constant 1e-3, clipped to 5, batches of 32, 100 epochs (`LSTMTrainConfig`,
               this library's choice)
    bdh        Adam at a constant 1e-3, clipped to 1, batches of 32, 100 epochs (`BDHReaderTrainConfig`)

The loss is softmax cross-entropy over the vocabulary. Training examples are shuffled every epoch.
The last 10% of the questions of each training file validate (`split_validation`, as the H-Mem
code's Keras `validation_split` takes them from its one task); the weights kept are those of the
epoch with the best validation accuracy, of equals the one of lowest validation loss. The
vocabulary is that of the training files, validation included: a word of the test files that
training never saw is the unknown word, counted and reported. The tensor layout fits the
training and test questions together, with a time word per sentence for the models whose
config has `time_word` (H-Mem). A seed gives the same weights, order and result.

A run folder holds `metrics.jsonl` (a record per epoch: losses, accuracies, learning rate,
seconds) and `checkpoint/`, written once at the end through `write_folder_atomically`:
`config.json` (model kind and config, vocabulary, layout, training settings and outcome, data
files with their sha256, tasks) and `model.safetensors`. Loading reads safetensors only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm import tqdm

from synaptorch.data import babi_generator
from synaptorch.data.babi import (
    SIZE_FOLDERS,
    TASK_NAMES,
    BabiLayout,
    BabiSample,
    EncodedBabi,
    Vocabulary,
    babi_files,
    encode_samples,
    read_babi_file,
    split_validation,
    task_file_name,
)
from synaptorch.data.babi_generator import GENERATED_TASKS, write_babi
from synaptorch.data.corpus import cache_dir
from synaptorch.device import pick_device
from synaptorch.errors import CheckpointError, ConfigError, DataError
from synaptorch.fields import setting
from synaptorch.io import (
    FolderLock,
    atomic_write_text,
    check_run_folder,
    load_safetensors,
    read_json,
    write_folder_atomically,
)
from synaptorch.memory import MODELS
from synaptorch.memory.bdh_reader import BDHReaderTrainConfig
from synaptorch.memory.hmem import HMemTrainConfig
from synaptorch.memory.memn2n import MemN2NTrainConfig
from synaptorch.version import __version__

CHECKPOINT = "checkpoint"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
FORMAT = "synaptorch-babi"
GENERATOR_SEED = 0
EVAL_BATCH = 256


@dataclass(frozen=True)
class LSTMTrainConfig:
    """Adam at a constant rate of 1e-3, gradient norm clipped to 5, batches of 32, 100 epochs: this
    library's choice for the LSTM baseline, whose training Weston et al. 2015 do not give."""

    lr: float = setting(1e-3, "Adam learning rate.")
    grad_clip: float = setting(5.0, "Clip the gradient norm to this.")
    batch_size: int = setting(32, "Examples per batch.")
    epochs: int = setting(100, "Passes over the training set.")

    def learning_rate(self, epoch: int) -> float:
        return self.lr


BabiTrainConfig = HMemTrainConfig | MemN2NTrainConfig | LSTMTrainConfig | BDHReaderTrainConfig

# model kind -> its reference training for a bAbI task (None: several or unknown)
TRAINING: dict[str, Callable[[int | None], BabiTrainConfig]] = {
    "hmem": lambda task: HMemTrainConfig.paper(read_before_write=False, task=task),
    "hmem-rbw": lambda task: HMemTrainConfig.paper(read_before_write=True, task=task),
    "memn2n": lambda task: MemN2NTrainConfig(),
    "lstm": lambda task: LSTMTrainConfig(),
    "bdh": lambda task: BDHReaderTrainConfig(),
}


def check_model_kind(kind: str) -> None:
    if kind not in MODELS:
        raise ConfigError(f"unknown model {kind!r}; choose {', '.join(MODELS)}")


def reference_training(kind: str, task: int | None = None, epochs: int | None = None) -> BabiTrainConfig:
    """The training settings of model `kind` on bAbI `task`, with `epochs` instead of its own if given."""
    check_model_kind(kind)
    config = TRAINING[kind](task)
    if epochs is None:
        return config
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    return dataclasses.replace(config, epochs=epochs)


def generated_folder(size: str) -> Path:
    """Where the generated tasks of a training-set size live: `<cache>/babi/generated-<version>/en`
    (or `en-10k`), the version a digest of the generator's source, so that a changed generator
    never reuses the files of an older one."""
    source = Path(babi_generator.__file__).read_bytes()
    version = hashlib.sha256(source).hexdigest()[:12]
    return cache_dir() / "babi" / f"generated-{version}" / SIZE_FOLDERS[size]


def task_files(task: int, size: str = "1k", data: str | Path | None = None) -> tuple[list[Path], list[Path]]:
    """The training and test files of bAbI `task`: those in `data` (a folder of `qa{N}_..._{split}.txt`
    files or the published tree, whose `size` subfolder is read), else the generated ones (seed 0),
    written into the cache the first time they are asked for."""
    if isinstance(task, bool) or not isinstance(task, int) or task not in TASK_NAMES:
        raise ConfigError(f"unknown bAbI task {task!r}; the tasks are 1 to 20")
    if size not in SIZE_FOLDERS:
        raise ConfigError(f"unknown bAbI size {size!r}; choose {' or '.join(SIZE_FOLDERS)}")
    if data is None:
        if task not in GENERATED_TASKS:
            raise ConfigError(
                f"bAbI task {task} is not one the generator makes ({', '.join(map(str, GENERATED_TASKS))}); "
                "give the folder of the published files as data"
            )
        data = generated_folder(size)
        if not all((data / task_file_name(task, split)).is_file() for split in ("train", "test")):
            write_babi(task, size, GENERATOR_SEED, data)
    return babi_files(data, "train", [task], size), babi_files(data, "test", [task], size)


def _files(sources: str | Path | Sequence[str | Path], split: str) -> list[Path]:
    """The files that sources (files, folders of bAbI files) name, a folder giving its `split` files."""
    sources = [sources] if isinstance(sources, str | Path) else list(sources)
    if not sources:
        raise ConfigError(f"no bAbI {split} files given")
    return [path for source in sources for path in babi_files(source, split)]


def _read(files: Sequence[Path]) -> list[BabiSample]:
    return [sample for path in files for sample in read_babi_file(path)]


def _describe(files: Sequence[Path], samples: Sequence[BabiSample]) -> list[dict]:
    questions = Counter(sample.source.rpartition(":")[0] for sample in samples)
    return [
        {
            "path": str(path.resolve()),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "questions": questions[str(path)],
        }
        for path in files
    ]


def _tasks(samples: Sequence[BabiSample]) -> list[int]:
    return sorted({sample.task for sample in samples if sample.task is not None})


def _tasks_named(tasks: Sequence[int]) -> str:
    if not tasks:
        return "tasks unknown"
    return ("task " if len(tasks) == 1 else "tasks ") + ", ".join(map(str, tasks))


def build_model(kind: str, vocab_size: int, layout: BabiLayout, overrides: dict | None = None) -> nn.Module:
    """A fresh model of `kind` for a vocabulary of `vocab_size` ids (time words included) and `layout`."""
    check_model_kind(kind)
    entry = MODELS[kind]
    values = {"vocab_size": vocab_size, **entry.overrides, **(overrides or {})}
    names = {f.name for f in dataclasses.fields(entry.config_class)}
    if "n_words" in names:
        values["n_words"] = layout.n_words
    if "time_word" in names:
        values["time_word"] = layout.time_words
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown {kind} setting(s): {', '.join(unknown)}")
    return entry.model_class(entry.config_class(**values))


def _uses_time_words(kind: str, overrides: dict | None) -> bool:
    """Whether the model's config has a time word slot, and keeps it on."""
    config_class = MODELS[kind].config_class
    field = next((f for f in dataclasses.fields(config_class) if f.name == "time_word"), None)
    return field is not None and bool((overrides or {}).get("time_word", field.default))


@dataclass(frozen=True)
class BabiScore:
    """How well a model answers a set of questions."""

    accuracy: float
    loss: float  # mean cross-entropy, nats
    questions: int
    per_task: dict[int, float]  # accuracy of each task the file names give
    unknown_words: Counter[str]  # words missing from the vocabulary: occurrences

    def summary(self) -> dict:
        """The figures of the JSON lines: per-task accuracies only where the questions span several tasks."""
        return {
            "test_accuracy": self.accuracy,
            "per_task": {str(task): acc for task, acc in self.per_task.items()} if len(self.per_task) > 1 else {},
            "unknown_test_words": sum(self.unknown_words.values()),
            "test_questions": self.questions,
        }


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[Tensor]:
    """Index batches over n examples, shuffled when a generator is given. A last batch of one example
    joins the one before: batch normalisation (H-Mem's) cannot take statistics of a single example."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@torch.no_grad()
def score(model: nn.Module, data: EncodedBabi, device: torch.device | str = "cpu") -> BabiScore:
    """Accuracy and loss of `model` (in eval mode, as it is left) on encoded questions."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64)
    hits = torch.zeros(len(data.answers), dtype=torch.bool)
    for batch in _batches(len(data.answers), EVAL_BATCH, None):
        logits = model(data.stories[batch].to(device), data.questions[batch].to(device)).float().cpu()
        answers = data.answers[batch]
        loss += F.cross_entropy(logits, answers, reduction="sum").double()
        hits[batch] = logits.argmax(-1).eq(answers)
    n = len(data.answers)
    per_task = {}
    for task in data.tasks.unique().tolist():
        if task:
            of_task = hits[data.tasks == task]
            per_task[task] = int(of_task.sum()) / len(of_task)
    return BabiScore(int(hits.sum()) / n, loss.item() / n, n, per_task, data.unknown_words)


@dataclass(frozen=True)
class BabiRun:
    """What `train_babi` did: the model of its best epoch (in eval mode), the checkpoint it wrote, its figures."""

    model: nn.Module
    checkpoint: Path
    kind: str
    val_accuracy: float
    best_epoch: int  # 1-based
    epochs: int
    seconds_per_epoch: float
    test: BabiScore | None

    def summary(self) -> dict:
        """The record of the final JSON line of `synaptorch babi train`."""
        record = {"model": self.kind}
        if self.test is not None:
            record.update(self.test.summary())
        record.update(
            val_accuracy=self.val_accuracy,
            best_epoch=self.best_epoch,
            epochs=self.epochs,
            seconds_per_epoch=round(self.seconds_per_epoch, 3),
            checkpoint=str(self.checkpoint),
        )
        return record


class _MetricsLog:
    """metrics.jsonl of a run, begun anew: a record a line, each flushed to the disk."""

    def __init__(self, out: Path) -> None:
        self.path = out / METRICS
        atomic_write_text(self.path, "")

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _better(record: dict, best: dict) -> bool:
    """A higher validation accuracy, or the same at a lower validation loss: a small validation set
    reaches 100% long before the model stops improving."""
    return (record["val_accuracy"], -record["val_loss"]) > (best["val_accuracy"], -best["val_loss"])


def _learning_rate(config: BabiTrainConfig, epoch: int, linear_start: bool) -> float:
    if isinstance(config, MemN2NTrainConfig):
        return config.learning_rate(epoch, linear_start)
    return config.learning_rate(epoch)


def _epochs(
    model: nn.Module,
    config: BabiTrainConfig,
    train: EncodedBabi,
    val: EncodedBabi,
    seed: int,
    device: torch.device,
    bar: tqdm,
) -> Iterator[dict]:
    """Train epoch after epoch; yields each epoch's record, after which the model is in eval mode."""
    if isinstance(config, MemN2NTrainConfig):
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    linear_start = bool(getattr(model, "linear", False))  # MemN2N's linear start, for the whole run's rates
    generator = torch.Generator().manual_seed(seed)
    stories, questions, answers = (t.to(device) for t in (train.stories, train.questions, train.answers))
    previous_val_loss = math.inf
    for epoch in range(config.epochs):
        start = time.perf_counter()
        lr = _learning_rate(config, epoch, linear_start)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum, correct = 0.0, 0
        for batch in _batches(len(answers), config.batch_size, generator):
            batch = batch.to(device)
            logits = model(stories[batch], questions[batch])
            loss = F.cross_entropy(logits, answers[batch])
            total = loss * len(batch) if getattr(config, "summed_loss", False) else loss
            total = total + model.l2_penalty() if hasattr(model, "l2_penalty") else total
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            correct += int(logits.argmax(-1).eq(answers[batch]).sum())
            bar.update(1)
        if not math.isfinite(loss_sum):
            raise DataError(f"training diverged in epoch {epoch + 1} (loss {loss_sum})")
        validation = score(model, val, device)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / len(answers),
            "train_accuracy": correct / len(answers),
            "val_loss": validation.loss,
            "val_accuracy": validation.accuracy,
        }
        if getattr(model, "linear", False):
            record["linear_start"] = True
            if validation.loss >= previous_val_loss:
                model.end_linear_start()
                record["linear_start_ends"] = True
        previous_val_loss = validation.loss
        record["seconds"] = round(time.perf_counter() - start, 3)
        bar.set_postfix(epoch=epoch + 1, loss=f"{record['train_loss']:.3f}", val_acc=f"{validation.accuracy:.3f}")
        yield record


def train_babi(
    kind: str,
    train: str | Path | Sequence[str | Path],
    test: str | Path | Sequence[str | Path] | None,
    out: str | Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
    model_overrides: dict | None = None,
) -> BabiRun:
    """Train model `kind` (a key of `MODELS`) on bAbI files into the run folder `out`.

    `train` and `test` are files or folders of bAbI files (a folder gives its `_train.txt`, or
    `_test.txt`, files); `test` None skips the test. `epochs` replaces the reference count;
    `model_overrides` sets fields of the model's config. Everything is checked and read before
    the run folder is touched; a folder that already holds a checkpoint is refused.
    """
    check_model_kind(kind)
    out = check_run_folder(out)
    train_files = _files(train, "train")
    test_files = _files(test, "test") if test is not None else []
    test_samples = _read(test_files)
    samples, train_samples, val_samples = [], [], []
    for path in train_files:  # each file gives its own tenth, so that every task of a joint run validates
        of_file = read_babi_file(path)
        kept, held_out = split_validation(of_file)
        samples += of_file
        train_samples += kept
        val_samples += held_out
    if not train_samples or not val_samples:
        raise DataError(f"{len(samples)} training questions are too few to keep a tenth of them for validation")
    tasks = _tasks(samples)
    config = reference_training(kind, tasks[0] if len(tasks) == 1 else None, epochs)
    vocabulary = Vocabulary.from_samples(samples)
    layout = BabiLayout.fit(samples, test_samples, time_words=_uses_time_words(kind, model_overrides))
    train_data, val_data = (encode_samples(s, vocabulary, layout) for s in (train_samples, val_samples))
    test_data = encode_samples(test_samples, vocabulary, layout) if test_samples else None
    torch_device = pick_device(device)

    torch.manual_seed(seed)
    model = build_model(kind, train_data.n_embeddings, layout, model_overrides).to(torch_device)
    if progress:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"training {kind} ({n_params:,} parameters) on {len(train_samples):,} train / {len(val_samples):,} val"
            f" / {len(test_samples):,} test questions ({_tasks_named(tasks)}),"
            f" {config.epochs} epochs, device {torch_device}",
            file=sys.stderr,
        )
    lock = FolderLock(out, "run folder")
    try:
        check_run_folder(out)  # again, now that no other run can write there
        log = _MetricsLog(out)
        batches = len(_batches(len(train_samples), config.batch_size, None))
        best: dict | None = None
        best_state: dict[str, Tensor] = {}
        seconds = []
        linear_start_ended = None
        with tqdm(
            total=config.epochs * batches, disable=not progress, unit="batch", dynamic_ncols=True, file=sys.stderr
        ) as bar:
            for record in _epochs(model, config, train_data, val_data, seed, torch_device, bar):
                log.write(record)
                seconds.append(record["seconds"])
                if record.get("linear_start_ends"):
                    linear_start_ended = record["epoch"]
                if best is None or _better(record, best):
                    best = record
                    best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        model.load_state_dict(best_state)
        test_score = score(model, test_data, torch_device) if test_data is not None else None
        training = {
            "config_class": type(config).__name__,
            **dataclasses.asdict(config),
            "seed": seed,
            "best_epoch": best["epoch"],
            "val_accuracy": best["val_accuracy"],
            "seconds_per_epoch": sum(seconds) / len(seconds),
            "linear_start_ended": linear_start_ended,
            "device": str(torch_device),
        }
        meta = {
            "format": FORMAT,
            "synaptorch_version": __version__,
            "model_kind": kind,
            "model": dataclasses.asdict(model.config),
            "vocabulary": vocabulary.words,
            "layout": dataclasses.asdict(layout),
            "training": training,
            "data": {"train": _describe(train_files, samples), "test": _describe(test_files, test_samples)},
            "tasks": tasks,
        }
        if test_score is not None:
            meta["test"] = test_score.summary()
        checkpoint = save_checkpoint(out / CHECKPOINT, model, meta)
    finally:
        lock.release()
    return BabiRun(
        model,
        checkpoint,
        kind,
        best["val_accuracy"],
        best["epoch"],
        config.epochs,
        training["seconds_per_epoch"],
        test_score,
    )


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict) -> Path:
    """Write `config.json` (meta) and `model.safetensors` (the model's state) as one folder, atomically."""

    def write(tmp: Path) -> None:
        save_file({name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}, tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")

    return write_folder_atomically(folder, write)


@dataclass
class BabiCheckpoint:
    """A trained model with the vocabulary and layout it reads its questions through."""

    model: nn.Module
    vocabulary: Vocabulary
    layout: BabiLayout
    meta: dict
    folder: Path

    def encode(self, samples: Sequence[BabiSample]) -> EncodedBabi:
        return encode_samples(samples, self.vocabulary, self.layout)


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint folder itself, or the one inside a run folder."""
    path = Path(path)
    if not (path / CONFIG).is_file() and (path / CHECKPOINT / CONFIG).is_file():
        return path / CHECKPOINT
    return path


def load_checkpoint(path: str | Path, device: str = "cpu") -> BabiCheckpoint:
    """The model of a bAbI checkpoint folder (or of a run folder), in eval mode; weights from safetensors only."""
    folder = checkpoint_folder(path)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint not found: {folder}")
    meta = read_json(folder / CONFIG)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder} is not a bAbI checkpoint of synaptorch (no format {FORMAT!r} in {CONFIG})")
    try:
        kind, layout = meta["model_kind"], BabiLayout(**meta["layout"])
        vocabulary = Vocabulary(meta["vocabulary"])
        if kind not in MODELS:
            raise CheckpointError(f"{folder}: unknown model {kind!r}")
        entry = MODELS[kind]
        model = entry.model_class(entry.config_class(**meta["model"]))
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{folder / CONFIG} is damaged: {type(exc).__name__}: {exc}") from None
    if vocabulary.words != meta["vocabulary"]:
        raise CheckpointError(f"{folder / CONFIG}: the vocabulary is not in the order it was saved in")
    state = load_safetensors(folder / WEIGHTS)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{folder / WEIGHTS} does not fit the model of {CONFIG}: {first}") from None
    torch_device = pick_device(device)
    return BabiCheckpoint(model.to(torch_device).eval(), vocabulary, layout, meta, folder)


def evaluate(
    checkpoint: str | Path | BabiCheckpoint, test: str | Path | Sequence[str | Path], device: str = "cpu"
) -> BabiScore:
    """The score of a checkpoint (a folder, a run folder, or one loaded) on test files or folders.
    Words the checkpoint's vocabulary lacks are read as the unknown word and counted in the score."""
    loaded = checkpoint if isinstance(checkpoint, BabiCheckpoint) else load_checkpoint(checkpoint, device)
    samples = _read(_files(test, "test"))
    return score(loaded.model, loaded.encode(samples), next(loaded.model.parameters()).device)
