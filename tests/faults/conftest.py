"""Fixtures of the fault suite: real servers (``fitserve serve`` subprocesses) from the e2e
suite's factory."""

from __future__ import annotations

from tests.e2e.conftest import ServerProcess, free_port, server_factory

__all__ = ["ServerProcess", "free_port", "server_factory"]
