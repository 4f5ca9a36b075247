"""The client commands against the app in this process: ``fitserve ...`` through CliRunner,
its HTTP client wired to the ASGI app (no server, no port). A job is run here, the way a
worker would, when the CLI starts to follow it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import service.cli.client as cli_client
from service.cli import cli
from service.client import Client


@dataclass
class Cli:
    runner: CliRunner
    http: httpx.Client  # the app's TestClient, to set things up and check them

    def __call__(self, *args: str, env: dict[str, str] | None = None):
        return self.runner.invoke(cli, list(args), env={"COLUMNS": "80", **(env or {})})


class _AppTransport(httpx.BaseTransport):
    """The TestClient's transport, running the queued jobs before an event stream opens."""

    def __init__(self, inner: httpx.BaseTransport, run_queued: Callable[[], list[str]]) -> None:
        self.inner = inner
        self.run_queued = run_queued

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            self.run_queued()
        return self.inner.handle_request(request)


def wire(monkeypatch: pytest.MonkeyPatch, http: httpx.Client,
         run_queued: Callable[[], list[str]] = list) -> None:
    """Make the CLI's client talk to the app behind ``http`` (a TestClient)."""
    transport = _AppTransport(http._transport, run_queued)
    monkeypatch.setattr(cli_client, "Client", functools.partial(Client, transport=transport))


@pytest.fixture
def fs(client, run_queued, monkeypatch) -> Iterator[Cli]:
    monkeypatch.delenv("FITSERVE_API_KEY", raising=False)
    monkeypatch.delenv("FITSERVE_URL", raising=False)
    wire(monkeypatch, client, run_queued)
    yield Cli(CliRunner(), client)


@pytest.fixture
def seed_csv(tmp_path) -> Path:
    path = tmp_path / "seed.csv"
    path.write_text("x,y\n3.3,1.7\n4.4,2.76\n5.5,2.09\n6.71,3.19\n6.93,1.694\n4.168,1.573\n")
    return path
