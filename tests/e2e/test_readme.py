"""The README runs as written: its ``sh`` and ``python`` walkthroughs, in order, against a
live server on a fresh data directory, each answer compared with the one the README shows
(numbers to the digits shown, ids as patterns; tests/e2e/readme.py says how)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, module_server
from tests.e2e.readme import ID, ID_PLACEHOLDER, NUMBER, Step, mismatches, steps

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@dataclass
class Ran:
    step: Step
    code: str
    output: str


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, "readme", 1)


@pytest.fixture(scope="module")
def ran(server: ServerProcess, tmp_path_factory) -> list[Ran]:
    """Every step run once, in order, in a directory of its own that has the checkout's
    ``examples`` and ``.venv`` (the files the steps write stay out of the checkout); ids
    the README leaves as ``ds_...`` are those the server answered last (a reader copies
    them the same way)."""
    here = tmp_path_factory.mktemp("reader")
    for name in ("examples", ".venv"):
        if (ROOT / name).exists():
            (here / name).symlink_to(ROOT / name)
    address = f"127.0.0.1:{server.port}"
    env = {**os.environ, "FITSERVE_URL": server.url, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("FITSERVE_API_KEY", None)
    last: dict[str, str] = {}
    done: list[Ran] = []
    for step in steps(README):
        code = step.code.replace("localhost:8000", address).replace("127.0.0.1:8000", address)
        code = ID_PLACEHOLDER.sub(lambda m: last.get(m.group(1), m.group(0)), code)
        command = ["bash", "-c", code] if step.kind == "sh" else [sys.executable, "-c", code]
        out = subprocess.run(command, cwd=here, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, (
            f"README line {step.line} failed ({out.returncode}):\n{step.code}\n"
            f"{out.stdout[-1000:]}{out.stderr[-2000:]}")
        for m in ID.finditer(out.stdout):
            last[m.group(1)] = m.group(0)
        done.append(Ran(step, code, out.stdout))
    return done


def test_the_readme_has_walkthroughs_with_answers():
    found = steps(README)
    assert sum(bool(s.expected) for s in found) >= 10, [s.code for s in found]
    assert {"sh", "python"} <= {s.kind for s in found}


def test_every_readme_answer_is_what_the_server_answers(ran):
    wrong = []
    for r in ran:
        if r.step.kind == "python":
            expected = ["\n".join(r.step.expected)] if r.step.expected else []
        else:
            expected = r.step.expected
        for answer in expected:
            problems = mismatches(answer, r.output.strip())
            if problems:
                wrong.append(f"README line {r.step.line}: {r.step.code.strip()[:200]}\n  "
                             + "\n  ".join(problems))
    assert not wrong, "\n\n".join(wrong)


def test_an_answer_changed_by_one_digit_is_caught(ran):
    """The comparison is not loose: each number the README shows, one digit off, fails."""
    checked = 0
    for r in ran:
        for answer in (["\n".join(r.step.expected)] if r.step.kind == "python"
                       else r.step.expected):
            if not answer or mismatches(answer, r.output.strip()):
                continue
            for m in NUMBER.finditer(answer):
                if "." not in m.group(0) or re.search(r"[A-Za-z_]$", answer[:m.start()]):
                    continue
                digit = m.end() - 1
                changed = answer[:digit] + str((int(answer[digit]) + 1) % 10) + \
                    answer[digit + 1:]
                assert mismatches(changed, r.output.strip()), (r.step.line, changed)
                checked += 1
    assert checked >= 5
