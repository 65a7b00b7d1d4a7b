"""Session fixtures that start real services on 127.0.0.1 on free ports and stop them by pid."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from saodf.config import PROJECT_ROOT, Settings, reset_settings
from saodf.stack import process, services

os.environ.setdefault("SAODF_LOG_LEVEL", "INFO")
# Airflow reads its config at import: point it at a throwaway home, never ~/airflow.
if "AIRFLOW_HOME" not in os.environ:
    import tempfile

    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="saodf-airflow-test-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))


def _free_ports() -> dict[str, int]:
    return {
        name: process.free_port()
        for name in ("kafka", "redis", "moto", "mlflow", "airflow", "gateway")
    }


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("saodf-home")


@pytest.fixture(scope="session")
def session_settings(stack_home) -> Settings:
    """Settings of the test stack: a temporary home and free ports, never the user's .saodf."""
    ports = _free_ports()
    env = {
        "SAODF_HOME": str(stack_home),
        "SAODF_DATA_DIR": str(PROJECT_ROOT.parent / "shared" / "data"),
        "SAODF_LAKE_URL": (stack_home / "lake").as_uri(),
        **{f"SAODF_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        # Ports read by the ingest modules themselves, not by Settings.
        "SAODF_INGEST_PORT": str(process.free_port()),
        "SAODF_MQTT_PORT": str(process.free_port()),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    for key in (
        "SAODF_KAFKA_BOOTSTRAP",
        "SAODF_MLFLOW_URI",
        "SAODF_GATEWAY_URL",
        "SAODF_REDIS_HOST",
        "SAODF_AWS_ENDPOINT_URL",
        # Redis users set by the user would replace the test stack's per-role users.
        "SAODF_REDIS_USER",
        *(name for name in os.environ if name.startswith("SAODF_REDIS_USER_")),
    ):
        # URLs set by the user would point the tests at their services: derive them from the ports.
        saved.setdefault(key, os.environ.pop(key, None))
    reset_settings()
    settings = Settings.from_env()
    yield settings
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings()


def _run_service(spec):
    process.start(spec)
    return spec


@pytest.fixture(scope="session")
def kafka_bootstrap(session_settings) -> str:
    spec = _run_service(services.broker_spec(session_settings))
    yield session_settings.kafka_bootstrap
    process.stop(spec)


@dataclass
class RedisServer:
    """The session's redis-server; ``client()`` logs in as the admin user, for test setup."""

    host: str
    port: int
    username: str
    password: str

    def client(self, **kwargs):
        import redis

        return redis.Redis(
            host=self.host, port=self.port, username=self.username, password=self.password, **kwargs
        )


@pytest.fixture(scope="session")
def redis_server(session_settings) -> RedisServer:
    from saodf.tenants import REDIS_ADMIN_USER, redis_admin_password

    spec = _run_service(services.redis_spec(session_settings))
    yield RedisServer(
        host=session_settings.redis_host,
        port=session_settings.redis_port,
        username=REDIS_ADMIN_USER,
        password=redis_admin_password(session_settings),
    )
    process.stop(spec)


@pytest.fixture(scope="session")
def moto_endpoint(session_settings) -> str:
    spec = _run_service(services.moto_spec(session_settings))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    yield f"http://{session_settings.host}:{session_settings.ports['moto']}"
    process.stop(spec)


@pytest.fixture(scope="session")
def mlflow_uri(session_settings) -> str:
    spec = _run_service(services.mlflow_spec(session_settings))
    yield session_settings.mlflow_tracking_uri
    process.stop(spec)


@pytest.fixture
def saodf_env(session_settings, tmp_path, monkeypatch) -> Settings:
    """Point SAODF_* at the session services with a fresh home and lake for this test."""
    home = tmp_path / "home"
    home.mkdir()
    # Secrets (Redis password, gateway keys) stay those of the session services.
    (home / "secrets").symlink_to(session_settings.home / "secrets", target_is_directory=True) if (
        session_settings.home / "secrets"
    ).exists() else None
    monkeypatch.setenv("SAODF_HOME", str(home))
    monkeypatch.setenv("SAODF_LAKE_URL", (tmp_path / "lake").as_uri())
    reset_settings()
    settings = Settings.from_env()
    yield settings
    reset_settings()


@pytest.fixture(scope="session")
def gateway_url(session_settings, redis_server, mlflow_uri) -> str:
    """The action gateway as its own process, wired to the session's Redis and MLflow."""
    spec = _run_service(services.gateway_spec(session_settings))
    yield session_settings.gateway_url
    process.stop(spec)


@pytest.fixture(scope="module")
def airflow_db():
    """Migrate the Airflow metadata DB of this session's AIRFLOW_HOME, for ``dag.test()``."""
    import subprocess

    result = subprocess.run(  # noqa: S603 - fixed argv
        [services.find_binary("airflow"), "db", "migrate"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture
def moto_recorder(moto_endpoint):
    """Return the JSON bodies that moto_server received during the test, by X-Amz-Target."""
    import base64
    import json

    import requests

    base = f"{moto_endpoint}/moto-api/recorder"
    requests.post(f"{base}/reset-recording", timeout=10)
    requests.post(f"{base}/start-recording", timeout=10)

    def received(target: str) -> list[dict]:
        text = requests.get(f"{base}/download-recording", timeout=30).text
        bodies = []
        for line in text.splitlines():
            entry = json.loads(line)
            if entry["headers"].get("X-Amz-Target") != target:
                continue
            body = entry["body"]
            if entry["body_encoded"]:
                body = base64.b64decode(body).decode()
            bodies.append(json.loads(body))
        return bodies

    yield received
    requests.post(f"{base}/stop-recording", timeout=10)
