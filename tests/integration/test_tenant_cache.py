"""Tenant forecast cache on a real redis-server, through the gateway's real actions."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import redis
import requests

from actions import forecast as forecast_action
from actions.cache import DevicePointer, ForecastCache
from actions.gateway import serve
from actions.redis_acl import WRITER
from saodf.audit_tools import scan
from saodf.config import get_settings, reset_settings
from saodf.secrets import gateway_keys
from saodf.stack import process, services
from saodf.tenants import (
    TENANT_ENV,
    admin_redis_client,
    create_tenant,
    get_tenant,
    tenant_redis_password,
    tenant_settings,
)

pytestmark = pytest.mark.integration

DEVICES = {"acme": "acme.pump-1", "beta": "beta.pump-1", None: "pump-1"}
MEANS = {"acme": [1.0, 2.0], "beta": [50.0, 60.0], None: [7.0, 8.0]}


def _pointer(device_id):
    return DevicePointer(
        device_id=device_id,
        model_name="saodf-forecaster-test",
        model_version="1",
        forecast_start="2025-04-20 12:00:00",
        freq="1min",
        horizon=2,
        group="test",
        context_url="file:///nonexistent/test.jsonl",
        context_line=0,
        volatility="stable",
        metric="temperature",
    )


def _forecast(mean):
    return {"mean": mean, "quantiles": {"0.1": [v - 1 for v in mean], "0.9": [v + 1 for v in mean]}}


def _cache(settings, tenant):
    # A tenant's settings connect as the tenant's user, the others as the writer role.
    scoped = tenant_settings(tenant, settings) if tenant else settings
    return ForecastCache.from_settings(scoped, role=WRITER)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Redis and a gateway with the real actions; acme, beta and the default deployment filled."""
    home = tmp_path_factory.mktemp("tenant-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        patch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
        patch.delenv("SAODF_REDIS_HOST", raising=False)
        patch.delenv(TENANT_ENV, raising=False)
        reset_settings()
        settings = get_settings()
        keys = dict(gateway_keys(settings))
        for name in ("acme", "beta"):
            keys[name] = create_tenant(name, settings=settings)[1]["gateway_key"]
        spec = services.redis_spec(settings)
        process.start(spec)
        server = None
        try:
            for tenant, device_id in DEVICES.items():
                _cache(settings, tenant).put(_pointer(device_id), _forecast(MEANS[tenant]))
            server = serve(settings, port=0)
            yield settings, server, keys
        finally:
            if server is not None:
                server.close()
            process.stop(spec)
            reset_settings()


def _auth(key):
    user, password = key.split(":", 1)
    return user, password


def _invoke(stack, namespace, action, body):
    settings, server, keys = stack
    url = f"{server.url}/api/v1/namespaces/{namespace}/actions/{action}?blocking=true&result=true"
    return requests.post(url, json=body, auth=_auth(keys[namespace]), timeout=90)


def _tenant_client(settings, name):
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        username=get_tenant(name, settings).redis_user,
        password=tenant_redis_password(name, settings),
        decode_responses=True,
        socket_timeout=5,
    )


def _records(stack):
    _, server, _ = stack
    return [json.loads(line) for line in server.gateway.audit.path.read_text().splitlines()]


def _reading(device_id):
    return {"device_id": device_id, "timestamp": "2025-04-20T12:00:30Z", "temperature": 1.5}


def test_tenant_forecast_hit(stack):
    reply = _invoke(stack, "acme", "forecast", {"device_id": "acme.pump-1"}).json()
    assert (reply["cache"], reply["mean"]) == ("hit", MEANS["acme"])


def test_other_tenant_device_not_found(stack):
    response = _invoke(stack, "acme", "forecast", {"device_id": "beta.pump-1"})
    assert response.status_code == 404
    assert "does not exist in namespace 'acme'" in response.json()["error"]


def test_other_tenant_entry_not_returned(stack):
    text = _invoke(stack, "acme", "forecast", {"device_id": "beta.pump-1"}).text
    assert str(MEANS["beta"][0]) not in text


def test_stack_device_not_found(stack):
    assert _invoke(stack, "acme", "forecast", {"device_id": "pump-1"}).status_code == 404


def test_cross_tenant_device_audited(stack):
    _invoke(stack, "acme", "forecast", {"device_id": "beta.pump-1"})
    record = _records(stack)[-1]
    fields = ("tenant", "action", "resource", "outcome", "client", "target_namespace")
    assert {name: record.get(name) for name in fields} == {
        "tenant": "acme",
        "action": "forecast",
        "resource": "/acme/devices/beta.pump-1",
        "outcome": "rejected",
        "client": "127.0.0.1",
        "target_namespace": "beta",
    }


