"""Tenant Redis ACL users on a real redis-server: each one reaches only its own keys."""

from __future__ import annotations

import pytest
import redis

from actions.cache import redis_client
from actions.redis_acl import FORECAST
from saodf.config import get_settings, reset_settings
from saodf.stack import process, services
from saodf.tenants import (
    admin_redis_client,
    apply_redis_acls,
    create_tenant,
    delete_tenant,
    get_tenant,
    rotate_keys,
    tenant_redis_password,
    tenant_settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A redis-server of its own: tenant ``acme`` from its config, ``beta`` set at run time."""
    home = tmp_path_factory.mktemp("tenant-redis")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        patch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
        patch.delenv("SAODF_REDIS_HOST", raising=False)
        reset_settings()
        settings = get_settings()
        create_tenant("acme", settings=settings)
        spec = services.redis_spec(settings)
        process.start(spec)
        try:
            create_tenant("beta", settings=settings)
            apply_redis_acls(admin_redis_client(settings), settings)
            yield settings
        finally:
            process.stop(spec)
            reset_settings()


def _client(settings, name, password=None):
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        username=get_tenant(name, settings).redis_user,
        password=password or tenant_redis_password(name, settings),
        decode_responses=True,
        socket_timeout=5,
    )


def _key(settings, name, suffix="fc:pump-1"):
    return get_tenant(name, settings).redis_key_prefix + suffix


def test_own_key_round_trip(stack):
    client = _client(stack, "acme")
    client.set(_key(stack, "acme"), "forecast")
    assert client.get(_key(stack, "acme")) == "forecast"


def test_runtime_tenant_round_trip(stack):
    client = _client(stack, "beta")
    client.hset(_key(stack, "beta", "device:pump-1"), mapping={"run": "r1"})
    assert client.hgetall(_key(stack, "beta", "device:pump-1")) == {"run": "r1"}


def test_cannot_read_other_tenant(stack):
    _client(stack, "beta").set(_key(stack, "beta"), "secret forecast")
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        _client(stack, "acme").get(_key(stack, "beta"))


def test_cannot_write_other_tenant(stack):
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        _client(stack, "beta").set(_key(stack, "acme"), "overwritten")


def test_cannot_read_stack_keys(stack):
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        _client(stack, "acme").get("saodf:fc:pump-1")


@pytest.mark.parametrize(
    "command", [("KEYS", "*"), ("FLUSHALL",), ("ACL", "LIST"), ("CONFIG", "GET", "*")]
)
def test_no_admin_commands(stack, command):
    with pytest.raises(redis.exceptions.NoPermissionError, match="permission"):
        _client(stack, "acme").execute_command(*command)


def test_lua_script_other_key(stack):
    script = _client(stack, "acme").register_script("return redis.call('GET', KEYS[1])")
    with pytest.raises(redis.exceptions.ResponseError, match="permission|NOPERM|No permissions"):
        script(keys=[_key(stack, "beta")])


def test_lua_script_own_key(stack):
    client = _client(stack, "acme")
    client.set(_key(stack, "acme", "fc:pump-2"), "forecast")
    script = client.register_script("return redis.call('GET', KEYS[1])")
    assert script(keys=[_key(stack, "acme", "fc:pump-2")]) == "forecast"


@pytest.mark.parametrize("command", [("EVAL", "return 1", "0"), ("SCAN", "0"), ("INFO",)])
def test_unused_commands_refused(stack, command):
    with pytest.raises(redis.exceptions.NoPermissionError, match="permission"):
        _client(stack, "acme").execute_command(*command)


def test_cache_client_tenant_user(stack):
    # The stack's user may read saodf:fc:*, so the refusal shows the client is the tenant's.
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        redis_client(tenant_settings("acme", stack), role=FORECAST).get("saodf:fc:pump-1")


def test_cache_client_after_rotation(stack):
    rotate_keys("acme", settings=stack)
    apply_redis_acls(admin_redis_client(stack), stack)
    assert redis_client(tenant_settings("acme", stack), role=FORECAST).ping() is True


def test_rotated_password_stops(stack):
    old = tenant_redis_password("beta", stack)
    rotate_keys("beta", settings=stack)
    apply_redis_acls(admin_redis_client(stack), stack)
    with pytest.raises(redis.exceptions.AuthenticationError):
        _client(stack, "beta", password=old).ping()


def test_deleted_user_dropped(stack):
    create_tenant("gone", settings=stack)
    apply_redis_acls(admin_redis_client(stack), stack)
    delete_tenant("gone", settings=stack)
    apply_redis_acls(admin_redis_client(stack), stack)
    assert "saodf-t-gone" not in admin_redis_client(stack).execute_command("ACL", "USERS")
