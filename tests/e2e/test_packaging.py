"""``pip install fitserve`` is the client and the CLI alone: in a fresh virtualenv holding
only the base dependencies (read from pyproject.toml, with everything they require in turn),
the client talks to a real server and torch is not there to import.

The virtualenv is filled from this machine's installed distributions (their own dependency
metadata, file by file) rather than by pip from an index: the same set of packages, in about
a second instead of a minute of resolving and downloading."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def _closure(requirements: list[str]) -> dict[str, md.Distribution]:
    """Every distribution the requirements need, following each one's own Requires-Dist
    (extras included where asked for, e.g. ``uvicorn[standard]``)."""
    found: dict[tuple[str, str], md.Distribution] = {}
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        dist = md.distribution(req.name)
        key = dist.metadata["Name"].lower()
        extras = sorted(req.extras)
        for wanted in ["", *extras]:
            if (key, wanted) in found:
                continue
            found[(key, wanted)] = dist
            todo.extend((Requirement(r), wanted) for r in dist.requires or [])
    return {name: dist for (name, _), dist in found.items()}


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("base-install")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dist in _closure(base).values():
        for rel in dist.files or []:
            if ".." in Path(rel).parts:  # scripts beside the interpreter: not needed
                continue
            target = site / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(dist.locate_file(rel))
    src = tmp / "src"  # the project itself, as an install would place it
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("service", "models"):
        shutil.copytree(ROOT / part, src / part, ignore=ignore)
    (site / "fitserve.pth").write_text(f"{src}\n")
    return venv


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(venv / "bin" / "python"), *args[1:]]
    if args[0] == "fitserve":  # the console script runs service.cli:main
        command = [str(venv / "bin" / "python"), "-m", "service.cli", *args[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_base_install_has_no_server_libraries(base_venv):
    probe = _run(base_venv, "python", "-c", (
        "import importlib.util, sys\n"
        "import service.client, service.cli\n"
        "heavy = ['torch', 'numpy', 'sqlalchemy', 'fastapi', 'celery', 'polars']\n"
        "print([m for m in heavy if importlib.util.find_spec(m) is not None])\n"
        "print([m for m in heavy if m in sys.modules])\n"))
    assert probe.returncode == 0, probe.stderr
    installed, imported = probe.stdout.split("\n")[:2]
    assert (installed, imported) == ("[]", "[]")
    torch = _run(base_venv, "python", "-c", "import torch")
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr


def test_the_cli_runs_and_server_commands_say_what_to_install(base_venv):
    assert _run(base_venv, "fitserve", "version").stdout.strip() == \
        subprocess.run([sys.executable, "-m", "service.cli", "version"], capture_output=True,
                       text=True, check=True).stdout.strip()
    for command in (["serve"], ["worker"], ["keys", "list"]):
        r = _run(base_venv, "fitserve", *command)
        assert r.returncode == 2, (command, r.stdout, r.stderr)
        assert "pip install 'fitserve[server]'" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_the_base_client_talks_to_a_real_server(base_venv, server):
    r = _run(base_venv, "python", "-c", (
        "from service.client import Client\n"
        f"with Client({server.url!r}) as fs:\n"
        "    ds = fs.upload([[1.0], [2.0], [3.0]], [[2.0], [4.0], [6.0]], name='tiny')\n"
        "    print(fs.health()['status'], ds['rows'], [d['id'] for d in fs.datasets()] == "
        "[ds['id']])\n"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ready", "3", "True"]