def test_cross_tenant_device_actor(stack):
    _, _, keys = stack
    _invoke(stack, "acme", "forecast", {"device_id": "beta.pump-1"})
    assert _records(stack)[-1]["actor"] == keys["acme"].split(":", 1)[0]


def test_cross_tenant_device_alerted(stack):
    _, server, keys = stack
    _invoke(stack, "acme", "forecast", {"device_id": "beta.pump-1"})
    alerts = [alert for alert in scan([server.gateway.audit.path]) if alert.rule == "cross_tenant"]
    assert {alert.actor for alert in alerts} == {keys["acme"].split(":", 1)[0]}


def test_action_other_device_not_found(stack, monkeypatch):
    monkeypatch.setenv(TENANT_ENV, "acme")
    forecast_action.reset_cache()
    try:
        reply = forecast_action.main({"device_id": "beta.pump-1"})
    finally:
        forecast_action.reset_cache()
    assert "has no forecast pointer" in reply["error"]


def test_tenant_counters_prefixed(stack):
    settings, _, _ = stack
    _invoke(stack, "acme", "forecast", {"device_id": "acme.pump-1"})
    assert int(admin_redis_client(settings).get("saodf:t:acme:cache:hits") or 0) >= 1


def test_runtime_connects_as_tenant(stack):
    settings, _, _ = stack
    _invoke(stack, "acme", "forecast", {"device_id": "acme.pump-1"})
    clients = admin_redis_client(settings).client_list()
    assert "saodf-t-acme" in {client["user"] for client in clients}


def test_default_namespace_unchanged(stack):
    settings, _, _ = stack
    reply = _invoke(stack, settings.gateway_namespace, "forecast", {"device_id": "pump-1"}).json()
    assert (reply["cache"], reply["mean"]) == ("hit", MEANS[None])


def test_default_keys_unprefixed(stack):
    settings, _, _ = stack
    assert admin_redis_client(settings).exists("saodf:device:pump-1") == 1


def test_direct_other_forecast_noperm(stack):
    settings, _, _ = stack
    key = _cache(settings, "beta").forecast_key(_pointer("beta.pump-1"))
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        _tenant_client(settings, "acme").get(key)


def test_direct_other_pointer_noperm(stack):
    settings, _, _ = stack
    key = _cache(settings, "beta").device_key("beta.pump-1")
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        _tenant_client(settings, "acme").hgetall(key)


def test_direct_stack_pointer_noperm(stack):
    settings, _, _ = stack
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        _tenant_client(settings, "acme").hgetall("saodf:device:pump-1")


def test_direct_other_write_noperm(stack):
    settings, _, _ = stack
    key = _cache(settings, "beta").device_key("beta.pump-1")
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        _tenant_client(settings, "acme").hset(key, "model_version", "forged")


def test_detect_state_under_prefix(stack):
    settings, _, _ = stack
    reply = _invoke(stack, "acme", "detect_anomaly", {"reading": _reading("acme.pump-1")})
    assert reply.status_code == 200
    key = "saodf:t:acme:anomaly@acme:acme.pump-1:temperature"
    assert admin_redis_client(settings).exists(key) == 1


def test_detect_other_tenant_rejected(stack):
    body = {"readings": [_reading("acme.pump-1"), _reading("beta.pump-1")]}
    assert _invoke(stack, "acme", "detect_anomaly", body).status_code == 404


def test_detect_other_tenant_no_state(stack):
    settings, _, _ = stack
    _invoke(stack, "acme", "detect_anomaly", {"reading": _reading("beta.pump-1")})
    assert admin_redis_client(settings).keys("saodf:*beta.pump-1:temperature") == []


def test_metrics_tenant_forbidden(stack):
    _, server, keys = stack
    response = requests.get(f"{server.url}/metrics", auth=_auth(keys["acme"]), timeout=10)
    assert response.status_code == 403


def test_metrics_stack_allowed(stack):
    settings, server, keys = stack
    auth = _auth(keys[settings.gateway_namespace])
    assert requests.get(f"{server.url}/metrics", auth=auth, timeout=10).status_code == 200


def test_miss_other_model_refused(stack):
    settings, _, _ = stack
    pointer = replace(_pointer("acme.pump-9"), model_name="beta.saodf-forecaster-test")
    cache = _cache(settings, "acme")
    cache.put(pointer, _forecast([3.0, 4.0]))
    admin_redis_client(settings).delete(cache.forecast_key(pointer))
    reply = _invoke(stack, "acme", "forecast", {"device_id": "acme.pump-9"}).json()
    assert "is not a model of tenant 'acme'" in reply["error"]
