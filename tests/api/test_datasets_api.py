import pytest

from tests.helpers import seed_example


def test_json_upload_describes_the_data(client):
    d = seed_example()
    r = client.post("/v1/datasets", json={"name": "seed", "x": d["x"], "y": d["y"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/datasets/{body['id']}"
    assert (body["rows"], body["features"], body["targets"]) == (15, 1, 1)
    assert len(body["sha256"]) == 64
    x_stats = next(c for c in body["columns"] if c["role"] == "feature")
    assert x_stats["min"] == pytest.approx(2.167) and x_stats["max"] == pytest.approx(10.791)
    assert x_stats["mean"] == pytest.approx(sum(v[0] for v in d["x"]) / 15, rel=1e-6)
    assert client.get(f"/v1/datasets/{body['id']}").json() == body


def test_same_content_is_stored_once(client, settings):
    d = seed_example()
    first = client.post("/v1/datasets", json={"x": d["x"], "y": d["y"]})
    again = client.post("/v1/datasets", json={"x": d["x"], "y": d["y"]})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len(list((settings.data_dir / "datasets").glob("*.safetensors"))) == 1


def test_csv_upload_with_named_targets(client):
    csv = b"a,b,t1,t2\n1,2,3,4\n5,6,7,8\n9,10,11,13\n"
    r = client.post("/v1/datasets?target=t1,t2&name=two", content=csv,
                    headers={"content-type": "text/csv"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["feature_names"] == ["a", "b"] and body["target_names"] == ["t1", "t2"]
    assert body["rows"] == 3 and body["name"] == "two"


def test_list_is_paginated(client):
    ids = []
    for i in range(5):
        r = client.post("/v1/datasets", json={"x": [[i], [i + 1]], "y": [[0], [1]]})
        ids.append(r.json()["id"])
    page = client.get("/v1/datasets?limit=2").json()
    assert page["count"] == 5 and len(page["data"]) == 2 and page["next"]
    seen = [d["id"] for d in page["data"]]
    while page["next"]:
        page = client.get(f"/v1/datasets?limit=2&cursor={page['next']}").json()
        seen += [d["id"] for d in page["data"]]
    assert seen == list(reversed(ids))


def test_delete_conflicts_while_a_job_uses_it(client, run_queued):
    r = client.post("/v1/datasets", json={"x": [[1], [2], [3]], "y": [[2], [4], [6]]})
    ds = r.json()["id"]
    client.post("/v1/jobs", json={"dataset_id": ds, "epochs": 10})
    r = client.delete(f"/v1/datasets/{ds}")
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict"
    run_queued()
    assert client.delete(f"/v1/datasets/{ds}").status_code == 204
    assert client.get(f"/v1/datasets/{ds}").status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"x": [[1, 2], [3]], "y": [[1], [2]]}, "x is ragged: row 1"),
        ({"x": [[1], [2]], "y": [[1]]}, "x has 2 rows but y has 1"),
        ({"x": [], "y": []}, "x is empty"),
        ({"x": [[1], ["a"]], "y": [[1], [2]]}, "x row 1 column 0 is not a number"),
        ({"x": [[1], [1e39]], "y": [[1], [2]]}, "overflows float32"),
        ({"x": [[1]], "y": [[True]]}, "y row 0 column 0 is not a number"),
        ({"y": [[1]]}, "x is required"),
        ({"x": [[1]], "y": [[1]], "bogus": 1}, "unknown field 'bogus'"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_json_uploads_are_422_naming_the_problem(client, settings, body, needle):
    r = client.post("/v1/datasets", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]
    assert client.get("/v1/datasets").json()["count"] == 0  # nothing half-created
    assert not list((settings.data_dir / "datasets").glob("*"))


@pytest.mark.parametrize(
    ("csv", "query", "needle"),
    [
        (b"a,y\n1,2\n3,x\n", "target=y", "CSV line 3 column 2 is not a number: 'x'"),
        (b"a,y\n1,2\n3\n", "target=y", "CSV line 3 has 1 cell;"),
        (b"a,y\n1,2\n", "target=z", "target column(s) 'z' not in the CSV header"),
        (b"a,y\n1,2\n", "", "name the target column"),
        (b"a,y\n", "target=y", "no data rows"),
        (b"", "target=y", "the CSV is empty"),
        (b"y\n1\n", "target=y", "no feature columns"),
        (b"a,y\n1,nan\n", "target=y", "not a finite number"),
    ],
)
def test_bad_csv_uploads_are_422(client, csv, query, needle):
    r = client.post(f"/v1/datasets?{query}", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]


def test_media_type_and_malformed_json(client):
    r = client.post("/v1/datasets", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "unsupported_media_type"
    r = client.post("/v1/datasets", content=b'{"x": [[1]', headers={"content-type":
                                                                     "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "malformed_body"
    r = client.post("/v1/datasets", content=b'{"x": [[NaN]], "y": [[1]]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and "NaN" in r.json()["error"]["message"]


def test_unknown_dataset_is_404(client):
    r = client.get("/v1/datasets/ds_000000000000000000000000")
    assert r.status_code == 404
    assert r.json() == {"error": {"type": "not_found",
                                  "message": "dataset 'ds_000000000000000000000000' not found"}}


@pytest.mark.parametrize(
    ("csv", "needle"),
    [
        # an empty feature cell is a missing value now (issue 12); in the target it is refused
        (b"a,y\n1,2\n3,\n", "target 'y' has 1 missing value, the first at CSV line 3 column 2"),
        (b"a,y\n1,2\n1,2,3\n", "CSV line 3 has 3 cells"),
        (b"a,y\n1,2\n1e39,2\n", "CSV line 3 column 1 is not a finite number"),
    ],
)
def test_csv_cells_that_the_fast_reader_refuses_are_named(client, csv, needle):
    r = client.post("/v1/datasets?target=y", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 422 and needle in r.json()["error"]["message"], r.text


def test_csv_and_json_uploads_of_the_same_numbers_agree(client):
    csv = b"x0,y0\n" + b"".join(f"{v},{w}\n".encode() for v, w in zip(
        [3.3, 4.4, 5.5], [1.7, 2.76, 2.09], strict=True))
    a = client.post("/v1/datasets?target=y0", content=csv, headers={"content-type": "text/csv"})
    b = client.post("/v1/datasets", json={"x": [[3.3], [4.4], [5.5]], "y": [[1.7], [2.76],
                                                                           [2.09]]})
    assert a.json()["sha256"] == b.json()["sha256"] and a.json()["id"] == b.json()["id"]


def test_deleting_one_of_two_uploads_of_the_same_content_keeps_the_file(client, settings,
                                                                          tmp_path):
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    body = {"x": [[1.0], [2.0]], "y": [[3.0], [4.0]]}
    first = client.post("/v1/datasets", json=body).json()
    files = list((settings.data_dir / "datasets").glob("*.safetensors"))
    assert len(files) == 1
    # the same store under another tenant (auth on): one file, two records
    other = create_app(Settings(data_dir=settings.data_dir, workers=0, auth=True),
                       start_workers=False)
    key = other.state.services.auth.create("acme", "train")[1]
    with TestClient(other, base_url="http://127.0.0.1") as c:
        second = c.post("/v1/datasets", json=body, headers={"Authorization": f"Bearer {key}"})
    assert second.status_code == 201 and second.json()["sha256"] == first["sha256"]
    assert client.delete(f"/v1/datasets/{first['id']}").status_code == 204
    assert files[0].exists()  # still used by the other tenant's record
    assert not list((settings.data_dir / "datasets").glob(".deleted-*"))
