"""``artifacts.flush_early``: the filesystem's unwritten data set going in a thread of its own
(a batch's final sync then finds little else to write); the caller does not wait for it."""

from __future__ import annotations

import os
import threading

from service.store import artifacts


def test_the_flush_runs_in_its_own_thread_and_the_caller_does_not_wait(tmp_path, monkeypatch):
    release, called = threading.Event(), []

    def syncfs(fd: int) -> int:
        called.append(os.fstat(fd).st_ino)
        release.wait(10)
        return 0

    monkeypatch.setattr(artifacts, "_libc_syncfs", lambda: syncfs)
    before = set(threading.enumerate())
    artifacts.flush_early(tmp_path)  # returns while the flush is still held
    flushing = [t for t in threading.enumerate()
                if t not in before and t.name == "fitserve-flush-early"]
    assert len(flushing) == 1 and flushing[0].is_alive()
    release.set()
    flushing[0].join(10)
    assert called == [os.stat(tmp_path).st_ino]  # the filesystem of that folder


def test_nothing_is_done_without_syncfs_or_the_folder(tmp_path, monkeypatch):
    started: list[object] = []
    monkeypatch.setattr(artifacts.threading, "Thread", lambda **kw: started.append(kw))
    monkeypatch.setattr(artifacts, "_libc_syncfs", lambda: None)
    artifacts.flush_early(tmp_path)
    monkeypatch.setattr(artifacts, "_libc_syncfs", lambda: lambda fd: 0)
    artifacts.flush_early(tmp_path / "missing")
    assert started == []
