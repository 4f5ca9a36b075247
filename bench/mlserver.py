"""``python -m bench.mlserver --mlserver PATH``: fitserve beside Seldon MLServer, one table.

MLServer is not a dependency: give the directory of a scratch virtual environment that has
it (``python -m venv /tmp/mls && /tmp/mls/bin/pip install mlserver``). It serves the same
one-feature linear model through a custom numpy runtime, one HTTP process
(``parallel_workers=0``), as the issue's comparison did. Every row runs each server under the
same wrk load, alternating over the rounds; the bare FastAPI endpoint (bench/bare_app.py) is
measured beside them for the /predict rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
from pathlib import Path

import httpx

from bench import load, predict, servers

ROOT = Path(__file__).resolve().parents[1]
SEED = json.loads((ROOT / "tests" / "data" / "seed_example.json").read_text())

_RUNTIME = '''
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Linear(MLModel):
    """y = x w + b in numpy: what a hand-written MLServer runtime for this model is."""

    async def load(self) -> bool:
        self.w = np.float32({w!r})
        self.b = np.float32({b!r})
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        y = x.reshape(-1, 1) * self.w + self.b
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("y", y)])
'''


def _mlserver(venv: Path, folder: Path, w: float, b: float) -> servers.Server:
    """MLServer on free ports, serving model "bench" from ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runtime.py").write_text(textwrap.dedent(_RUNTIME.format(w=w, b=b)))
    (folder / "model-settings.json").write_text(json.dumps(
        {"name": predict.MODEL, "implementation": "runtime.Linear"}))
    port, grpc, metrics = servers.free_port(), servers.free_port(), servers.free_port()
    (folder / "settings.json").write_text(json.dumps(
        {"http_port": port, "grpc_port": grpc, "metrics_port": metrics,
         "parallel_workers": 0, "debug": False}))
    server = servers.Server([str(venv / "bin" / "mlserver"), "start", str(folder)], {}, port,
                            "/v2/health/ready", folder, cwd=folder)
    deadline = time.monotonic() + 60  # ready means the server; the model loads after
    while httpx.get(f"{server.url}/v2/models/{predict.MODEL}/ready").status_code != 200:
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("MLServer did not load the model")
        time.sleep(0.2)
    return server


def _cell(results: list[dict[str, float]], rows: int = 1) -> str:
    rps = statistics.median(r["rps"] for r in results)
    p50 = statistics.median(r["p50"] for r in results)
    p99 = statistics.median(r["p99"] for r in results)
    return f"{rps * rows:,.0f}".replace(",", " ") + f" (p50 {p50:.2g} ms, p99 {p99:.3g} ms)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mlserver", description=__doc__)
    p.add_argument("--mlserver", type=Path, required=True,
                   help="a virtual environment with MLServer installed")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--pin", action="store_true",
                   help="servers on core 0, wrk on core 1 (taskset): the tail without the "
                        "load generator preempting the server")
    args = p.parse_args(argv)
    if args.pin:
        servers.SERVER_CPUS, load.LOAD_CPUS = "0", "1"
    data = args.data / f"bench-mlserver-{int(time.time())}"
    data.mkdir(parents=True)

    fs = servers.fitserve(data / "main", workers=1)
    try:
        with httpx.Client(base_url=fs.url, timeout=120) as http:
            job = http.post("/v1/jobs", json={"x": SEED["x"], "y": SEED["y"], "epochs": 100,
                                              "seed": 0, "model_name": predict.MODEL}).json()
            job = http.get(f"/v1/jobs/{job['id']}", params={"wait": 60}).json()
            model = http.get(f"/v1/models/{job['model_id']}").json()
        w, b = model["weight"][0][0], model["bias"][0]
        mls = _mlserver(args.mlserver, data / "mlserver", w, b)
        bare = servers.bare(args.data)
    except BaseException:
        fs.stop()
        raise
    one, thousand = predict.ONE["x"], predict.THOUSAND["x"]
    fs_infer = f"{fs.url}/v2/models/{predict.MODEL}/infer"
    mls_infer = f"{mls.url}/v2/models/{predict.MODEL}/infer"
    cases = [  # name, fitserve (url, body), bare body or None, MLServer body
        ("`/predict`, 1 row, req/s", fs.url + "/predict", predict.ONE, predict.ONE,
         predict.v2_json(one)),
        ("`/v2/models/{name}/infer`, 1 row, req/s", fs_infer, predict.v2_json(one), None,
         predict.v2_json(one)),
        ("`/predict`, 1 000 rows, req/s", fs.url + "/predict", predict.THOUSAND,
         predict.THOUSAND, predict.v2_json(thousand)),
        ("`/v2/.../infer`, 1 000 rows (JSON), req/s", fs_infer, predict.v2_json(thousand),
         None, predict.v2_json(thousand)),
        ("`/v2/.../infer`, 1 000 rows (binary tensors), req/s", fs_infer,
         predict.v2_binary(thousand), None, predict.v2_json(thousand)),
    ]
    print(f"# fitserve beside MLServer, {time.strftime('%Y-%m-%d %H:%M')}, wrk "
          f"{'yes' if load.shutil.which('wrk') else 'no (httpx)'}, {args.seconds:g} s x "
          f"{args.rounds} rounds{', servers on core 0 and wrk on core 1' if args.pin else ''}")
    print("| row | fitserve | bare FastAPI endpoint | MLServer | fitserve / MLServer |")
    print("|---|---|---|---|---|")
    try:
        for name, url, body, bare_body, mls_body in cases:
            a: list[dict[str, float]] = []
            c: list[dict[str, float]] = []
            bb: list[dict[str, float]] = []
            for _ in range(args.rounds):
                a.append(load.run(url, body, args.seconds))
                c.append(load.run(mls_infer, mls_body, args.seconds))
                if bare_body is not None:
                    bb.append(load.run(bare.url + "/predict", bare_body, args.seconds))
            ratio = statistics.median(x["rps"] / y["rps"] for x, y in zip(a, c, strict=True))
            print(f"| {name} | {_cell(a)} | {_cell(bb) if bb else '-'} | {_cell(c)} | "
                  f"{ratio:.2f}x |", flush=True)
        rss = {"fitserve API + 1 worker": _tree_rss(fs.proc.pid),
               "bare": predict.rss_mb(bare.proc.pid), "MLServer": _tree_rss(mls.proc.pid)}
    finally:
        fs.stop()
        mls.stop()
        bare.stop()
    replica = predict.replica_memory(data / "main", args.data)
    print(f"| idle RSS | API + 1 worker {rss['fitserve API + 1 worker']:.0f} MB; "
          f"`serve --role predict` {replica.a} | {rss['bare']:.0f} MB | "
          f"{rss['MLServer']:.0f} MB | |")
    return 0


def _tree_rss(pid: int) -> float:
    """RSS of a process and its children (fitserve's workers, MLServer's helpers)."""
    total = predict.rss_mb(pid)
    # every thread's children: fitserve's fork server is started by its pool's thread
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            try:
                total += _tree_rss(int(child))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return total


if __name__ == "__main__":
    sys.exit(main())
