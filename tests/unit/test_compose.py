"""Structural checks of docker-compose.yaml, each shown able to fail on a bad variant.

No Docker engine runs here, so the file is checked as loaded YAML: the services of the
stack, health checks, ports bound to 127.0.0.1, named volumes and secrets that come
only from .env. When check-jsonschema is installed (infra/tools/install-tools.sh), the
file is also validated against the compose-spec JSON schema that it vendors.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from saodf.config import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yaml"
TEMPLATE = PROJECT_ROOT / "docker" / "env.template"
TOOLS_DIR = Path(os.environ.get("SAODF_TOOLS_DIR", PROJECT_ROOT / ".saodf" / "tools"))
CHECK_JSONSCHEMA = TOOLS_DIR / "check-jsonschema" / "bin" / "check-jsonschema"

REQUIRED_SERVICES = {
    "kafka",
    "redis",
    "postgres",
    "mlflow",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "action-gateway",
    "action-runtime",
    "ingest-gateway",
    "moto",
}
# One-shot jobs: they exit when done, so a health check would never turn healthy.
ONE_SHOT = {"airflow-init", "kafka-topics"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|PRIVATE|_KEY$|KEYS", re.IGNORECASE)
# moto accepts any access key; these literal values are documented test keys, not secrets.
ALLOWED_LITERALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def load(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


# --- checks: each returns a list of problems ---


def missing_services(compose: dict) -> list[str]:
    return sorted(REQUIRED_SERVICES - set(compose.get("services", {})))


def missing_healthchecks(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck") or {}
        if check.get("disable") or not check.get("test"):
            problems.append(f"{name} has no health check")
    return problems


def public_ports(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            if host_ip != "127.0.0.1":
                problems.append(f"{name} publishes {port!r} beyond 127.0.0.1")
        if service.get("network_mode") == "host":
            problems.append(f"{name} uses the host network")
    return problems


def unnamed_volumes(compose: dict) -> list[str]:
    declared = set(compose.get("volumes") or {})
    problems = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith(("./", "/", "${", "~")):
                continue
            if source not in declared:
                problems.append(f"{name} mounts undeclared volume {source!r}")
    for name in ("kafka", "redis", "postgres", "mlflow"):
        sources = [
            v.split(":")[0] if isinstance(v, str) else v.get("source")
            for v in compose["services"].get(name, {}).get("volumes", [])
        ]
        if not any(source in declared for source in sources):
            problems.append(f"{name} keeps its data outside a named volume")
    return problems


def inline_secrets(compose: dict) -> list[str]:
    """Find secret-like values written into the file instead of read from .env."""
    problems = []
    for name, service in compose["services"].items():
        for key, value in environment_of(service).items():
            if not SECRET_NAME.search(key) or key.endswith(("_FILE", "_CMD")):
                continue
            if ALLOWED_LITERALS.get(key) == value:
                continue
            problems.append(f"{name} sets {key} inline")
        command = service.get("command") or []
        text = " ".join(command) if isinstance(command, list) else str(command)
        if re.search(r"(--requirepass|--pass(word)?)\s", text):
            problems.append(f"{name} passes a password on the command line")
    for secret, spec in (compose.get("secrets") or {}).items():
        if "environment" not in spec and "file" not in spec:
            problems.append(f"secret {secret} has no environment or file source")
    text = yaml.safe_dump(compose)
    for match in re.finditer(r"\$\{(\w+):?-[^}]+\}", text):
        if SECRET_NAME.search(match.group(1)):
            problems.append(f"{match.group(1)} has a default value")
    return problems


CHECKS = [missing_services, missing_healthchecks, public_ports, unnamed_volumes, inline_secrets]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_compose_check_passes(check):
    assert check(load()) == []


def test_compose_kafka_kraft():
    compose = load()
    env = environment_of(compose["services"]["kafka"])
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    assert not any("zookeeper" in name for name in compose["services"])
    assert env["CLUSTER_ID"].startswith("${KAFKA_CLUSTER_ID:?")


def test_compose_redis_acl_user():
    start = (PROJECT_ROOT / "docker" / "redis" / "start.sh").read_text(encoding="utf-8")
    assert "user default off" in start
    assert "/run/secrets/redis_password" in start
    assert "redis_password" in load()["services"]["redis"]["secrets"]


def test_compose_secrets_in_template():
    compose = load()
    template = TEMPLATE.read_text(encoding="utf-8")
    assigned = dict(
        line.split("=", 1) for line in template.splitlines() if line and not line.startswith("#")
    )
    needed = {spec["environment"] for spec in compose["secrets"].values()}
    needed |= set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text(encoding="utf-8")))
    assert needed <= set(assigned)
    assert all(value == "" for value in assigned.values())


def test_compose_secrets_declared():
    compose = load()
    declared = set(compose["secrets"])
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            assert source in declared, f"{name} uses undeclared secret {source}"


def test_compose_airflow_waits_for_init():
    services = load()["services"]
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor"):
        condition = services[name]["depends_on"]["airflow-init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_compose_bad_variant_fails():
    bad = copy.deepcopy(load())
    del bad["services"]["moto"]
    bad["services"]["redis"]["ports"] = ["6379:6379"]
    bad["services"]["kafka"]["ports"] = [{"target": 9092, "published": 9092}]
    bad["services"]["mlflow"].pop("healthcheck")
    bad["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    bad["services"]["postgres"]["volumes"] = ["pgdata:/var/lib/postgresql/data"]
    bad["services"]["redis"]["command"] = ["redis-server", "--requirepass", "x"]
    assert missing_services(bad) == ["moto"]
    assert len(public_ports(bad)) == 2
    assert missing_healthchecks(bad) == ["mlflow has no health check"]
    assert len(unnamed_volumes(bad)) == 2
    assert len(inline_secrets(bad)) == 2


def test_compose_secret_default_fails():
    bad = copy.deepcopy(load())
    bad["services"]["mlflow"]["environment"] = {"DB_URL": "x${POSTGRES_PASSWORD:-changeme}"}
    assert inline_secrets(bad) == ["POSTGRES_PASSWORD has a default value"]


@pytest.mark.skipif(
    not CHECK_JSONSCHEMA.exists(),
    reason=f"check-jsonschema not installed in {CHECK_JSONSCHEMA.parent.parent}; run "
    "infra/tools/install-tools.sh",
)
def test_compose_matches_schema():
    result = subprocess.run(  # noqa: S603 - fixed argv
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
