"""Tenant registry: layout, secrets file, rotation, deletion and the Redis ACL rules."""

from __future__ import annotations

import json
import stat

import pytest

from saodf.config import get_settings, reset_settings
from saodf.secrets import gateway_keys
from saodf.tenants import (
    TENANT_ENV,
    TenantError,
    TenantRegistry,
    create_tenant,
    delete_tenant,
    get_tenant,
    list_tenants,
    redis_acl_lines,
    redis_acl_rules,
    rotate_keys,
    runtime_settings,
    settings_tenant,
    tenant_lake_url,
    tenant_layout,
    tenant_settings,
)
from streaming.tokens import DeviceTokens


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    yield get_settings()
    reset_settings()


def test_layout_prefixes():
    tenant = tenant_layout("acme")
    assert tenant.redis_key_prefix == "saodf:t:acme:"
    assert tenant.kafka_topic_prefix == "t.acme."
    assert tenant.lake_prefix == "tenants/acme/"


@pytest.mark.parametrize("name", ["", "A", "a", "../x", "acme-", "a_b", "x" * 33])
def test_layout_bad_name(name):
    with pytest.raises(TenantError, match="invalid"):
        tenant_layout(name)


def test_create_registry_private(settings):
    create_tenant("acme", settings=settings)
    mode = stat.S_IMODE((settings.home / "secrets" / "tenants.json").stat().st_mode)
    assert mode == 0o600


def test_create_gateway_key(settings):
    _, issued = create_tenant("acme", settings=settings)
    assert gateway_keys(settings)["acme"] == issued["gateway_key"]


def test_create_device_tokens(settings):
    _, issued = create_tenant("acme", devices=["pump-1"], settings=settings)
    token = issued["device_tokens"]["acme.pump-1"]
    assert DeviceTokens(settings).authenticate(token) == "acme.pump-1"


def test_create_twice(settings):
    create_tenant("acme", settings=settings)
    with pytest.raises(TenantError, match="exists"):
        create_tenant("acme", settings=settings)


def test_create_stack_namespace(settings):
    with pytest.raises(TenantError, match="namespace"):
        create_tenant(settings.gateway_namespace, settings=settings)


def test_list_names(settings):
    create_tenant("beta", settings=settings)
    create_tenant("acme", settings=settings)
    assert [tenant.name for tenant in list_tenants(settings)] == ["acme", "beta"]


def test_list_hides_secrets(settings):
    _, issued = create_tenant("acme", settings=settings)
    text = repr(list_tenants(settings))
    assert issued["redis_password"] not in text


def test_rotate_replaces_key(settings):
    _, issued = create_tenant("acme", settings=settings)
    rotated = rotate_keys("acme", settings=settings)
    assert gateway_keys(settings)["acme"] == rotated["gateway_key"] != issued["gateway_key"]


def test_rotate_old_token_dead(settings):
    _, issued = create_tenant("acme", devices=["pump-1"], settings=settings)
    rotate_keys("acme", settings=settings)
    assert DeviceTokens(settings).authenticate(issued["device_tokens"]["acme.pump-1"]) is None


def test_rotate_unknown(settings):
    with pytest.raises(TenantError, match="'ghost' does not exist"):
        rotate_keys("ghost", settings=settings)


def test_delete_removes_key(settings):
    create_tenant("acme", settings=settings)
    delete_tenant("acme", settings=settings)
    assert "acme" not in gateway_keys(settings)


def test_delete_revokes_tokens(settings):
    _, issued = create_tenant("acme", devices=["pump-1"], settings=settings)
    delete_tenant("acme", settings=settings)
    assert DeviceTokens(settings).authenticate(issued["device_tokens"]["acme.pump-1"]) is None


def test_get_unknown(settings):
    with pytest.raises(TenantError, match="known tenants"):
        get_tenant("ghost", settings=settings)


def test_acl_rules_key_pattern():
    rules = redis_acl_rules(tenant_layout("acme"), "pw")
    assert [rule for rule in rules if rule.startswith("~")] == ["~saodf:t:acme:*"]


def test_acl_rules_start_from_nothing():
    assert "-@all" in redis_acl_rules(tenant_layout("acme"), "pw")


@pytest.mark.parametrize("command", ["+acl", "+keys", "+flushall", "+config", "+@all"])
def test_acl_rules_no_admin(command):
    assert command not in redis_acl_rules(tenant_layout("acme"), "pw")


