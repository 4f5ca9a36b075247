"""Device names and which devices this machine has."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.training import devices
from service.training.devices import parse_device_name, resolve_device


def test_device_names_are_checked_and_canonical():
    assert parse_device_name(" CUDA:1 ") == "cuda:1"
    assert parse_device_name("auto", allow_auto=True) == "auto"
    with pytest.raises(ValueError, match="use cpu, cuda, cuda:N or mps"):
        parse_device_name("tpu")


def test_auto_on_a_cpu_only_torch_is_cpu_without_importing_torch():
    """The API process resolves ``device=auto`` at submit: on a CPU-only wheel it must not
    load torch for that (hundreds of MB in a process that never trains)."""
    if not devices._cpu_only_build():
        pytest.skip("the installed torch is not a CPU-only wheel")
    code = ("import sys; from service.training.devices import resolve_device; "
            "print(resolve_device(None, 'auto'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["cpu", "False"]


def test_other_builds_ask_torch(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(devices, "_cpu_only_build", lambda: False)
    devices.available_devices.cache_clear()
    try:
        have = devices.available_devices()
        assert have[0] == "cpu"
        assert ("cuda" in have) == torch.cuda.is_available()
        with pytest.raises(LookupError, match="available: cpu"):
            resolve_device("cuda:9", "cpu")
    finally:
        devices.available_devices.cache_clear()
