"""Which devices this process can train on, and how device names are spelt."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from functools import lru_cache

_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d{1,2})?)$")


def parse_device_name(name: str, *, allow_auto: bool = False) -> str:
    """Return the canonical device name or raise ValueError naming the accepted forms."""
    name = name.strip().lower()
    if allow_auto and name == "auto":
        return name
    if not _DEVICE_RE.match(name):
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or mps")
    return name


def _cpu_only_build() -> bool:
    """Whether the installed torch is a CPU-only wheel, which says so in its version
    (``2.13.0+cpu``) on Linux and Windows: known without importing torch, so that an API
    process with ``device=auto`` submits jobs without loading it."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    return version.endswith("+cpu") and sys.platform != "darwin"


@lru_cache(maxsize=1)
def available_devices() -> tuple[str, ...]:
    """The devices present on this machine, cpu always among them."""
    if _cpu_only_build():
        return ("cpu",)
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
        found.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return tuple(found)


def resolve_device(requested: str | None, default: str) -> str:
    """Turn a job's device request (or the server default) into a device this machine has.

    Raises LookupError with the available devices when the device is absent.
    """
    name = parse_device_name(requested or default, allow_auto=True)
    if name == "cpu":  # every machine has one: no need to import torch to know (the API
        return name    # process then starts and submits without it)
    have = available_devices()
    if name == "auto":
        if "cuda" in have:
            return "cuda"
        if "mps" in have:
            return "mps"
        return "cpu"
    if name not in have:
        raise LookupError(f"device {name!r} is not available here; available: {', '.join(have)}")
    return name
