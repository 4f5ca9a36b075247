"""A sweep on the real server: the controller thread that the app's lifespan starts, the
workers' batches, the long poll, and the dashboard's sweeps in headless Chromium."""

from __future__ import annotations

import os
import shutil
import time

import httpx
import pytest

from tests.helpers import seed_example
from tests.unit.store.test_wal_checkpoint import rows_in_main_file

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_a_sweep_runs_on_the_server_and_the_dashboard_lists_it(server_factory):
    server = server_factory(workers=1).start()
    d = seed_example()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        # version 1 of the name, served by name (and so held in predict's name cache)
        job = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 100,
                                          "model_name": "e2e-best"}).json()
        job = http.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
        assert job["status"] == "succeeded", job
        answer = http.post("/predict", json={"model": "e2e-best", "x": [[1.0]]}).json()
        assert answer["model_id"] == job["model_id"]
        r = http.post("/v1/sweeps", json={
            "job": {"x": d["x"], "y": d["y"], "epochs": 2000, "seed": 0},
            "search_space": {"optimizer.lr": {"choice": [0.001, 0.004, 0.008]},
                             "optimizer.momentum": {"choice": [0, 0.5]}},
            "strategy": "grid", "model_name": "e2e-best"})
        assert r.status_code == 202, r.text
        sweep = http.get(f"/v1/sweeps/{r.json()['id']}", params={"wait": 60}).json()
        assert sweep["status"] == "succeeded", sweep
        assert sweep["progress"]["succeeded"] == 6
        assert {t["engine_used"] for t in sweep["trials"]} == {"closed_form"}
        best = http.get("/v1/models", params={"name": "e2e-best"}).json()["data"][0]
        assert best["id"] == sweep["model_id"] == sweep["best"]["model_id"]
        assert best["version"] == 2
        # the worker whose batch ended the sweep registered the winner: predict by the
        # name follows (the catalog counter it bumped), with no restart
        deadline = time.monotonic() + 2
        while (served := http.post("/predict", json={"model": "e2e-best", "x": [[1.0]]})
               .json()["model_id"]) != sweep["model_id"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served == sweep["model_id"]
    # the server's watcher copies the WAL into the database file within a second or so (the
    # commits themselves no longer do it below 40 MB of WAL)
    deadline = time.monotonic() + 5
    while (n := rows_in_main_file(server.data_dir / "fitserve.db", "sweeps",
                                  server.data_dir.parent)) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert n == 1

    chromium = shutil.which("chromium")
    if chromium is None:
        msg = "the browser half needs Debian's chromium (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{server.url}/")
            row = f"#sweep-{sweep['id']}"
            page.wait_for_selector(f'{row}[data-status="succeeded"]')
            assert page.text_content(f"{row} .trials").strip() == "6 / 6"
            assert float(page.text_content(f"{row} .best")) == pytest.approx(
                sweep["best"]["value"], rel=1e-4)
            page.wait_for_selector(f"#sweep-trials #trial-{sweep['best']['trial']}")
            assert page.locator("#sweep-trials tbody tr").count() == 6
            assert errors == []
        finally:
            browser.close()
