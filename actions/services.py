"""Service definitions of the real-time path, and a TLS-ready Redis configuration.

:func:`realtime_service_specs` returns the processes that the stack manager runs next to
the gateway. :func:`redis_config_lines` writes the same Redis configuration as the local
stack, optionally with a TLS listener in place of the plain port, as ElastiCache in-transit
encryption expects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from saodf.config import Settings
from saodf.stack.process import ServiceSpec
from saodf.stack.services import python_service_spec


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
    password: str,
    redis_dir: Path,
    maxmemory: str | None = None,
    tls: RedisServerTLS | None = None,
) -> list[str]:
    """Return redis.conf lines: loopback bind, ACL user, ``allkeys-lru`` under ``maxmemory``.

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
        # Every client authenticates as the ACL user, which may touch only saodf:* keys and no
        # admin commands except INFO (for the cache statistics).
        "user default off",
        f"user {settings.redis_user} on >{password} ~saodf:* resetchannels &saodf:* "
        "+@all -@dangerous +info +ping",
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
    """Write a config file with mode 0600, because it contains the ACL password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path
