"""The Redis role table, the logins it gives and the redis.conf lines built from it."""

from __future__ import annotations

import fnmatch
import os
import stat

import pytest

from actions.cache import (
    DEFAULT_KEY_PREFIX,
    HITS_KEY,
    MISSES_KEY,
    MONITOR_KEY,
    TTL_POLICY_KEY,
    device_key,
    forecast_key,
    left_out_key,
    missed_key,
)
from actions.detect_anomaly import state_key
from actions.monitor import PREFETCH_KEY
from actions.redis_acl import (
    DETECTOR,
    FORECAST,
    HEALTH,
    MONITOR,
    READER,
    ROLES,
    WRITER,
    acl_user_lines,
    role_login,
    role_user,
)
from saodf.config import get_settings, reset_settings
from saodf.errors import ConfigError
from saodf.stack.services import saodf_env
from saodf.tenants import CACHE_COMMANDS

FORECAST_KEY = forecast_key("pump-1", "2025-04-20T00:00:00+00:00", 12, "5min", "m", "1")


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SAODF_REDIS_USER", raising=False)
    for name in [name for name in os.environ if name.startswith("SAODF_REDIS_USER_")]:
        monkeypatch.delenv(name)
    reset_settings()
    yield get_settings()
    reset_settings()


def _grants(role: str, key: str) -> str:
    """Return "rw", "r" or "" for what ``role`` may do with ``key``."""
    if any(fnmatch.fnmatchcase(key, pattern) for pattern in ROLES[role].keys):
        return "rw"
    if any(fnmatch.fnmatchcase(key, pattern) for pattern in ROLES[role].read_keys):
        return "r"
    return ""


@pytest.mark.parametrize(
    ("role", "key", "expected"),
    [
        (FORECAST, FORECAST_KEY, "rw"),
        (FORECAST, device_key("pump-1"), "rw"),
        (FORECAST, left_out_key("pump-1"), "rw"),
        (FORECAST, HITS_KEY, "rw"),
        (FORECAST, MISSES_KEY, "rw"),
        (FORECAST, missed_key(123), "rw"),
        (FORECAST, TTL_POLICY_KEY, "r"),
        (FORECAST, state_key("pump-1", "temperature"), ""),
        (DETECTOR, state_key("pump-1", "temperature"), "rw"),
        (DETECTOR, state_key("pump-1", "temperature", "saodf"), "rw"),
        (DETECTOR, device_key("pump-1"), "r"),
        (DETECTOR, FORECAST_KEY, "r"),
        (DETECTOR, HITS_KEY, ""),
        (MONITOR, TTL_POLICY_KEY, "rw"),
        (MONITOR, MONITOR_KEY, "rw"),
        (MONITOR, PREFETCH_KEY, "rw"),
        (MONITOR, HITS_KEY, "r"),
        (MONITOR, missed_key(123), "r"),
        (MONITOR, state_key("pump-1", "temperature"), ""),
        (WRITER, FORECAST_KEY, "rw"),
        (WRITER, "saodf:t:acme:device:acme.pump-1", "rw"),
        (WRITER, "saodf:t:acme:cache:ttl", "r"),
        (WRITER, HITS_KEY, ""),
        (READER, FORECAST_KEY, "r"),
        (READER, MONITOR_KEY, "r"),
        (READER, TTL_POLICY_KEY, ""),
        (HEALTH, FORECAST_KEY, ""),
    ],
)
def test_role_key_grants(role, key, expected):
    assert _grants(role, key) == expected


@pytest.mark.parametrize("role", sorted(set(ROLES) - {WRITER}))
def test_role_no_tenant_keys(role):
    assert _grants(role, "saodf:t:acme:fc:abc") == ""
    assert _grants(role, "saodf:t:acme:device:acme.pump-1") == ""


def test_roles_keys_under_default_prefix():
    for role in ROLES.values():
        for pattern in (*role.keys, *role.read_keys):
            assert pattern.startswith(DEFAULT_KEY_PREFIX), (role.name, pattern)


