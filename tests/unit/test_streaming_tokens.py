"""Unit tests of the per-device ingest tokens."""

from __future__ import annotations

import base64
import hashlib

import pytest

from saodf.config import Settings
from saodf.errors import ConfigError
from streaming.tokens import (
    DeviceTokens,
    create_device_token,
    list_token_devices,
    mosquitto_hash,
    mosquitto_password_lines,
    revoke_device_token,
)


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    return Settings.from_env()


def test_token_authenticates_device(settings):
    token = create_device_token("dev-1", settings)
    assert DeviceTokens(settings).authenticate(token) == "dev-1"


def test_token_unknown_rejected(settings):
    create_device_token("dev-1", settings)
    assert DeviceTokens(settings).authenticate("guess") is None


def test_token_rotation_invalidates_old(settings):
    tokens = DeviceTokens(settings)
    old = create_device_token("dev-1", settings)
    assert tokens.authenticate(old) == "dev-1"
    new = create_device_token("dev-1", settings)
    assert tokens.authenticate(old) is None
    assert tokens.authenticate(new) == "dev-1"


def test_token_revoke(settings):
    token = create_device_token("dev-1", settings)
    assert revoke_device_token("dev-1", settings) is True
    assert revoke_device_token("dev-1", settings) is False
    assert DeviceTokens(settings).authenticate(token) is None
    assert list_token_devices(settings) == []


def test_token_file_stores_no_token(settings):
    token = create_device_token("dev-1", settings)
    text = (settings.home / "secrets" / "device_tokens.json").read_text()
    assert token not in text


def test_token_file_is_private(settings):
    create_device_token("dev-1", settings)
    mode = (settings.home / "secrets" / "device_tokens.json").stat().st_mode & 0o777
    assert mode == 0o600


def test_token_invalid_device_id(settings):
    with pytest.raises(ConfigError, match="device_id 'bad id' is invalid"):
        create_device_token("bad id", settings)


def test_mosquitto_hash_matches_pbkdf2():
    salt = b"0123456789ab"
    entry = mosquitto_hash("secret", salt)
    _, kind, iterations, salt_text, digest = entry.split("$")
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", salt, 101, 64)
    assert kind == "7"
    assert iterations == "101"
    assert base64.b64decode(salt_text) == salt
    assert base64.b64decode(digest) == expected


def test_mosquitto_lines_list_devices(settings):
    create_device_token("dev-1", settings)
    users = [line.split(":", 1)[0] for line in mosquitto_password_lines(settings)]
    assert users == ["saodf-mqtt-bridge", "dev-1"]
