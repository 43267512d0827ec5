"""Durable writes: fsync before rename, and the repair of what a crash between two renames leaves."""

import os
import subprocess
from pathlib import Path

import pytest

from synaptorch import io
from synaptorch.checkpoint import step_checkpoints
from synaptorch.io import atomic_write_bytes, recover_folder, recover_leftovers, write_folder_atomically
from synaptorch.train.trainer import Trainer


def test_files_and_folders_are_on_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_replace, real_fsync = os.replace, io.fsync_path
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append(("rename", str(a), str(b))), real_replace(a, b)))
    monkeypatch.setattr(io, "fsync_path", lambda p: (events.append(("fsync", str(p))), real_fsync(p)))

    def write(tmp):
        (tmp / "weights").write_bytes(b"w")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config").write_bytes(b"c")

    folder = write_folder_atomically(tmp_path / "ckpt", write)
    [(_, tmp, target)] = [e for e in events if e[0] == "rename"]
    assert target == str(folder)
    rename_at = events.index(("rename", tmp, target))
    synced = {e[1] for e in events[:rename_at] if e[0] == "fsync"}
    assert {f"{tmp}/weights", f"{tmp}/sub/config", f"{tmp}/sub", tmp} <= synced
    assert ("fsync", str(tmp_path)) in events[rename_at:]  # the rename itself is made durable

    events.clear()
    atomic_write_bytes(tmp_path / "file", b"data")
    kinds = [e[0] for e in events]
    assert kinds == ["rename", "fsync"] and events[1][1] == str(tmp_path)


def _ended_pid() -> int:
    """The process id of a process that has ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _old_and_new(tmp_path, pid=None):
    """What a crash between the two renames of a replacement leaves: the old folder set aside, no folder."""
    pid = pid or _ended_pid()
    old = tmp_path / f".ckpt.old{pid}"
    old.mkdir()
    (old / "weights").write_text("old")
    new = tmp_path / f".ckpt.tmp{pid}"
    new.mkdir()
    (new / "weights").write_text("half")
    return old, new


def test_a_crash_between_the_two_renames_loses_neither_version(tmp_path):
    _old_and_new(tmp_path)
    done = recover_folder(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert (tmp_path / "ckpt" / "weights").read_text() == "old"
    assert any("restored ckpt" in message for message in done)


def test_the_copies_of_a_writer_still_running_are_left_alone(tmp_path):
    live = os.getppid()  # a process that runs as long as this test does
    _old_and_new(tmp_path, pid=live)
    assert recover_folder(tmp_path / "ckpt") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".ckpt.old{live}", f".ckpt.tmp{live}"]


def test_a_crashed_atomic_file_write_is_cleaned_up(tmp_path):
    pid = _ended_pid()
    (tmp_path / f".metrics.jsonl.tmp{pid}").write_text("half")
    (tmp_path / "metrics.jsonl").write_text("whole")
    assert recover_leftovers(tmp_path) == [f"removed the unfinished .metrics.jsonl.tmp{pid}"]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_an_old_version_left_beside_its_replacement_is_removed(tmp_path):
    _old_and_new(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights").write_text("new")
    recover_folder(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert (tmp_path / "ckpt" / "weights").read_text() == "new"


def test_the_next_write_repairs_leftovers_first(tmp_path):
    _old_and_new(tmp_path)
    write_folder_atomically(tmp_path / "ckpt", lambda tmp: (tmp / "weights").write_text("newest"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert (tmp_path / "ckpt" / "weights").read_text() == "newest"


def test_recover_leftovers_names_only_what_it_repaired(tmp_path):
    _old_and_new(tmp_path)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".notes.tmpfile").mkdir()
    assert len(recover_leftovers(tmp_path)) == 2  # the unfinished copy removed, the old one restored
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".notes.tmpfile", "ckpt"]


def test_a_run_resumes_from_a_checkpoint_a_crash_left_set_aside(run_copy, capsys):
    latest = step_checkpoints(run_copy)[-1]
    os.replace(latest, latest.with_name(f".{latest.name}.old{_ended_pid()}"))
    trainer = Trainer.resume(run_copy, progress=False)
    assert trainer.step == 4 and latest.is_dir()
    assert f"restored {latest.name}" in capsys.readouterr().err
    trainer.close()


def test_metrics_are_replaced_not_rewritten_in_place_on_resume(run_copy):
    metrics = run_copy / "metrics.jsonl"
    with open(metrics, "a") as f:
        f.write('{"step": 5, "train_loss": 1.0}\n{"step": 6, "tr')  # a crash after step 4's checkpoint
    inode = metrics.stat().st_ino
    Trainer.resume(run_copy, progress=False).close()
    assert metrics.stat().st_ino != inode
    assert max(__import__("json").loads(line)["step"] for line in metrics.read_text().splitlines()) == 4


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_failed_write_leaves_no_temporary_behind(tmp_path, monkeypatch, what):
    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", disk_full)
    with pytest.raises(OSError, match="disk full"):
        if what == "folder":
            write_folder_atomically(tmp_path / "ckpt", lambda tmp: (tmp / "weights").write_text("w"))
        else:
            atomic_write_bytes(tmp_path / "file", b"data")
    assert list(tmp_path.iterdir()) == []


def test_a_resume_that_lost_nothing_leaves_the_metrics_file_alone(run_copy):
    metrics = run_copy / "metrics.jsonl"
    inode, text = metrics.stat().st_ino, metrics.read_text()
    Trainer.resume(run_copy, progress=False).close()
    assert metrics.stat().st_ino == inode and metrics.read_text() == text


def test_new_folders_are_recorded_in_their_parents(tmp_path, monkeypatch):
    synced = []
    real_fsync = io.fsync_path
    monkeypatch.setattr(io, "fsync_path", lambda p: (synced.append(Path(p)), real_fsync(p)))
    io.make_folder(tmp_path / "a" / "b")
    assert synced == [tmp_path, tmp_path / "a"]
    synced.clear()
    io.make_folder(tmp_path / "a" / "b")  # nothing new, nothing to flush
    assert synced == []
