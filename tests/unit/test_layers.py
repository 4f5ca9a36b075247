"""The layout's dependency rules, read from every module's imports (function-level ones too;
imports under ``if TYPE_CHECKING:`` are for annotations only and are not counted)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
WEB = ("fastapi", "starlette", "sse_starlette", "uvicorn")

# package -> the service packages and top-level modules it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    "training": {"errors"},
    "store": {"errors", "config", "faults", "jobs.status"},
    "data": {"errors", "config", "store", "training"},
    # the feature pipeline: a stored table's columns -> the matrix a model takes
    "features": {"errors", "store"},
    "serving": {"errors", "config", "data", "features", "store", "training"},
    "jobs": {"errors", "config", "data", "features", "store", "training"},
    "auth": {"errors", "config", "store"},
    # lifecycle (and serving under it): a batch prediction's body (worker/predictions.py)
    "worker": {"errors", "config", "faults", "features", "logs", "store", "training",
               "jobs.status", "lifecycle", "serving"},
    "client": {"jobs.status"},
    "lifecycle": {"errors", "config", "data", "features", "store", "training", "serving",
                  "jobs"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((SERVICE / package).rglob("*.py"))


def _service_target(name: str) -> str:
    parts = name.split(".")[1:]
    if parts[:2] == ["jobs", "status"]:
        return "jobs.status"
    return parts[0] if parts else ""


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_lies_below_it(package):
    wrong = []
    for path in _modules(package):
        for name in _imports(path):
            root = name.split(".")[0]
            if root in WEB:
                wrong.append(f"{path.relative_to(SERVICE)}: {name}")
            if root != "service":
                continue
            target = _service_target(name)
            # "": ``from service import __version__``
            if target.split(".")[0] not in (package, "") and target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(SERVICE)}: {name}")
    assert not wrong, f"{package}/ may import {sorted(ALLOWED[package])} only:\n" + \
        "\n".join(wrong)


def test_nothing_imports_the_http_layer_but_the_app_factory():
    wrong = [f"{path.relative_to(SERVICE)}: {name}"
             for path in sorted(SERVICE.rglob("*.py"))
             if path.relative_to(SERVICE).parts[0] not in ("api", "main.py")
             for name in _imports(path) if name.startswith("service.api")]
    assert not wrong, "\n".join(wrong)


def test_the_client_needs_no_numerical_or_server_library():
    heavy = {"numpy", "torch", "sqlalchemy", "celery", "polars", "matplotlib", "safetensors"}
    wrong = [f"{path.name}: {name}" for path in _modules("client")
             for name in _imports(path) if name.split(".")[0] in heavy]
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_a_violation(tmp_path):
    # the checker itself: a module importing FastAPI and the HTTP layer is caught
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    from service.api import deps\nimport fastapi\n"
                   "def f():\n    from service.api.routes import jobs\n")
    assert _imports(bad) == ["typing", "fastapi", "service.api.routes"]
