"""``python -m bench.gc_pauses``: where the predict tail came from (issue 13), in one run.

A server with the collector as it was (no freeze at startup, the body's lists counted by the
collector while they live) and one as it is now take the same wrk load of 1 000-row
predicts; each server counts its own garbage collections and how long they held the event
loop (``gc.callbacks``). Counts and pauses do not depend on how busy the machine is, which
p99 on a shared machine does.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import load, predict, servers

ROOT = Path(__file__).resolve().parents[1]
SEED = json.loads((ROOT / "tests" / "data" / "seed_example.json").read_text())


def _serve(data_dir: Path, port: int, before: bool, stats_path: Path) -> None:
    """The child: fitserve's app under its own server, timing every collection."""
    import service.api.middleware.predict_lane as lane
    import service.serving.predict as core
    from service.config import Settings
    from service.main import create_app, run_server

    if before:  # the collector as it was before issue 13
        gc.freeze = lambda: None  # type: ignore[assignment]
        lane.parse_predict_body = core.parse_predict_body.__wrapped__  # type: ignore[attr-defined]
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - started[0])

    def dump(*_: Any) -> None:
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pauses))
        tmp.rename(stats_path)  # whole, for the reader that waits for it
        for g in pauses:
            pauses[g].clear()

    gc.callbacks.append(timed)
    signal.signal(signal.SIGUSR1, dump)
    settings = Settings(data_dir=data_dir, port=port, workers=0, log_level="warning")
    run_server(create_app(settings), settings)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gc_pauses", description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)  # the child's own arguments
    args = p.parse_args(argv)
    if args.serve:
        data_dir, port, mode, stats = args.serve
        _serve(Path(data_dir), int(port), mode == "before", Path(stats))
        return 0
    data = args.data / f"bench-gc-{int(time.time())}"
    data.mkdir(parents=True)
    fs = servers.fitserve(data / "main", workers=1)
    try:  # the model: trained by a whole server, then served by the probes on its store
        with httpx.Client(base_url=fs.url, timeout=120) as http:
            job = http.post("/v1/jobs", json={"x": SEED["x"], "y": SEED["y"], "epochs": 100,
                                              "seed": 0, "model_name": predict.MODEL}).json()
            http.get(f"/v1/jobs/{job['id']}", params={"wait": 60})
    finally:
        fs.stop()
    print(f"# garbage collections under {args.seconds:g} s of 1 000-row predicts, 16 "
          f"connections, {time.strftime('%Y-%m-%d %H:%M')}")
    print("| collector | req/s | p50 | p99 | full collections | their pause, total / longest"
          " | young collections, total pause |")
    print("|---|---|---|---|---|---|---|")
    for mode in ("before", "now"):
        port = servers.free_port()
        stats = data / f"gc-{mode}.json"
        server = servers.Server(
            [sys.executable, "-m", "bench.gc_pauses", "--serve", str(data / "main"), str(port),
             mode, str(stats)], {}, port, "/readyz", data)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as http:  # load the model
                http.post("/predict", json=predict.THOUSAND).raise_for_status()
            os.kill(server.proc.pid, signal.SIGUSR1)  # counts start with the load
            _wait_for(stats)
            stats.unlink()
            r = load.run(server.url + "/predict", predict.THOUSAND, args.seconds)
            os.kill(server.proc.pid, signal.SIGUSR1)
            _wait_for(stats)
            got = {int(k): v for k, v in json.loads(stats.read_text()).items()}
        finally:
            server.stop()
        full, young = got[2], got[0] + got[1]
        label = "as before issue 13" if mode == "before" else "frozen at startup, paused in parse"
        print(f"| {label} | {r['rps']:.0f} | {r['p50']:.3g} ms | {r['p99']:.3g} ms | "
              f"{len(full)} | {sum(full) * 1e3:.0f} ms / {max(full, default=0) * 1e3:.0f} ms | "
              f"{len(young)}, {sum(young) * 1e3:.0f} ms |", flush=True)
        stats.unlink(missing_ok=True)
    return 0


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server wrote no {path.name}")
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
