"""The HTML pages (docs, dashboard) load nothing from outside the app (rendering: tests/e2e)."""

from __future__ import annotations

import re

import pytest

_EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)


def _local_assets(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["'](/[^"']+)["']""", html)


@pytest.mark.parametrize(("path", "asset"), [
    ("/docs", "/static/docs/swagger-ui-bundle.js"),
    ("/redoc", "/static/docs/redoc.standalone.js"),
])
def test_docs_pages_use_the_apps_own_assets(client, path, asset):
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not _EXTERNAL.search(r.text), "the page loads something from outside the app"
    assert "fonts.googleapis" not in r.text and "cdn" not in r.text.lower()
    assets = _local_assets(r.text)
    assert asset in assets
    for a in assets:
        got = client.get(a)
        assert got.status_code == 200 and len(got.content) > 1000, a


def test_the_bundled_swagger_ui_is_version_5(client):
    # FastAPI writes OpenAPI 3.1; Swagger UI 4 shows "Unable to render this definition"
    bundle = client.get("/static/docs/swagger-ui-bundle.js").text
    assert "OpenAPI31Strategy" in bundle  # Swagger UI 5's OpenAPI 3.1 support


def test_the_dashboard_is_one_self_contained_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not _EXTERNAL.search(r.text)
    assert "<script src" not in r.text  # its script is inline
    for link in ("/docs", "/redoc", "/metrics"):
        assert f'href="{link}"' in r.text
    for api in ("/v1/jobs?limit=", "/v1/models?limit=", "/events", "/history", "/plot.png",
                "/loss.png"):
        assert api in r.text


def test_the_oauth2_redirect_page_is_served(client):
    r = client.get("/docs/oauth2-redirect")
    assert r.status_code == 200 and "oauth2" in r.text.lower()


def test_an_app_that_went_away_is_collected(settings):
    """Nothing process-wide keeps an app: FastAPI caches every endpoint in module-level
    caches, and the docs pages, which closed over their app, kept every app a process built
    (437 of them, 4.3 million objects, in one test process; 25 s of its exit)."""
    import gc
    import weakref

    from fastapi.testclient import TestClient

    from service.main import create_app

    app = create_app(settings, start_workers=False)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/docs").status_code == 200 and c.get("/redoc").status_code == 200
        assert c.get("/healthz").status_code == 200
    gone = weakref.ref(app)
    del app, c
    gc.collect()
    assert gone() is None
