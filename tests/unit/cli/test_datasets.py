"""``fitserve datasets``: upload, list, show, delete."""

from __future__ import annotations

import json

from tests.unit.cli.conftest import Cli


def _id(stdout: str) -> str:
    return stdout.splitlines()[0].split()[1]


def test_upload_csv_and_json_list_show_delete(fs: Cli, seed_csv, tmp_path):
    r = fs("datasets", "upload", str(seed_csv), "--target", "y")
    assert r.exit_code == 0, r.output
    csv_id = _id(r.stdout)
    assert r.stdout.splitlines()[0] == f"dataset     {csv_id} (seed)"
    assert "rows        6" in r.stdout
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps({"x": [[1, 2], [3, 4]], "y": [[1], [2]],
                                "feature_names": ["a", "b"]}))
    r = fs("datasets", "upload", str(rows), "--name", "two")
    assert r.exit_code == 0, r.output
    json_id = _id(r.stdout)
    assert "features    a, b" in r.stdout

    for args in (["datasets"], ["datasets", "list"]):
        r = fs(*args)
        assert r.exit_code == 0, r.output
        lines = r.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80
        assert [sum(i in line for line in lines) for i in (csv_id, json_id)] == [1, 1]
    r = fs("datasets", "show", csv_id)
    assert r.exit_code == 0, r.output
    assert any(line.split()[:2] == ["x", "feature"] for line in r.stdout.splitlines())
    r = fs("datasets", "delete", json_id)
    assert r.exit_code == 0 and r.stdout == f"deleted {json_id}\n"
    r = fs("datasets", "show", json_id)
    assert r.exit_code == 1 and "error: not_found: dataset" in r.stderr


def test_a_dataset_a_queued_job_uses_is_kept(fs: Cli):
    ds = fs.http.post("/v1/datasets", json={"x": [[1.0], [2.0]], "y": [[2.0], [4.0]]}).json()
    fs.http.post("/v1/jobs", json={"dataset_id": ds["id"]})
    r = fs("datasets", "delete", ds["id"])
    assert r.exit_code == 1 and "error: conflict: " in r.stderr and "queued or running" in \
        r.stderr


def test_a_csv_upload_needs_its_target(fs: Cli, seed_csv):
    r = fs("datasets", "upload", str(seed_csv))
    assert r.exit_code == 2 and "--target" in r.output
