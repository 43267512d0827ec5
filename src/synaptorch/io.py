"""Durable files and folders, and loads that never unpickle: the I/O every part of synaptorch shares.

A file or folder is written under a temporary name beside its target, fsynced, renamed into
place, and the parent folder fsynced, so a crash leaves either the old version or the new one,
never a half-written mix. Replacing an existing folder takes two renames (old aside, new in);
`recover_folder` finishes or undoes that after a crash between them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import torch

from synaptorch.errors import CheckpointError, ConfigError, SynaptorchError

TMP_TAG = ".tmp"  # `.NAME.tmpPID`: a folder or file being written
OLD_TAG = ".old"  # `.NAME.oldPID`: the previous version of a folder during its replacement


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder, deepest first."""
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(Path(root) / name)
        for name in dirs:
            fsync_path(Path(root) / name)
    fsync_path(folder)


def make_folder(folder: str | Path) -> Path:
    """Make `folder` and its missing parents, each new one's entry flushed to the disk with its parent."""
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        fsync_path(made.parent)
    return folder


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file open for writing that becomes `path` when the block ends: written under a
    temporary name, fsynced, renamed into place and the rename fsynced; a failed block leaves
    `path` as it was and no temporary file."""
    path = Path(path)
    make_folder(path.parent)
    tmp = _sibling(path, TMP_TAG)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` through a fsynced temporary file and a rename."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _sibling(folder: Path, tag: str) -> Path:
    return folder.with_name(f".{folder.name}{tag}{os.getpid()}")


def _writer_gone(pid: int) -> bool:
    """Whether the process that named a leftover after itself has ended (this one counts as ended:
    its own writes clean up after themselves, so what is left is from an attempt that failed)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def _leftovers(folder: Path, tag: str) -> list[Path]:
    """The `.NAME<tag>PID` siblings of `folder` whose writing process has ended; a live writer's are its own."""
    prefix = f".{folder.name}{tag}"
    parent = folder.parent
    if not parent.is_dir():
        return []
    found = []
    for p in parent.iterdir():
        pid = p.name[len(prefix) :]
        if p.name.startswith(prefix) and pid.isdigit() and _writer_gone(int(pid)):
            found.append(p)
    return sorted(found)


def recover_folder(folder: str | Path) -> list[str]:
    """Repair what a crash inside `write_folder_atomically(folder, ...)` (or `atomic_write_bytes` to
    it) left; returns what was done. Leftovers of a process still running are left alone.

    A half-written temporary copy is deleted. A previous version set aside, with no folder in
    its place, is the crash between the two renames: it is put back. With the new folder in
    place, the old one is deleted.
    """
    folder = Path(folder)
    done = []
    for tmp in _leftovers(folder, TMP_TAG):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        done.append(f"removed the unfinished {tmp.name}")
    for old in _leftovers(folder, OLD_TAG):
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed the replaced {old.name}")
        else:
            os.replace(old, folder)
            fsync_path(folder.parent)
            done.append(f"restored {folder.name} from {old.name}")
    return done


def write_folder_atomically(folder: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_folder)`, fsync what it wrote, and move the finished folder to `folder`.

    An existing `folder` is replaced only after the new one is complete and on disk; at every
    moment either it or its previous version exists under a name `recover_folder` knows.
    """
    folder = Path(folder)
    make_folder(folder.parent)
    recover_folder(folder)
    tmp = _sibling(folder, TMP_TAG)
    tmp.mkdir()
    try:
        write(tmp)
        fsync_tree(tmp)
        if folder.exists():
            old = _sibling(folder, OLD_TAG)
            os.replace(folder, old)
            os.replace(tmp, folder)
            fsync_path(folder.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
        fsync_path(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def check_folder_path(folder: str | Path, option: str) -> None:
    """Refuse, before any work is done, a path that cannot become a folder: it or a parent is a file."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} exists and is not a folder")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"{option} {folder} cannot be made: {blocking} is a file")


def check_run_folder(out: str | Path, checkpoint: str = "checkpoint") -> Path:
    """Refuse a run folder that cannot be made or that already holds a checkpoint, before any work."""
    out = Path(out)
    check_folder_path(out, "run folder")
    if (out / checkpoint).exists():
        raise ConfigError(f"{out} already holds a checkpoint ({out / checkpoint}); choose another run folder")
    return out


def read_json(path: str | Path, error: type[SynaptorchError] = CheckpointError) -> object:
    """The JSON value in `path`; a missing, unreadable or malformed file is `error`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"corrupt {path}: {exc}") from None


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or foreign file is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(path, device=str(device))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt or truncated {path}: {exc}") from None


def load_torch_state(path: str | Path) -> dict:
    """A `torch.save`d dict of tensors and plain values, read with `weights_only=True` (no pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"corrupt or untrusted {path}: {type(exc).__name__}") from None


def recover_leftovers(parent: str | Path) -> list[str]:
    """`recover_folder` for every file or folder of `parent` that a crash left a temporary or old copy of."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    targets = set()
    for p in parent.iterdir():
        for tag in (TMP_TAG, OLD_TAG):
            name, sep, pid = p.name[1:].rpartition(tag)
            if p.name.startswith(".") and sep and pid.isdigit():
                targets.add(name)
    return [message for name in sorted(targets) for message in recover_folder(parent / name)]


class FolderLock:
    """An advisory lock on a folder (flock on the folder itself), held until `release` or the
    process ends. A second holder, in this process or another, is refused at once with a
    ConfigError. Nothing is written: a refused command leaves the folder as it was."""

    def __init__(self, folder: str | Path, what: str = "folder") -> None:
        import fcntl

        folder = make_folder(folder)
        self._fd: int | None = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise ConfigError(f"{what} {folder} is in use by another process; wait for it or choose another") from None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __del__(self) -> None:
        self.release()
