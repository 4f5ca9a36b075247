"""schemathesis against the live /openapi.json of a real server: whatever the schema allows
(and, in negative mode, whatever it forbids), the server answers without a 5xx, with a status
code and content type it documents, and with a body that matches the documented schema.

schemathesis runs through its command line, ``st run``: that is its stable, documented
interface, and it runs every phase (examples, coverage of boundary values, fuzzing). Its
pytest loader for live servers, ``schemathesis.pytest.from_fixture``, fails on pytest 9.2
(it sets ``Function._nodeid``, which pytest 9.2 no longer has), and the collection-time
loader would need the server running while tests are collected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import seed_example, wait_for
from tests.security.conftest import StartServer

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

# per operation in the fuzzing phase: with the examples and the coverage phase's boundary
# values, some 1500 requests, every operation in every phase (30 doubles the time for little)
MAX_EXAMPLES = 10
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")


def _toml(value: object) -> str:
    # JSON strings, numbers and lists are valid TOML values
    return json.dumps(value)


def _config(auth_headers: dict[str, str], known: dict[str, list[str]]) -> str:
    """schemathesis.toml: fixed seed, deterministic generation, the checks, and the ids the
    server really has, so that half of the generated paths reach past the 404."""
    lines = [
        "seed = 5",
        "[generation]",
        f"max-examples = {MAX_EXAMPLES}",
        "deterministic = true",
        "[phases.stateful]",
        "enabled = false",
        "[checks]",
        "enabled = false",
        *(f"{c}.enabled = true" for c in CHECKS),
        "[headers]",
        *(f"{_toml(k)} = {_toml(v)}" for k, v in auth_headers.items()),
    ]
    for param, values in known.items():
        lines += [f"[dictionaries.{param}]", f"values = {_toml(values)}"]
    lines.append("[parameters]")
    lines += [f'"path.{param}" = {{ dictionary = "{param}", probability = 0.5 }}'
              for param in known]
    return "\n".join(lines) + "\n"


# above the run's own limit: the suite's 120 s per test is too short for it on a loaded machine
@pytest.mark.timeout(600)
def test_every_operation_answers_as_documented(
    start_server: StartServer, client_for, auth_headers: dict[str, str], tmp_path: Path
) -> None:
    # one worker, so that fuzzed jobs run (and fail or succeed) too; a small epochs cap
    # keeps each of them short
    server = start_server(workers=1, FITSERVE_MAX_EPOCHS="200", FITSERVE_ACCESS_LOG="false")
    http = client_for(server)
    d = seed_example()
    ds = http.post("/v1/datasets", json={"name": "seed", "x": d["x"], "y": d["y"]}).json()
    job = http.post("/v1/jobs", json={"dataset_id": ds["id"], "epochs": 50, "seed": 0,
                                      "model_name": "seed"}).json()
    job = wait_for(lambda: (j := http.get(f"/v1/jobs/{job['id']}").json())["status"]
                   == "succeeded" and j)
    known = {"dataset_id": [ds["id"]], "job_id": [job["id"]], "model_id": [job["model_id"]],
             "name": ["seed", job["model_id"]], "version": ["1"]}
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(auth_headers, known))

    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
         "run", f"{server.url}/openapi.json", "--phases", "examples,coverage,fuzzing",
         "--workers", "1", "--request-timeout", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=480,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.security.st_hooks",
             "PYTHONPATH": str(ROOT)},
    )
    out = run.stdout + run.stderr
    print(out[out.find("SUMMARY"):])  # pytest -s shows what was tested
    # the run must have tested every operation, not stopped at loading the schema
    schema = http.get("/openapi.json").json()
    operations = sum(1 for item in schema["paths"].values() for method in item
                     if method in ("get", "put", "post", "delete", "patch", "head", "options"))
    assert operations, schema
    assert f"Selected: {operations}/{operations}" in out, out[-4000:]
    assert f"Tested: {operations}" in out and "Test cases:" in out, out[-4000:]
    assert run.returncode == 0, f"schemathesis found failures:\n{out[-12000:]}"
    # the fuzzing left the server alive and serving
    assert http.get("/healthz").status_code == 200
    # it may have deleted every model it found (DELETE /v1/models/{id}): train one more
    after = http.post("/v1/jobs", json={"x": d["x"], "y": d["y"], "epochs": 50, "seed": 0,
                                        "model_name": "seed"}).json()
    wait_for(lambda: http.get(f"/v1/jobs/{after['id']}").json()["status"] == "succeeded")
    r = http.post("/predict", json={"model": "seed", "x": [[1.0]]})
    assert r.status_code == 200, r.text
