"""Logging set-up: JSON lines on stderr, each carrying the id of the request it served."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
from contextvars import ContextVar

import orjson

request_id: ContextVar[str | None] = ContextVar("fitserve_request_id", default=None)
"""The id of the request being served (set by the HTTP middleware), for every log line."""


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            rid = request_id.get()
            if rid is not None:
                record.request_id = rid
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


QUIET = {"alembic": logging.WARNING}
"""Libraries whose INFO lines are their internals: alembic says a line per plugin, one for
its context and one per revision at every start (``migrate.upgrade`` says one instead)."""


class _LineQueueHandler(logging.handlers.QueueHandler):
    """Formats the JSON line where the record is made (the request id is a context
    variable of that thread or task) and hands the finished line to the writer thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        line = self.format(record)
        record = logging.makeLogRecord({**record.__dict__, "msg": line, "args": None,
                                        "exc_info": None, "exc_text": None})
        return record


_listener: logging.handlers.QueueListener | None = None


def _stop_listener() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()  # writes what is queued first
        _listener = None


def flush_logs() -> None:
    """Write every queued line now (the writer thread goes on after)."""
    if _listener is not None:
        _listener.stop()
        _listener.start()


def configure_logging(level: str = "info", background: bool = False) -> None:
    """JSON lines on stderr. ``background`` (the API server): the lines are written by a
    thread of their own, so that a slow stderr (a full pipe, a busy terminal) never holds
    the event loop, which only formats each line and queues it."""
    global _listener
    _stop_listener()
    root = logging.getLogger()
    writer = logging.StreamHandler(sys.stderr)
    handler: logging.Handler
    if background:
        writer.setFormatter(logging.Formatter("%(message)s"))  # the line is made already
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        handler = _LineQueueHandler(lines)
        _listener = logging.handlers.QueueListener(lines, writer)
        _listener.start()
        atexit.register(_stop_listener)
    else:
        handler = writer
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in QUIET.items():
        # the "debug" log level still shows them all
        logging.getLogger(name).setLevel(
            root.level if root.level <= logging.DEBUG else max(quiet, root.level))