@pytest.mark.parametrize("command", ["flushall", "flushdb", "config", "keys", "acl", "eval"])
def test_roles_no_admin_commands(command):
    for role in ROLES.values():
        assert command not in role.commands, role.name
        assert not any(name.startswith(f"{command}|") for name in role.commands), role.name


def test_scripts_list_their_commands():
    # Redis checks the commands inside a script against the caller's ACL.
    assert {"evalsha", "script|load", "get", "incr", "zincrby"} <= set(ROLES[FORECAST].commands)
    assert {"evalsha", "script|load", "hmget", "hset"} <= set(ROLES[DETECTOR].commands)


def test_tenant_commands_from_roles():
    assert set(CACHE_COMMANDS) == set(ROLES[FORECAST].commands) | set(ROLES[DETECTOR].commands)


def test_default_login_per_role(settings):
    user, password = role_login(settings, FORECAST)
    secret = settings.home / "secrets" / "redis_password_forecast"
    assert user == "saodf-forecast"
    assert secret.read_text().strip() == password
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert role_login(settings, DETECTOR)[1] != password


def test_single_user_override(settings, monkeypatch):
    monkeypatch.setenv("SAODF_REDIS_USER", "app")
    reset_settings()
    overridden = get_settings()
    logins = {role_login(overridden, role) for role in ROLES}
    assert len(logins) == 1
    user, password = logins.pop()
    assert user == "app"
    assert (settings.home / "secrets" / "redis_password").read_text().strip() == password


def test_single_user_gets_union(settings, monkeypatch):
    monkeypatch.setenv("SAODF_REDIS_USER", "app")
    reset_settings()
    (line,) = acl_user_lines(get_settings())
    rules = line.split()
    assert rules[:2] == ["user", "app"]
    assert "~saodf:anomaly:*" in rules
    # The forecast role writes the counters that other roles only read.
    assert "~saodf:cache:hits" in rules
    assert "%R~saodf:cache:hits" not in rules
    assert "+info" in rules


def test_role_user_override(settings, monkeypatch):
    monkeypatch.setenv("SAODF_REDIS_USER", "app")
    monkeypatch.setenv("SAODF_REDIS_USER_FORECAST", "app-forecast")
    reset_settings()
    overridden = get_settings()
    user, password = role_login(overridden, FORECAST)
    assert user == "app-forecast"
    assert (settings.home / "secrets" / "redis_password_forecast").read_text().strip() == password
    assert role_user(overridden, DETECTOR) == "app"
    assert [line.split()[1] for line in acl_user_lines(overridden)] == ["app", "app-forecast"]


def test_role_user_override_exported(settings, monkeypatch):
    monkeypatch.setenv("SAODF_REDIS_USER_MONITOR", "ops-monitor")
    reset_settings()
    env = saodf_env(get_settings())
    assert env["SAODF_REDIS_USER_MONITOR"] == "ops-monitor"
    assert "SAODF_REDIS_USER" not in env


def test_unknown_role_user_variable(settings, monkeypatch):
    monkeypatch.setenv("SAODF_REDIS_USER_FORECASTS", "x")
    reset_settings()
    with pytest.raises(ConfigError, match="SAODF_REDIS_USER_FORECASTS names no Redis role"):
        role_login(get_settings(), FORECAST)


def test_unknown_role(settings):
    with pytest.raises(ConfigError, match="Redis role 'admin' is unknown"):
        role_login(settings, "admin")


def test_lines_one_user_per_role(settings):
    lines = acl_user_lines(settings)
    assert [line.split()[1] for line in lines] == [f"saodf-{name}" for name in ROLES]
    for line in lines:
        assert " -@all " in line
        assert "resetchannels" in line


def test_health_line_has_no_keys(settings):
    line = next(line for line in acl_user_lines(settings) if line.split()[1] == "saodf-health")
    assert line.endswith("resetkeys resetchannels -@all +ping")
