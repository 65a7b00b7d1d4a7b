"""Service definitions of the real-time path, and a TLS-ready Redis configuration.

:func:`realtime_service_specs` returns the processes that the stack manager runs next to
the gateway. :func:`redis_config_lines` writes the same Redis configuration as the local
stack, optionally with a TLS listener in place of the plain port, as ElastiCache in-transit
encryption expects.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from saodf.config import Settings
from saodf.errors import ServiceError
from saodf.stack.process import ServiceSpec
from saodf.stack.services import python_service_spec, redis_user_lines


def realtime_service_specs(settings: Settings) -> list[ServiceSpec]:
    """Return the specs of the real-time services besides the gateway: the cache hit monitor."""
    return [python_service_spec(settings, "cache-monitor", "actions.monitor")]


@dataclass(frozen=True)
class RedisServerTLS:
    """PEM files of a Redis TLS listener; ``auth_clients`` requires client certificates."""

    cert_file: str
    key_file: str
    ca_file: str
    auth_clients: bool = False


def redis_config_lines(
    settings: Settings,
    redis_dir: Path,
    maxmemory: str | None = None,
    tls: RedisServerTLS | None = None,
) -> list[str]:
    """Return redis.conf lines: loopback bind, ACL users, ``allkeys-lru`` under ``maxmemory``.

    The ACL users are those of the local stack (:func:`saodf.stack.services.redis_user_lines`).

    With ``tls`` the server listens with TLS on ``settings.redis_port`` and has no plain
    port. ``maxmemory`` defaults to ``settings.redis_maxmemory``.
    """
    lines = [
        f"bind {settings.host}",
        "protected-mode yes",
        f"dir {redis_dir}",
        "save ''",
        "appendonly no",
        f"maxmemory {maxmemory or settings.redis_maxmemory}",
        "maxmemory-policy allkeys-lru",
        "daemonize no",
        "logfile ''",
        *redis_user_lines(settings),
    ]
    if tls is None:
        lines.append(f"port {settings.redis_port}")
        return lines
    lines += [
        "port 0",
        f"tls-port {settings.redis_port}",
        f"tls-cert-file {tls.cert_file}",
        f"tls-key-file {tls.key_file}",
        f"tls-ca-cert-file {tls.ca_file}",
        f"tls-auth-clients {'yes' if tls.auth_clients else 'no'}",
    ]
    return lines


def write_config(path: Path, lines: list[str]) -> Path:
    """Write a config file with mode 0600, because it contains the ACL passwords."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


def _cache_answers(settings: Settings) -> bool:
    import redis

    from actions.cache import redis_client
    from actions.redis_acl import HEALTH

    try:
        return bool(redis_client(settings, timeout=1.0, role=HEALTH).ping())
    except (redis.RedisError, OSError):
        return False


def cache_redis_spec(
    settings: Settings,
    name: str = "redis",
    maxmemory: str | None = None,
    tls: RedisServerTLS | None = None,
) -> ServiceSpec:
    """Return the spec of a redis-server for the forecast cache, optionally with TLS only.

    The config goes to ``SAODF_HOME/<name>/redis.conf``. The health check connects as the
    actions do (:func:`actions.cache.redis_client`), so with ``tls`` set, ``settings``
    must carry ``redis_tls`` and the CA file that verifies the server certificate.

    Raises:
        ServiceError: redis-server is not on PATH.
    """
    server = shutil.which("redis-server")
    if server is None:
        raise ServiceError(
            "redis-server not found on PATH; install it with `apt-get install redis-server`"
        )
    redis_dir = settings.home / name
    redis_dir.mkdir(parents=True, exist_ok=True)
    lines = redis_config_lines(settings, redis_dir, maxmemory, tls)
    conf = write_config(redis_dir / "redis.conf", lines)
    return ServiceSpec(
        name=name,
        argv=[server, str(conf)],
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        port=settings.redis_port,
        host=settings.host,
        cwd=settings.home,
        health=lambda: _cache_answers(settings),
        start_timeout=20,
        port_env_var="SAODF_REDIS_PORT",
    )