def test_acl_lines_one_per_tenant(settings):
    create_tenant("acme", settings=settings)
    create_tenant("beta", settings=settings)
    assert [line.split()[1] for line in redis_acl_lines(settings)] == [
        "saodf-t-acme",
        "saodf-t-beta",
    ]


def test_registry_json(settings):
    create_tenant("acme", devices=["pump-1"], settings=settings)
    data = json.loads((settings.home / "secrets" / "tenants.json").read_text())
    assert data["tenants"]["acme"]["devices"] == ["acme.pump-1"]


def test_lake_url_own_device():
    url = tenant_lake_url(tenant_layout("acme"), "file:///lake", "raw", "acme.pump-1")
    assert url == "file:///lake/tenants/acme/raw/device_id=acme.pump-1"


@pytest.mark.parametrize(
    "device_id",
    [
        "../beta.pump-1",
        "acme.x/../../beta",
        "/etc",
        "",
        None,
        "%2e%2e",
        "acme.%2e%2e%2fbeta",
        "acme.pump-1\x00",
        "/tmp/acme.pump-1",
        "acme.pump-1\\..\\beta",
    ],
)
def test_lake_url_traversal(device_id):
    with pytest.raises(TenantError, match="invalid"):
        tenant_lake_url(tenant_layout("acme"), "file:///lake", "raw", device_id)


def test_lake_url_other_tenant():
    with pytest.raises(TenantError, match="not a device of tenant 'acme'"):
        tenant_lake_url(tenant_layout("acme"), "file:///lake", "raw", "beta.pump-1")


def test_settings_topics(settings):
    scoped = tenant_settings("acme", settings)
    assert (scoped.topic_raw, scoped.topic_dlq) == ("t.acme.telemetry.raw", "t.acme.telemetry.dlq")


def test_settings_queues(settings):
    scoped = tenant_settings("acme", settings)
    assert (scoped.sqs_queue, scoped.sqs_dlq) == (
        "t-acme-telemetry-raw",
        "t-acme-telemetry-raw-dlq",
    )


def test_settings_lake(settings):
    scoped = tenant_settings("acme", settings)
    assert scoped.lake_url == settings.lake_url.rstrip("/") + "/tenants/acme"


def test_settings_mlflow_names(settings):
    scoped = tenant_settings("acme", settings)
    assert (scoped.mlflow_experiment, scoped.registered_model_prefix) == (
        "acme.telemetry_pipeline",
        "acme.saodf-forecaster",
    )


def test_settings_redis_user(settings):
    assert tenant_settings("acme", settings).redis_user == "saodf-t-acme"


def test_settings_names_tenant(settings):
    assert settings_tenant(tenant_settings("acme", settings)).name == "acme"


def test_settings_default_untouched(settings):
    assert settings_tenant(settings) is None


def test_settings_twice(settings):
    with pytest.raises(TenantError, match="already scoped to tenant 'acme'"):
        tenant_settings("beta", tenant_settings("acme", settings))


def test_runtime_settings_env(settings, monkeypatch):
    monkeypatch.setenv(TENANT_ENV, "acme")
    assert runtime_settings(settings).topic_raw == "t.acme.telemetry.raw"


def test_runtime_settings_bad_env(settings, monkeypatch):
    monkeypatch.setenv(TENANT_ENV, "../beta")
    with pytest.raises(TenantError, match="invalid"):
        runtime_settings(settings)


def test_owns_device_prefix():
    assert tenant_layout("acme").owns_device("acme.pump-1")


@pytest.mark.parametrize("device_id", ["acme-2.pump-1", "beta.pump-1", "acme", "pump-1", None])
def test_owns_device_other(device_id):
    assert not tenant_layout("acme").owns_device(device_id)


def test_registry_device_tenant(settings):
    create_tenant("acme", devices=["pump-1"], settings=settings)
    assert TenantRegistry(settings).device_tenant("acme.pump-1").name == "acme"


def test_registry_stack_device(settings):
    create_tenant("acme", settings=settings)
    assert TenantRegistry(settings).owner_namespace("machine_temp", "saodf") == "saodf"


def test_registry_sees_new_tenant(settings):
    registry = TenantRegistry(settings)
    registry.tenant("acme")
    create_tenant("acme", settings=settings)
    assert registry.tenant("acme") is not None


def test_acl_rules_no_eval():
    assert "+eval" not in redis_acl_rules(tenant_layout("acme"), "pw")
