"""``make test`` runs the benchmark once at a tiny size, to show it works (no timings are
asserted: those live in bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_quick_bench_prints_a_table_of_ratios(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "seed,small,predict",
         "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| row ")]
    names = [r.split("|")[1].strip() for r in rows]
    assert names[0].startswith("seed job") and any(n.startswith("predict 1 row") for n in names)
    for r in rows:
        ratio = float(r.split("|")[4])
        assert ratio > 0
