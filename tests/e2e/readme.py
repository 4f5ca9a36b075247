"""The README's walkthroughs as steps a test can run, and its answers as patterns.

A walkthrough is a fenced block marked ``sh`` or ``python`` (blocks without a language are
illustrations and are not run). In a ``sh`` block each command (with its ``\\``
continuations) is a step; the ``# -> ...`` comment under it, with its indented ``#``
continuation lines, is the answer the README promises. A ``python`` block is one step and
its ``# -> ...`` comments are the lines it prints, in order.

An answer that parses as JSON once its holes are marked is compared as JSON: ``"ds_..."``
is any string that starts so (ids), ``"..."``/``...``/``[...]`` any value, and a last
``...`` in an object or list lets the answer have more keys or items. Any other answer is
lines of text, ``...`` standing for any run of characters. Numbers must agree to the
digits the README shows.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

FENCE = re.compile(r"^```(\w*)\s*$")
ID_PLACEHOLDER = re.compile(r"\b(ds|job|mdl|key)_\.\.\.")
ID = re.compile(r"\b(ds|job|mdl|key)_[0-9a-f]{24}\b")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass
class Step:
    kind: str  # "sh" or "python"
    code: str
    expected: list[str] = field(default_factory=list)
    line: int = 0  # where it starts in the README (1-based)


def steps(readme: str) -> list[Step]:
    """Every runnable step of the README, in order."""
    found: list[Step] = []
    lines = readme.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        kind, start = fence.group(1), i + 1
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if kind == "python":
            code = "\n".join(body)
            found.append(Step("python", code, _answers(body), start + 1))
        elif kind == "sh":
            found.extend(_shell_steps(body, start + 1))
    return found


def _answers(lines: list[str]) -> list[str]:
    """The ``# -> ...`` comments of a Python block (each may end a line of code)."""
    out = []
    for line in lines:
        if "# -> " in line:
            out.append(line.split("# -> ", 1)[1].rstrip())
    return out


def _shell_steps(body: list[str], first_line: int) -> list[Step]:
    found: list[Step] = []
    i = 0
    while i < len(body):
        line = body[i]
        stripped = line.strip()
        if stripped.startswith("# -> ") and found:
            answer = [stripped[len("# -> "):]]
            i += 1
            while i < len(body) and re.match(r"^#\s{2,}", body[i].strip()):
                answer.append(body[i].strip()[1:].strip())
                i += 1
            found[-1].expected.append("\n".join(answer))
            continue
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        command = [line]
        while (command[-1].rstrip().endswith("\\") or _open_quote(command)) \
                and i + 1 < len(body):
            i += 1
            command.append(body[i])
        i += 1
        code = "\n".join(command)
        if " # -> " in code:  # an answer on the command's own line
            code, answer_text = code.split(" # -> ", 1)
            found.append(Step("sh", code, [answer_text.strip()], first_line + start))
        else:
            found.append(Step("sh", code, [], first_line + start))
    return found


def _open_quote(lines: list[str]) -> bool:
    """Whether a shell command still has a quote open (a JSON body over several lines)."""
    try:
        shlex.split("\n".join(lines), comments=True)
    except ValueError:
        return True
    return False


# ---------------------------------------------------------------- matching

_ANY = "\x00any"
_MORE = "\x00more"
_PREFIX = "\x00prefix:"


def _with_holes(text: str) -> str:
    """The README's JSON with its holes turned into markers JSON can carry."""
    def marker(value: str) -> object:
        return lambda _m: json.dumps(value)

    text = re.sub(r'"([A-Za-z0-9_./:-]*)\.\.\."', lambda m: json.dumps(_PREFIX + m.group(1)),
                  text)
    text = re.sub(r"\[\s*\.\.\.\s*\]|\{\s*\.\.\.\s*\}", marker(_ANY), text)
    text = re.sub(r",\s*\.\.\.\s*\}", lambda _m: f", {json.dumps(_MORE)}: 0}}", text)
    text = re.sub(r",\s*\.\.\.\s*\]", lambda _m: f", {json.dumps(_MORE)}]", text)
    return re.sub(r"(?<=[:\[,])\s*\.\.\.(?=\s*[,}\]])", marker(_ANY), text)


def _digits(shown: str) -> int | None:
    """How many decimals a number is shown with (None: an integer, compared exactly)."""
    if "e" in shown.lower():
        mantissa = shown.lower().split("e")[0]
        return len(mantissa.split(".")[1]) if "." in mantissa else 0
    return len(shown.split(".")[1]) if "." in shown else None


