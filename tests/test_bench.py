"""``make test`` runs the benchmark once at a tiny size, to show it works: its table is
whole and consistent (no timings are asserted: those live in bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)  # above the bench run's own limit (the suite's is 120 s a test)
def test_quick_bench_prints_a_table_of_ratios(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--rounds", "1", "--only",
         "seed,small,predict,replica", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=480, cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| row ")]
    names = [r[0] for r in rows]
    assert names[0].startswith("seed job") and any("small jobs" in n for n in names)
    assert [n.split(" (")[0] for n in names if n.startswith(("predict", "v2"))] == [
        "predict 1 row, req/s", "predict 1 row, p99 latency", "v2 infer 1 row",
        "predict 1 000 rows, req/s", "v2 infer 1 000 rows", "v2 infer 1 000 rows",
        "predict tail: worst p99 / p50", "predict replica idle RSS"]
    assert "torch LOADED" not in names[-1]  # the replica served without torch
    for name, a, b, ratio, target, met in rows:
        # one round (--rounds 1): the ratio is A/B of the figures printed beside it, and
        # "met" is the target applied to it (the figures themselves are the bench's business);
        # a throughput's p50 and p99 follow it in brackets
        a_value, a_unit = a.split()[:2]
        b_value, b_unit = b.split()[:2]
        assert a_unit == b_unit, name
        expected = float(a_value) / float(b_value)
        # up to the figures' printed digits: 116 and 62 MB may be 115.6 and 62.5 (1.85)
        rounding = _half_digit(a_value) / float(a_value) + _half_digit(b_value) / float(b_value)
        assert float(ratio) == pytest.approx(expected, rel=1e-2 + rounding), name
        op, bound = target.split()
        if abs(expected / float(bound) - 1) > 1e-2:  # not on the edge of the printed digits
            assert met == ("yes" if (expected <= float(bound) if op == "<=" else
                                     expected >= float(bound)) else "NO"), name


def _half_digit(figure: str) -> float:
    """Half a unit of the last digit a figure is printed with (4 significant digits)."""
    mantissa, _, exponent = figure.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))
