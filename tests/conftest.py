import gzip
import hashlib
import json
import random
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from synaptorch.cli import main
from synaptorch.data.images import MNIST_FILES
from synaptorch.models.bdh import BDH, BDHConfig

# The models under test are tiny: intra-op threads only add overhead, and on a busy 2-core machine
# spinning OpenMP workers make each small op orders of magnitude slower.
torch.set_num_threads(1)

TINY_MODEL = ("--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-neuron", "32", "--dropout", "0.1")
TINY_TRAIN = (
    *("--batch-size", "4", "--block-size", "16", "--warmup-steps", "2"),
    *("--eval-tokens", "256", "--device", "cpu", "--sample-tokens", "0", "--quiet"),
)
WORDS = ["the", "a", "neuron", "fires", "and", "synapse", "grows", "between", "two", "cells", "when", "they"]


def _make_text(n_words: int = 800, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n_words // 12)]
    return "\n".join(lines) + "\n"


def _read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


# Helpers are handed out as fixtures so that tests need no import path tricks.


def _assert_user_error(result, fragment: str) -> None:
    """Exit code 2, one line on stderr naming the problem, and no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment.lower() in lines[0].lower()
    assert "Traceback" not in result.output


@pytest.fixture(scope="session")
def assert_user_error():
    """Check that a command line result is a user error: exit code 2 and one line `error: ...` with `fragment`."""
    return _assert_user_error


@pytest.fixture(scope="session")
def make_text():
    """Deterministic word salad of about 5 KB: enough for train and val splits of a 16-token block."""
    return _make_text


@pytest.fixture(scope="session")
def read_metrics():
    """The records of a run's metrics.jsonl."""
    return _read_metrics


@pytest.fixture(scope="session")
def train_losses():
    """{step: train_loss} from a run's metrics.jsonl."""
    return lambda run: {r["step"]: r["train_loss"] for r in _read_metrics(run) if "train_loss" in r}


@pytest.fixture(scope="session")
def snapshot():
    """{relative path: sha256} of every file below a folder."""
    return _snapshot


@pytest.fixture(scope="session")
def make_word_tokenizer():
    """Write a word-level tokenizer.json (one id per word, [UNK] is 0) and return its path."""

    def write(path: Path, words=("the", "neuron", "fires")) -> Path:
        from tokenizers import Tokenizer, models, pre_tokenizers

        vocab = {word: i for i, word in enumerate(["[UNK]", *words])}
        tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.save(str(path))
        return Path(path)

    return write


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Token caches and downloads go to a fresh folder, never to ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SYNAPTORCH_CACHE", str(path))
    return path


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    # Relative defaults such as `--out runs/bdh` must never land in the repository.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A small text corpus shared by all tests; read-only."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(_make_text())
    return path


@pytest.fixture(scope="session")
def cli():
    """Run the command line in-process; returns click's Result (stdout and stderr apart)."""

    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    return invoke


@pytest.fixture(scope="session")
def tiny_args(corpus) -> tuple:
    """`train` flags of a tiny model on the small corpus; click keeps the last of repeated flags."""
    return ("--data", corpus, *TINY_MODEL, *TINY_TRAIN)


@pytest.fixture(scope="session")
def tiny_train(cli, tiny_args):
    """Train a tiny model into `out`; `extra` flags come last and win."""

    def run(out, *extra):
        return cli("train", "--out", out, *tiny_args, *extra)

    return run


@dataclass
class TrainedRun:
    path: Path
    stdout: str


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_train) -> TrainedRun:
    """One 4-step run shared by the tests that only read it: checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNAPTORCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        result = tiny_train(
            out, "--max-steps", 4, "--eval-interval", 2, "--log-interval", 1, "--keep-last", 5, "--sample-tokens", 30
        )
    assert result.exit_code == 0, result.output
    return TrainedRun(out, result.stdout)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run, for tests that damage or extend it."""
    return Path(shutil.copytree(trained_run.path, tmp_path / "run"))


@pytest.fixture(scope="session")
def word_salad_tokens() -> np.ndarray:
    """About 15 KB of word salad as byte tokens."""
    return np.frombuffer(_make_text(3000).encode(), dtype=np.uint8).astype(np.int64)


@pytest.fixture(scope="session")
def small_trained_bdh(word_salad_tokens) -> BDH:
    """A 2-layer BDH trained for a few seconds on the first 12,000 word-salad tokens, so its
    predictions are confident. Shared: tests copy it before changing it."""
    torch.manual_seed(0)
    model = BDH(BDHConfig(n_layer=2, n_embd=32, n_head=2, n_neuron=64, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    train = torch.from_numpy(word_salad_tokens[:12000])
    for _ in range(120):
        starts = torch.randint(len(train) - 33, (8,), generator=generator)
        batch = torch.stack([train[s : s + 33] for s in starts.tolist()])
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 2.0  # well below the 5.5 of a uniform guess over bytes
    return model.eval()


@pytest.fixture(scope="session")
def layer_recorder():
    """recorder(records) -> an observer for forward(idx, observe) that keeps every layer's tensors."""
    return lambda records: lambda layer, **tensors: records.append(tensors)


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = b"\x00\x00\x08" + bytes([array.dim()]) + b"".join(struct.pack(">I", n) for n in array.shape)
    path.write_bytes(gzip.compress(header + array.to(torch.uint8).numpy().tobytes()))


def _clustered_images(n: int, side: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class decides which block of pixels is bright: easy for any rule."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=generator)
    images = torch.randint(0, 60, (n, side * side), generator=generator)
    block = side * side // n_classes
    for c in range(n_classes):
        images[labels == c, c * block : (c + 1) * block] += 180
    return images.clamp(max=255).view(n, side, side), labels


@pytest.fixture(scope="session")
def clustered():
    """(n, side, n_classes, seed) -> uint8 images (n, side, side) and labels (n,) of an easy task."""
    return _clustered_images


@pytest.fixture
def idx_folder(tmp_path) -> Path:
    """An MNIST-style folder of 6 x 6 images in 3 classes: 600 to train, 300 to test."""
    folder = tmp_path / "images"
    folder.mkdir()
    for split, n, seed in (("train", 600, 0), ("test", 300, 1)):
        images, labels = _clustered_images(n, 6, 3, seed)
        images_stem, labels_stem = MNIST_FILES[split]
        write_idx(folder / (images_stem + ".gz"), images)
        write_idx(folder / (labels_stem + ".gz"), labels)
    return folder


@pytest.fixture(scope="session")
def parameters_stepped():
    """(model, x, y) -> for each optimiser step of one `model.train_batch(x, y)`, the ids of the
    parameters that held a gradient: what that step's loss reached."""

    def run(model, x, y) -> list[set[int]]:
        stepped = []
        original = model.optimizer.step

        def record_step(*args, **kwargs):
            groups = model.optimizer.param_groups
            stepped.append({id(p) for group in groups for p in group["params"] if p.grad is not None})
            return original(*args, **kwargs)

        model.optimizer.step = record_step
        model.train_batch(x, y, progress=0.0)
        return stepped

    return run
