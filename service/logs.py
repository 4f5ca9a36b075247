"""Logging set-up: JSON lines on stderr, each carrying the id of the request it served."""

from __future__ import annotations

import logging
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


def configure_logging(level: str = "info") -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in QUIET.items():
        # the "debug" log level still shows them all
        logging.getLogger(name).setLevel(
            root.level if root.level <= logging.DEBUG else max(quiet, root.level))
