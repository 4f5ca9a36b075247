"""The predict rows: fitserve's lanes (``/predict`` and the Open Inference Protocol's infer,
JSON and binary tensors) against the bare FastAPI endpoint under the same load, their tail,
and a predict replica's memory against the bare endpoint's."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from bench import load, servers
from bench.load import Payload
from bench.table import Row, ratio_row

MODEL = "bench"
"""The name the predict rows' model is trained under (one feature, the seed data)."""

ONE = {"x": [[3.3]]}
THOUSAND = {"x": [[float(i % 11)] for i in range(1000)]}
TAIL_BUDGET = 3.0
"""The issue's bound on every predict row: p99 at most 3 times p50."""
RSS_TARGET = 2.4
"""120 MB (the issue's budget for a predict replica) over the bare endpoint's 50 MB."""


def v2_json(x: list[list[float]]) -> Payload:
    flat = [v for row in x for v in row]
    return Payload.json({"inputs": [{"name": "x", "shape": [len(x), len(x[0])],
                                     "datatype": "FP32", "data": flat}]})


def v2_binary(x: list[list[float]]) -> Payload:
    """The binary tensor extension, as tritonclient sends it: JSON head, then raw FP32."""
    data = np.asarray(x, "<f4")
    head = orjson.dumps({"inputs": [{"name": "x", "shape": list(data.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": data.nbytes}}]})
    return Payload(head + data.tobytes(), {"content-type": "application/octet-stream",
                                           "inference-header-content-length": str(len(head))})


def check_answers(url: str) -> None:
    """Every lane gives the numbers /predict gives, before any of them is timed."""
    with httpx.Client(base_url=url, timeout=60) as http:
        want = np.asarray(http.post("/predict", json=THOUSAND).json()["y"], np.float32)
        for payload in (v2_json(THOUSAND["x"]), v2_binary(THOUSAND["x"])):
            r = http.post(f"/v2/models/{MODEL}/infer", content=payload.content,
                          headers=payload.headers)
            r.raise_for_status()
            n = int(r.headers.get("inference-header-content-length", len(r.content)))
            (out,) = orjson.loads(r.content[:n])["outputs"]
            got = (np.asarray(out["data"], np.float32) if "data" in out
                   else np.frombuffer(r.content[n:], "<f4"))
            if not np.array_equal(got.reshape(want.shape), want):
                raise RuntimeError("the v2 lane's numbers differ from /predict's")


def rows(fs_url: str, bare_url: str, seconds: float, rounds: int,
         alternate: Callable[..., tuple[list[Any], list[Any]]]) -> list[Row]:
    """Throughput rows of each lane against the bare endpoint, then the worst tail."""
    check_answers(fs_url)
    fs_predict, fs_infer = fs_url + "/predict", f"{fs_url}/v2/models/{MODEL}/infer"
    bare = bare_url + "/predict"
    cases = [
        ("predict 1 row", fs_predict, ONE, ONE, ">= 1.2", 1.2),
        ("v2 infer 1 row (JSON)", fs_infer, v2_json(ONE["x"]), ONE, ">= 1.2", 1.2),
        ("predict 1 000 rows", fs_predict, THOUSAND, THOUSAND, ">= 1.5", 1.5),
        ("v2 infer 1 000 rows (JSON)", fs_infer, v2_json(THOUSAND["x"]), THOUSAND, ">= 1.5",
         1.5),
        ("v2 infer 1 000 rows (binary)", fs_infer, v2_binary(THOUSAND["x"]), THOUSAND,
         ">= 3", 3.0),
    ]
    out: list[Row] = []
    tails: list[tuple[float, str]] = []
    bare_tails: list[float] = []
    for name, url, body, bare_body, target, bound in cases:
        a, b = alternate(lambda url=url, body=body: load.run(url, body, seconds),
                         lambda bare_body=bare_body: load.run(bare, bare_body, seconds), rounds)
        row = ratio_row(f"{name}, req/s", [r["rps"] for r in a], [r["rps"] for r in b],
                        "req/s", target, ge=bound)
        p50, p99 = (statistics.median(r[k] for r in a) for k in ("p50", "p99"))
        row.a += f" (p50 {p50:.3g} ms, p99 {p99:.3g} ms)"
        bp50, bp99 = (statistics.median(r[k] for r in b) for k in ("p50", "p99"))
        row.b += f" (p50 {bp50:.3g} ms, p99 {bp99:.3g} ms)"
        out.append(row)
        tails.append((p99 / p50, name))
        bare_tails.append(bp99 / bp50)
        if name == "predict 1 row":
            out.append(ratio_row("predict 1 row, p99 latency", [r["p99"] for r in a],
                                 [r["p99"] for r in b], "ms", "<= 1.0", le=1.0))
    # the bound, not a measurement: the bare endpoint's own tail under the same load
    # (the machine's share of it) is printed beside it
    worst, which = max(tails)
    tail = ratio_row(f"predict tail: worst p99 / p50 ({which})", [worst], [TAIL_BUDGET],
                     "x", "<= 1.0", le=1.0)
    tail.b += f" (bare endpoint's worst: {max(bare_tails):.3g} x)"
    out.append(tail)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def replica_memory(data_dir: Path, log_dir: Path) -> Row:
    """Idle RSS of ``fitserve serve --role predict`` on the bench's data, after it served
    one predict of each lane (the model loaded), against the bare endpoint's after the same."""

    def warm_rss(server: servers.Server, fitserve: bool) -> float:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for _ in range(20):
                http.post("/predict", json=THOUSAND).raise_for_status()
                if fitserve:
                    p = v2_binary(THOUSAND["x"])
                    http.post(f"/v2/models/{MODEL}/infer", content=p.content,
                              headers=p.headers).raise_for_status()
        time.sleep(1.0)  # idle: the memory returned after requests is back
        return rss_mb(server.proc.pid)

    replica = servers.fitserve_predict(data_dir, log_dir)
    try:
        a = warm_rss(replica, True)
        imported_torch = _has_torch(replica.proc.pid)
    finally:
        replica.stop()
    bare = servers.bare(log_dir)
    try:
        b = warm_rss(bare, False)
    finally:
        bare.stop()
    name = "predict replica idle RSS (serve --role predict)"
    if imported_torch:
        name += ", torch LOADED"
    ratio = a / b
    return Row(name, f"{a:.0f} MB", f"{b:.0f} MB", ratio, f"<= {RSS_TARGET}",
               ratio <= RSS_TARGET and not imported_torch)


def _has_torch(pid: int) -> bool:
    """Whether the process mapped torch's library (it imported torch)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


NAMED_MODEL = "bench10"
"""A 10-column model for the named-field rows (inline data: its columns are x0 .. x9)."""


def train_named_model(http: httpx.Client, train: Callable[[httpx.Client, dict], dict]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 10)).round(3)
    y = x @ np.arange(1, 11) + 0.5
    train(http, {"x": x.tolist(), "y": y[:, None].tolist(), "epochs": 100, "seed": 0,
                 "model_name": NAMED_MODEL})


def named_rows(fs_url: str, seconds: float, rounds: int,
               alternate: Callable[..., tuple[list[Any], list[Any]]]) -> list[Row]:
    """Issue 12: predict by name (``rows``) against the matrix form (``x``) of the same
    10-column model, the same rows, on the same server (the lane serves both)."""
    url = fs_url + "/predict"
    out: list[Row] = []
    for n in (1, 1000):
        values = np.random.default_rng(n).standard_normal((n, 10)).round(4).tolist()
        matrix = {"model": NAMED_MODEL, "x": values}
        named = {"model": NAMED_MODEL,
                 "rows": [{f"x{i}": v for i, v in enumerate(row)} for row in values]}
        with httpx.Client(timeout=60) as http:  # the same answer before either is timed
            a_y = http.post(url, json=named).json()["y"]
            if a_y != http.post(url, json=matrix).json()["y"]:
                raise RuntimeError("named-field predict differs from the matrix form")
        a, b = alternate(lambda named=named: load.run(url, named, seconds),
                         lambda matrix=matrix: load.run(url, matrix, seconds), rounds)
        what = "1 row" if n == 1 else f"{n:,} rows".replace(",", " ")
        out.append(ratio_row(f"predict by name vs x, 10 columns, {what}, req/s",
                             [r["rps"] for r in a], [r["rps"] for r in b], "req/s",
                             ">= 0.67", ge=0.67))
    return out
