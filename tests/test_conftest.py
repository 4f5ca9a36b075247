"""The test processes' own set-up (tests/conftest.py) does what it says."""

from __future__ import annotations

import httpx


def test_httpx_clients_share_one_tls_context():
    # conftest's patch sits where httpx's transport builds a client's context: if httpx
    # moves it, this fails instead of every client quietly paying 35 ms again
    contexts = []
    for client in (httpx.Client(), httpx.Client(timeout=5)):
        with client:
            contexts.append(client._transport._pool._ssl_context)  # type: ignore[attr-defined]
    assert contexts[0] is contexts[1]
    assert contexts[0].verify_mode.name == "CERT_REQUIRED"  # still the verifying default
    with httpx.Client(verify=False) as own:
        assert own._transport._pool._ssl_context is not contexts[0]  # type: ignore[attr-defined]
