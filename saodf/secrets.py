"""Secrets generated once into ``<SAODF_HOME>/secrets`` with owner-only permissions."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from saodf.config import Settings, get_settings


def secrets_dir(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    path = settings.home / "secrets"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    # Create with 0600 from the start so the secret is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def get_or_create_secret(
    name: str, settings: Settings | None = None, nbytes: int = 24, generate=None
) -> str:
    """Return the secret stored under ``name``, generating it on first use.

    ``generate()`` makes the value when given; otherwise it is ``nbytes`` random bytes,
    URL-safe base64.
    """
    path = secrets_dir(settings) / name
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = generate() if generate is not None else secrets.token_urlsafe(nbytes)
    _write_private(path, value + "\n")
    return value


def get_or_create_json_secret(name: str, factory, settings: Settings | None = None) -> dict:
    """Return the JSON secret stored under ``name``, creating it with ``factory()`` on first use."""
    path = secrets_dir(settings) / name
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    value = factory()
    _write_private(path, json.dumps(value, indent=2) + "\n")
    return value


def write_json_secret(name: str, value: dict, settings: Settings | None = None) -> Path:
    path = secrets_dir(settings) / name
    _write_private(path, json.dumps(value, indent=2) + "\n")
    return path


def redis_password(settings: Settings | None = None) -> str:
    return get_or_create_secret("redis_password", settings)


def gateway_keys(settings: Settings | None = None) -> dict[str, str]:
    """Return ``{namespace: "uuid:key"}``, the OpenWhisk-style API keys of the action gateway."""
    settings = settings or get_settings()

    def create() -> dict[str, str]:
        import uuid

        return {settings.gateway_namespace: f"{uuid.uuid4()}:{secrets.token_urlsafe(48)}"}

    return get_or_create_json_secret("gateway_keys.json", create, settings)


def airflow_admin_password(settings: Settings | None = None) -> str:
    return get_or_create_secret("airflow_admin_password", settings, nbytes=12)
