"""Per-device ingest tokens, stored hashed in ``<SAODF_HOME>/secrets/device_tokens.json``.

A token authenticates one device: over HTTP as ``Authorization: Bearer <token>``, over
MQTT as the password of the user named after the device. The file keeps only a SHA-256
digest of each token (for HTTP) and a PBKDF2-SHA512 hash in mosquitto's ``$7$`` format
(for the broker's password file), so a copy of the file reveals no token. Creating a token
for a device that has one rotates it: the old token stops working at once.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import secrets
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from saodf.config import Settings, get_settings
from saodf.errors import ConfigError
from saodf.secrets import get_or_create_secret, secrets_dir, write_json_secret
from saodf.telemetry import DEVICE_ID_PATTERN, format_timestamp

logger = logging.getLogger(__name__)

TOKENS_FILE = "device_tokens.json"
MQTT_BRIDGE_USER = "saodf-mqtt-bridge"
# Mosquitto 2.0's mosquitto_passwd uses PBKDF2-SHA512 with 101 iterations and a 12-byte salt.
MOSQUITTO_ITERATIONS = 101
MOSQUITTO_SALT_BYTES = 12


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    """Hash ``password`` as a mosquitto 2.0 password-file entry (``$7$``, PBKDF2-SHA512)."""
    salt = salt if salt is not None else os.urandom(MOSQUITTO_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, MOSQUITTO_ITERATIONS, 64)
    salt_text = base64.b64encode(salt).decode("ascii")
    return f"$7${MOSQUITTO_ITERATIONS}${salt_text}${base64.b64encode(digest).decode('ascii')}"


def _tokens_path(settings: Settings) -> Path:
    return secrets_dir(settings) / TOKENS_FILE


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    lock_path = secrets_dir(settings) / f"{TOKENS_FILE}.lock"
    with open(lock_path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(settings: Settings) -> dict:
    path = _tokens_path(settings)
    if not path.exists():
        return {"devices": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(
            f"device token file {path} is not valid JSON ({exc}); restore it or delete it and "
            "create the device tokens again"
        ) from None


def create_device_token(device_id: str, settings: Settings | None = None) -> str:
    """Create or rotate the token of ``device_id`` and return it; it is not stored in clear.

    Raises:
        ConfigError: when ``device_id`` breaks the telemetry contract's device id rule.
    """
    settings = settings or get_settings()
    if not DEVICE_ID_PATTERN.match(device_id):
        raise ConfigError(
            f"device_id {device_id!r} is invalid; use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    token = secrets.token_urlsafe(32)
    with _locked(settings):
        store = _load(settings)
        rotated = device_id in store["devices"]
        store["devices"][device_id] = {
            "sha256": _digest(token),
            "mosquitto": mosquitto_hash(token),
            "created_at": format_timestamp(datetime.now(timezone.utc)),
        }
        write_json_secret(TOKENS_FILE, store, settings)
    logger.info("%s the ingest token of device %s", "rotated" if rotated else "created", device_id)
    return token


def revoke_device_token(device_id: str, settings: Settings | None = None) -> bool:
    """Remove the token of ``device_id``; return False when the device had none."""
    settings = settings or get_settings()
    with _locked(settings):
        store = _load(settings)
        if store["devices"].pop(device_id, None) is None:
            return False
        write_json_secret(TOKENS_FILE, store, settings)
    logger.info("revoked the ingest token of device %s", device_id)
    return True


def list_token_devices(settings: Settings | None = None) -> list[str]:
    return sorted(_load(settings or get_settings())["devices"])


def mqtt_bridge_password(settings: Settings | None = None) -> str:
    return get_or_create_secret("mqtt_bridge_password", settings)


def mosquitto_password_lines(settings: Settings) -> list[str]:
    """Return the password-file lines of the MQTT bridge user and of every device."""
    lines = [f"{MQTT_BRIDGE_USER}:{mosquitto_hash(mqtt_bridge_password(settings))}"]
    for device_id, entry in sorted(_load(settings)["devices"].items()):
        lines.append(f"{device_id}:{entry['mosquitto']}")
    return lines


class DeviceTokens:
    """Token lookup for the gateway; the file is read again whenever it changes on disk."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._path = _tokens_path(settings)
        self._lock = threading.Lock()
        self._mtime_ns: int | None = None
        self._by_digest: dict[str, str] = {}

    def _refresh(self) -> None:
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            self._by_digest, self._mtime_ns = {}, None
            return
        if mtime == self._mtime_ns:
            return
        devices = _load(self.settings)["devices"]
        self._by_digest = {entry["sha256"]: device for device, entry in devices.items()}
        self._mtime_ns = mtime

    def authenticate(self, token: str) -> str | None:
        """Return the device id that ``token`` belongs to, or None for an unknown token."""
        if not token:
            return None
        digest = _digest(token)
        # A dict lookup by digest is safe from timing attacks: the digest of a guess reveals
        # nothing about a stored token.
        with self._lock:
            self._refresh()
            return self._by_digest.get(digest)
