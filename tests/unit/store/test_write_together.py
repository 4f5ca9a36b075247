"""A batch's new files written together (``artifacts.write_atomic_together``): each under its
own name, made durable at the block's end, all of them removed when the block or its sync
fails; and ``artifacts.flush_early``: the filesystem's unwritten data set going in a thread
of its own (the batch's final sync then finds little else to write), one at a time, the
caller never waiting for it."""

from __future__ import annotations

import os
import stat
import threading
from types import SimpleNamespace

import pytest

from service.store import artifacts


def test_the_files_are_kept_whole_private_and_closed_at_the_blocks_end(tmp_path):
    paths = [tmp_path / "ck" / f"mdl_{i}.safetensors" for i in range(3)]
    with artifacts.write_atomic_together() as batch:
        for i, path in enumerate(paths):
            batch.add(path, bytes([i]) * 1000)
        fds = list(batch.files.values())
    assert [p.read_bytes() for p in paths] == [bytes([i]) * 1000 for i in range(3)]
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {0o600}  # as mkstemp's
    for fd in fds:  # closed
        with pytest.raises(OSError):
            os.fstat(fd)


@pytest.mark.parametrize("where", ["block", "sync"])
def test_a_failure_in_the_block_or_its_sync_removes_every_file(tmp_path, monkeypatch, where):
    def full(fds):
        raise OSError(28, "No space left on device")

    if where == "sync":
        monkeypatch.setattr(artifacts, "_sync_all", full)
    with pytest.raises(OSError), artifacts.write_atomic_together() as batch:
        for i in range(3):
            batch.add(tmp_path / f"mdl_{i}.safetensors", b"x" * 100)
        if where == "block":
            full([])
    assert list(tmp_path.iterdir()) == []


def test_a_name_that_exists_is_refused_and_left_as_it_was(tmp_path):
    taken = tmp_path / "mdl_0.safetensors"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError), artifacts.write_atomic_together() as batch:
        batch.add(tmp_path / "mdl_1.safetensors", b"ours")
        batch.add(taken, b"ours")
    assert taken.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mdl_0.safetensors"]


def test_the_flush_runs_in_its_own_thread_one_at_a_time(tmp_path, monkeypatch):
    release, called = threading.Event(), []

    def syncfs(fd: int) -> int:
        called.append(os.fstat(fd).st_ino)
        release.wait(10)
        return 0

    monkeypatch.setattr(artifacts, "_libc_syncfs", lambda: syncfs)
    assert artifacts._FLUSHING.acquire(timeout=60)  # a batch's real flush, if one runs, ends
    artifacts._FLUSHING.release()
    before = set(threading.enumerate())
    artifacts.flush_early(tmp_path)  # returns while the flush is still held
    flushing = [t for t in threading.enumerate()
                if t not in before and t.name == "fitserve-flush-early"]
    assert len(flushing) == 1 and flushing[0].is_alive()
    artifacts.flush_early(tmp_path)  # one runs: no second one
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()
            and t.name == "fitserve-flush-early"] == flushing
    release.set()
    flushing[0].join(10)
    assert called == [os.stat(tmp_path).st_ino]  # the filesystem of that folder
    artifacts.flush_early(tmp_path)  # that one ended: the next may start
    for t in threading.enumerate():
        if t not in before and t.name == "fitserve-flush-early":
            t.join(10)
    assert called == [os.stat(tmp_path).st_ino] * 2


def test_nothing_is_done_without_syncfs_or_the_folder(tmp_path, monkeypatch):
    started: list[object] = []
    monkeypatch.setattr(artifacts, "threading",
                        SimpleNamespace(Thread=lambda **kw: started.append(kw)))
    monkeypatch.setattr(artifacts, "_libc_syncfs", lambda: None)
    artifacts.flush_early(tmp_path)
    monkeypatch.setattr(artifacts, "_libc_syncfs", lambda: lambda fd: 0)
    artifacts.flush_early(tmp_path / "missing")
    assert started == []
