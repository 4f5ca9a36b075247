"""The two set-up commands talk: ``make serve`` says what it installs, lets pip show its
progress, and says where the API, its docs and the dashboard are and where the CLI lives."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _plan(target: str) -> list[str]:
    """What ``make`` would run for ``target`` from scratch (a dry run: nothing is run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "--dry-run", "--always-make", target], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return out.replace("\\\n", " ").splitlines()


def test_make_serve_says_each_step_and_lets_pip_talk():
    plan = _plan("serve")
    installs = [line for line in plan if "pip install" in line]
    assert installs, plan
    assert all("--quiet" not in line and " -q " not in line for line in installs), installs
    steps = [line for line in plan if line.startswith("echo") and "installing" in line]
    assert steps and "a few minutes the first time" in steps[0], plan


def test_make_serve_says_where_the_docs_dashboard_and_cli_are():
    plan = _plan("serve")
    said = " ".join(line for line in plan[:plan.index(".venv/bin/fitserve serve")]
                    if line.startswith("echo"))
    assert "/docs" in said and "dashboard" in said, said
    assert ".venv/bin/fitserve" in said and "source .venv/bin/activate" in said, said
