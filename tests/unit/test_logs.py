"""The server's log lines are written by a thread of their own: the event loop only formats
and queues them, and none is lost at the end."""

from __future__ import annotations

import json
import logging
import threading

from service import logs


class _SlowStderr:
    """A stderr that takes its time (a full pipe): whoever writes to it waits."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.writers: set[str] = set()
        self.gate = threading.Event()

    def write(self, text: str) -> int:
        self.writers.add(threading.current_thread().name)
        self.gate.wait(5)
        self.lines.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_lines_are_written_off_the_caller_and_flushed_whole(monkeypatch):
    slow = _SlowStderr()
    monkeypatch.setattr(logs.sys, "stderr", slow)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure_logging("info", background=True)
        token = logs.request_id.set("req-1")
        try:
            logging.getLogger("service.test").info("answered %s", 200)
        finally:
            logs.request_id.reset(token)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("service.test").exception("failed")
        assert slow.lines == []  # the caller did not wait for the slow stderr
        slow.gate.set()
        logs.flush_logs()
        entries = [json.loads(line) for line in "".join(slow.lines).splitlines()]
        assert entries[0]["message"] == "answered 200" and entries[0]["request_id"] == "req-1"
        assert entries[1]["message"] == "failed" and "ValueError: boom" in entries[1]["exc"]
        assert threading.current_thread().name not in slow.writers
    finally:
        logs._stop_listener()
        root.handlers[:] = handlers
        root.setLevel(level)