def _same_number(shown: str, actual: float) -> bool:
    digits = _digits(shown)
    expected = float(shown)
    if digits is None:
        return actual == expected
    if "e" in shown.lower():  # to the significant digits shown
        return f"{actual:.{digits}e}" == f"{expected:.{digits}e}"
    return abs(round(actual, digits) - expected) < 10 ** -(digits + 3)


def _match_json(expected: Any, actual: Any, shown: dict[int, str], where: str) -> list[str]:
    if expected == _ANY:
        return []
    if isinstance(expected, str) and expected.startswith(_PREFIX):
        prefix = expected[len(_PREFIX):]
        ok = isinstance(actual, str) and actual.startswith(prefix)
        return [] if ok else [f"{where}: expected a string starting {prefix!r}, got {actual!r}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        keys = [k for k in expected if k != _MORE]
        problems = [f"{where}: no key {k!r}" for k in keys if k not in actual]
        if _MORE not in expected:
            problems += [f"{where}: unexpected key {k!r}" for k in actual if k not in expected]
        for k in keys:
            if k in actual:
                problems += _match_json(expected[k], actual[k], shown, f"{where}.{k}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r}"]
        more = bool(expected) and expected[-1] == _MORE
        items = expected[:-1] if more else expected
        if len(actual) < len(items) or (not more and len(actual) != len(items)):
            return [f"{where}: expected {len(items)}{'+' if more else ''} items, "
                    f"got {len(actual)}"]
        problems = []
        for n, (e, a) in enumerate(zip(items, actual, strict=False)):
            problems += _match_json(e, a, shown, f"{where}[{n}]")
        return problems
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return [] if expected == actual else [f"{where}: expected {expected!r}, got {actual!r}"]
    if isinstance(expected, int | float):
        text = shown.get(id(expected), repr(expected))
        ok = isinstance(actual, int | float) and not isinstance(actual, bool) and \
            _same_number(text, float(actual))
        return [] if ok else [f"{where}: expected {text}, got {actual!r}"]
    return [f"{where}: cannot compare {expected!r}"]


def _parse_keeping_digits(text: str) -> tuple[Any, dict[int, str]]:
    """The JSON pattern, and for each of its floats the text it was written as (so that
    ``0.25999`` is compared to five decimals, not as the float it parses to)."""
    shown: dict[int, str] = {}

    def keep(raw: str) -> float:
        value = float(raw)
        shown[id(value)] = raw
        return value

    patterned = _with_holes(text)
    value = json.loads(patterned, parse_float=keep)
    return value, shown


def _match_text(expected: str, actual: str) -> list[str]:
    """Each expected line appears in the output, in order; numbers to the digits shown."""
    out_lines = actual.splitlines()
    at = 0
    for want in expected.splitlines():
        pattern, numbers = _line_pattern(want)
        for n in range(at, len(out_lines)):
            m = pattern.fullmatch(out_lines[n].rstrip())
            if m and all(_same_number(shown, float(got))
                         for shown, got in zip(numbers, m.groups(), strict=True)):
                at = n + 1
                break
        else:
            return [f"no line like {want!r} in:\n{actual[-1500:]}"]
    return []


def _line_pattern(want: str) -> tuple[re.Pattern[str], list[str]]:
    parts: list[str] = []
    numbers: list[str] = []
    pos = 0
    token = re.compile(r"\.\.\.|" + ID_PLACEHOLDER.pattern + "|" + NUMBER.pattern + r"|\s+")
    for m in token.finditer(want):
        parts.append(re.escape(want[pos:m.start()]))
        piece = m.group(0)
        if piece == "...":
            parts.append(".*?")
        elif ID_PLACEHOLDER.fullmatch(piece):
            parts.append(re.escape(piece[:-3]) + "[0-9a-f]{24}")
        elif piece.isspace():
            parts.append(r"\s+")
        elif "." in piece or "e" in piece.lower():
            numbers.append(piece)
            parts.append(r"(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)")
        else:
            parts.append(re.escape(piece))
        pos = m.end()
    parts.append(re.escape(want[pos:]))
    return re.compile(r"\s*" + "".join(parts) + r"\s*"), numbers


def mismatches(expected: str, actual: str) -> list[str]:
    """What differs between the README's answer and the output (empty: they agree)."""
    if expected[:1] in "{[":
        try:
            pattern, shown = _parse_keeping_digits(expected.replace("\n", " "))
        except ValueError:  # not JSON: lines of text that start with a bracket
            return _match_text(expected, actual)
        try:
            got = json.loads(actual)
        except ValueError:
            return [f"expected JSON, got: {actual[:500]!r}"]
        return _match_json(pattern, got, shown, "answer")
    return _match_text(expected, actual)
