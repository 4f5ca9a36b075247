"""``pip install fitserve`` is the client and the CLI alone: in a fresh virtualenv with only
the base install, the client talks to a real server and torch is not there to import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with ``pip install <this checkout>`` (no extras), built from a copy so the
    build leaves nothing in the checkout."""
    tmp = tmp_path_factory.mktemp("base-install")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("service", "models"):
        shutil.copytree(ROOT / part, src / part, ignore=ignore)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, src / part)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", str(src)],
        capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True,
                          text=True, timeout=120)


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
