"""``fitserve alias`` and ``fitserve traffic`` (and the client calls under them), against the
app."""

from __future__ import annotations

import service.cli.client as cli_client
from service.cli.lifecycle import _model_id
from tests.unit.cli.conftest import Cli


def test_alias_set_list_history_and_traffic(fs: Cli, run_queued):
    for i in range(3):
        fs.http.post("/v1/jobs", json={"x": [[1.0], [2.0]], "y": [[2.0], [4.0 + i]],
                                       "epochs": 10, "seed": i, "model_name": "seed"})
    run_queued()
    ids = {m["version"]: m["id"] for m in fs.http.get("/v1/models?name=seed").json()["data"]}

    r = fs("alias", "set", "seed", "champion", "3")
    assert r.exit_code == 0 and r.stdout.strip() == f"seed@champion -> 3 ({ids[3]}; new)", \
        r.output
    r = fs("alias", "set", "seed", "champion", "2")
    assert r.stdout.strip() == f"seed@champion -> 2 ({ids[2]}; was 3)"
    fs("alias", "set", "seed", "challenger", "3")
    r = fs("traffic", "set", "seed", "champion=90", "challenger=10")
    assert r.exit_code == 0 and r.stdout.strip() == "champion=90 (v2)  challenger=10 (v3)"
    r = fs("alias", "list", "seed")
    assert r.stdout.splitlines() == [
        f"latest      3  {ids[3]}", f"challenger  3  {ids[3]}", f"champion    2  {ids[2]}",
        "versions    1, 2, 3", "traffic     champion=90  challenger=10"]
    r = fs("alias", "history", "seed")
    assert [line.split()[2:6] for line in r.stdout.splitlines()] == [
        ["challenger", "-", "->", "3"], ["champion", "3", "->", "2"],
        ["champion", "-", "->", "3"]]
    # evaluate and export take name@alias as well
    with cli_client.Client("http://127.0.0.1") as client:
        assert [_model_id(client, ref) for ref in ("seed@champion", "seed@1", "seed")] == \
            [ids[2], ids[1], ids[3]]

    for args, words in ((("traffic", "set", "seed", "champion=90", "challenger=5"),
                         "sum to 95"),
                        (("traffic", "set", "seed", "champion"), "TARGET=PERCENT"),
                        (("alias", "set", "seed", "latest", "1"), "built-in"),
                        (("alias", "delete", "seed", "champion"), "traffic split")):
        r = fs(*args)
        assert r.exit_code != 0 and words in r.output, (args, r.output)
    assert fs("traffic", "clear", "seed").exit_code == 0
    assert fs("alias", "delete", "seed", "champion").exit_code == 0
    assert "champion" not in fs("alias", "list", "seed").stdout


def test_traffic_show_prints_the_current_split(fs: Cli, run_queued):
    for i in range(2):
        fs.http.post("/v1/jobs", json={"x": [[1.0], [2.0]], "y": [[2.0], [4.0 + i]],
                                       "epochs": 10, "seed": i, "model_name": "line"})
    run_queued()
    r = fs("traffic", "show", "line")
    assert r.exit_code == 0 and r.stdout.strip() == (
        "line has no traffic split: predict by the name answers from its latest version"), \
        r.output
    fs("alias", "set", "line", "champion", "1")
    assert fs("traffic", "set", "line", "champion=90", "2=10").exit_code == 0
    r = fs("traffic", "show", "line")
    assert r.exit_code == 0 and r.stdout.strip() == "champion=90 (v1)  2=10 (v2)", r.output
    fs("alias", "set", "line", "champion", "2")  # the split follows the alias
    assert fs("traffic", "show", "line").stdout.strip() == "champion=90 (v2)  2=10 (v2)"
    with cli_client.Client("http://127.0.0.1") as client:  # the client's call under it
        assert client.traffic("line") == {"name": "line", "weights": {"champion": 90, "2": 10},
                                          "versions": {"champion": 2, "2": 2}}
    fs("traffic", "clear", "line")
    assert "no traffic split" in fs("traffic", "show", "line").stdout
    r = fs("traffic", "show", "nothing")
    assert r.exit_code == 1 and "not found" in r.output, r.output
