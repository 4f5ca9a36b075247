"""docker-compose.yml against the code: the services the scale-out mode needs, commands the
CLI has, and environment variables that are settings the code reads (with valid values)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from service.cli import cli
from service.config import Settings

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"
FITSERVE_SERVICES = ("migrate", "api", "worker", "gpu-worker")
SECRET = re.compile(r"^\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}$")
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(:\?[^}]*|:-[^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping, so it can be checked"
    return {k: str(v) for k, v in env.items()}


def _filled(value: str) -> str:
    """The value as compose would pass it, with each ${VAR...} standing in as "x"."""
    return INTERPOLATION.sub("x", value)


def test_the_scale_out_services_are_all_there(compose):
    assert set(compose["services"]) == {*FITSERVE_SERVICES, "redis", "postgres", "minio"}
    gpu = compose["services"]["gpu-worker"]
    assert "gpu" in gpu["profiles"]  # optional: only with --profile gpu
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_commands_are_commands_of_the_cli(compose):
    root = get_command(cli)
    seen = {}
    for name in FITSERVE_SERVICES:
        command = compose["services"][name]["command"]
        assert command[0] == "fitserve", name
        group, args = root, command[1:]
        while hasattr(group, "commands") and args and args[0] in group.commands:
            group, args = group.commands[args[0]], args[1:]
        assert not hasattr(group, "commands"), f"{name}: {command} names no command"
        options = {o for p in group.params for o in p.opts}
        for arg in args:
            if arg.startswith("--"):
                assert arg in options, f"{name}: {arg} is not an option of {command[:2]}"
        seen[name] = command
    assert seen["api"][1] == "serve" and seen["migrate"][1:3] == ["db", "upgrade"]
    assert seen["worker"][1:4] == ["worker", "--device", "cpu"]
    assert seen["gpu-worker"][1:4] == ["worker", "--device", "cuda"]


def test_the_api_is_a_lean_predict_replica(compose):
    # training runs on the Celery workers; the API replicas import no torch (issue 13)
    command = compose["services"]["api"]["command"]
    assert command[1] == "serve" and command[command.index("--role") + 1] == "predict"


def test_environment_is_settings_the_code_reads_with_valid_values(compose):
    fields = set(Settings.model_fields)
    for name in FITSERVE_SERVICES:
        env = _env(compose["services"][name])
        values = {}
        for key, value in env.items():
            if key.startswith("FITSERVE_"):
                field = key.removeprefix("FITSERVE_").lower()
                assert field in fields, f"{name}: {key} is no setting (service/config.py)"
                values[field] = _filled(value)
            else:
                assert key.startswith("AWS_"), f"{name}: {key} is read by nothing"
        settings = Settings(**values)  # raises on a value the code would refuse
        assert settings.queue == "celery"
        assert settings.resolved_database_url.startswith("postgresql+psycopg://")
        assert settings.broker_url.startswith("redis://") and "@redis:" in settings.broker_url
        assert settings.resolved_artifacts.startswith("s3://")
        assert settings.artifacts_endpoint_url == "http://minio:9000"
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)


def test_every_fitserve_service_uses_the_same_backends(compose):
    keys = ("FITSERVE_QUEUE", "FITSERVE_DATABASE_URL", "FITSERVE_BROKER_URL",
            "FITSERVE_ARTIFACTS", "FITSERVE_ARTIFACTS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID")
    seen = {tuple(_env(compose["services"][n]).get(k) for k in keys) for n in FITSERVE_SERVICES}
    assert len(seen) == 1


def test_secrets_come_from_the_environment_and_are_required(compose):
    for name, service in compose["services"].items():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER", key):
                assert SECRET.match(value), f"{name}: {key} must be ${{VAR:?message}}"
            for var, how in INTERPOLATION.findall(value):
                if re.search(r"PASSWORD|SECRET|USER", var):
                    assert how.startswith(":?"), f"{name}: {key} has a default for {var}"


def test_healthchecks_dependencies_and_named_volumes(compose):
    services = compose["services"]
    for name, service in services.items():
        if name != "migrate":  # a one-shot job
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    api_needs = services["api"]["depends_on"]
    assert api_needs["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    declared = set(compose["volumes"])
    used = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes", [])}
    assert used and used <= declared and all(not v.startswith((".", "/")) for v in used)
