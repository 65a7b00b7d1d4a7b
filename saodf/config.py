"""Settings of every SAODF component, read from ``SAODF_*`` environment variables.

Each port, path and URL has a default for the local stack on 127.0.0.1 and can be
overridden, so that tests run several stacks side by side on free ports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from saodf.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_PORTS = {
    "kafka": 19092,
    "redis": 16379,
    "moto": 15055,
    "mlflow": 15050,
    "airflow": 18080,
    "gateway": 13233,
}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; set it to true or false")


def _env_optional(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


REDIS_ROLE_USER_PREFIX = "SAODF_REDIS_USER_"


def _redis_role_users() -> dict[str, str]:
    """Return ``{role: user}`` from the non-empty ``SAODF_REDIS_USER_<ROLE>`` variables."""
    return {
        name[len(REDIS_ROLE_USER_PREFIX) :].lower(): value
        for name, value in sorted(os.environ.items())
        if name.startswith(REDIS_ROLE_USER_PREFIX) and value
    }


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; build it with :func:`get_settings` or :meth:`from_env`."""

    home: Path
    data_dir: Path
    host: str
    ports: dict[str, int]
    target: str
    kafka_bootstrap: str
    redis_host: str
    redis_port: int
    # One Redis user for every role (SAODF_REDIS_USER), empty for the per-role users of
    # actions.redis_acl. Settings scoped to a tenant hold the tenant's user.
    redis_user: str
    redis_maxmemory: str
    mlflow_tracking_uri: str
    aws_endpoint_url: str | None
    aws_region: str
    gateway_url: str
    gateway_namespace: str
    lake_url: str
    topic_raw: str = "telemetry.raw"
    topic_windows: str = "telemetry.windows"
    topic_anomalies: str = "telemetry.anomalies"
    topic_dlq: str = "telemetry.dlq"
    sqs_queue: str = "telemetry-raw"
    sqs_dlq: str = "telemetry-raw-dlq"
    window_messages: int = 50_000
    window_seconds: float = 30.0
    kafka_session_timeout_ms: int = 6000
    history_hours: int = 168
    heavy_pool: str = "saodf_heavy"
    heavy_pool_slots: int = 1
    # Tasks that wait on Glue or SageMaker jobs (aws target); caps the jobs running at once.
    remote_pool: str = "saodf_remote"
    remote_pool_slots: int = 4
    registered_model_prefix: str = "saodf-forecaster"
    mlflow_experiment: str = "telemetry_pipeline"
    extra: dict[str, str] = field(default_factory=dict)
    # TLS to Redis (ElastiCache in-transit encryption). The local stack keeps plain TCP on
    # loopback; the cert and key are for servers that require client certificates.
    redis_tls: bool = False
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None
    # Redis user of each role set by SAODF_REDIS_USER_<ROLE>, keyed by the role in lower
    # case. It takes precedence over redis_user.
    redis_role_users: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        home = Path(_env("SAODF_HOME", str(PROJECT_ROOT / ".saodf"))).resolve()
        data_dir = Path(_env("SAODF_DATA_DIR", str(PROJECT_ROOT.parent / "shared" / "data")))
        host = _env("SAODF_HOST", "127.0.0.1")
        ports = {
            name: _env_int(f"SAODF_{name.upper()}_PORT", default, minimum=1)
            for name, default in DEFAULT_PORTS.items()
        }
        target = _env("SAODF_TARGET", "local")
        if target not in ("local", "aws"):
            raise ConfigError(f"SAODF_TARGET={target!r} is invalid; use 'local' or 'aws'")
        moto_url = f"http://{host}:{ports['moto']}"
        aws_endpoint = os.environ.get("SAODF_AWS_ENDPOINT_URL")
        if aws_endpoint is None:
            aws_endpoint = moto_url if target == "local" else None
        return cls(
            home=home,
            data_dir=data_dir.resolve(),
            host=host,
            ports=ports,
            target=target,
            kafka_bootstrap=_env("SAODF_KAFKA_BOOTSTRAP", f"{host}:{ports['kafka']}"),
            redis_host=_env("SAODF_REDIS_HOST", host),
            redis_port=_env_int("SAODF_REDIS_PORT", ports["redis"], minimum=1),
            redis_user=_env("SAODF_REDIS_USER", ""),
            redis_maxmemory=_env("SAODF_REDIS_MAXMEMORY", "256mb"),
            mlflow_tracking_uri=_env("SAODF_MLFLOW_URI", f"http://{host}:{ports['mlflow']}"),
            aws_endpoint_url=aws_endpoint or None,
            aws_region=_env("SAODF_AWS_REGION", "us-east-1"),
            gateway_url=_env("SAODF_GATEWAY_URL", f"http://{host}:{ports['gateway']}"),
            gateway_namespace=_env("SAODF_GATEWAY_NAMESPACE", "saodf"),
            lake_url=_env("SAODF_LAKE_URL", (home / "lake").as_uri()),
            window_messages=_env_int("SAODF_WINDOW_MESSAGES", 50_000, minimum=1),
            window_seconds=_env_float("SAODF_WINDOW_SECONDS", 30.0),
            kafka_session_timeout_ms=_env_int("SAODF_KAFKA_SESSION_TIMEOUT_MS", 6000, minimum=1000),
            history_hours=_env_int("SAODF_HISTORY_HOURS", 168, minimum=1),
            heavy_pool_slots=_env_int("SAODF_HEAVY_POOL_SLOTS", 1, minimum=1),
            remote_pool_slots=_env_int("SAODF_REMOTE_POOL_SLOTS", 4, minimum=1),
            redis_tls=_env_bool("SAODF_REDIS_TLS", False),
            redis_tls_ca_file=_env_optional("SAODF_REDIS_TLS_CA_FILE"),
            redis_tls_cert_file=_env_optional("SAODF_REDIS_TLS_CERT_FILE"),
            redis_tls_key_file=_env_optional("SAODF_REDIS_TLS_KEY_FILE"),
            redis_role_users=_redis_role_users(),
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def batch_dir(self) -> Path:
        """Root of the per-run batch workspaces that the teardown task removes."""
        return self.home / "batch"

    def lake_path(self, *parts: str) -> str:
        """Join ``parts`` under the lake URL (``file://`` or ``s3://``) with ``/``."""
        return "/".join([self.lake_url.rstrip("/"), *[p.strip("/") for p in parts if p]])


@lru_cache(maxsize=1)
def _cached() -> Settings:
    return Settings.from_env()


def get_settings() -> Settings:
    """Return the settings of this process; call :func:`reset_settings` after changing the env."""
    return _cached()


def reset_settings() -> None:
    _cached.cache_clear()
