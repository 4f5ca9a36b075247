"""A worker keeps the memory it frees for its next arrays (``runner.keep_freed_memory``,
called by ``warm_up``): a closed-form batch's trajectories, arrays of a few MB made chunk
after chunk, reuse pages rather than fault in fresh ones each time as glibc's defaults make
them. Seen from outside: the page faults a process takes, in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import json, resource, sys
import numpy as np
from service.training import closed_form
from service.training.fit import fit
from service.training.spec import TrainingSpec
from service.worker import runner

seed = json.load(open("tests/data/seed_example.json"))
x = np.array(seed["x"], dtype=np.float32).reshape(-1, 1)
y = np.array(seed["y"], dtype=np.float32).reshape(-1, 1)
specs = [TrainingSpec.model_validate({"epochs": 10_000, "seed": 0, "optimizer": {
    "name": "sgd", "lr": lr, "momentum": m}}) for lr in (0.002, 0.005, 0.01)
    for m in (0.0, 0.3, 0.5, 0.7, 0.8)] * 2

def faults():  # a closed-form batch: the first trial's fit computes every trajectory
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):
        with closed_form.trials_together(specs) as shared:
            fit(specs[0], x, y)
            assert shared.used is not None
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 2

faults()
default = faults()
applied = runner.keep_freed_memory() if sys.argv[1] == "keep" else False
faults()  # the heap grows to what a batch needs, once
print(json.dumps({"default": default, "applied": applied, "after": faults()}))
"""


def _probes(*modes: str) -> list[dict]:
    """The probe run in a process of its own per mode, the processes side by side."""
    procs = [subprocess.Popen([sys.executable, "-c", PROBE, mode], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE) for mode in modes]
    try:
        return [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    finally:
        for p in procs:  # none left running when one fails or times out
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_batchs_trajectories_reuse_freed_pages_once_kept():
    kept, control = _probes("keep", "default")
    assert kept["applied"] is True and control["applied"] is False
    # glibc's defaults: some 1 500 to 2 400 pages faulted in afresh for each batch of 30 trials
    assert kept["default"] > 1000 and control["after"] > 1000
    assert kept["after"] < kept["default"] / 3  # kept: most of them reused


def test_the_warm_up_keeps_freed_memory(monkeypatch):
    from service.worker import runner

    called: list[int] = []
    monkeypatch.setattr(runner, "keep_freed_memory", lambda: called.append(1) or True)
    runner.warm_up()
    assert called == [1]
