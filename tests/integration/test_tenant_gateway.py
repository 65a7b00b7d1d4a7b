"""Tenant isolation at the action gateway: own namespace only, every attempt audited."""

from __future__ import annotations

import json

import pytest
import requests

from actions.audit import verify_audit_log
from actions.gateway import serve
from actions.pool import ActionSpec
from saodf.audit_tools import read_records, scan
from saodf.config import get_settings, reset_settings
from saodf.secrets import gateway_keys
from saodf.tenants import create_tenant, delete_tenant, rotate_keys

pytestmark = pytest.mark.integration

ECHO = "def main(args):\n    return {'device_id': args.get('device_id')}\n"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """A gateway in its own home; tenants ``acme`` and ``beta`` are created while it runs."""
    home = tmp_path_factory.mktemp("tenant-gateway")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        reset_settings()
        settings = get_settings()
        gateway_keys(settings)
        server = serve(settings, actions=[ActionSpec(name="echo", code=ECHO)], port=0)
        try:
            issued = {
                name: create_tenant(name, settings=settings)[1]["gateway_key"]
                for name in ("acme", "beta")
            }
            yield server, settings, issued
        finally:
            server.close()
            reset_settings()


def _auth(key):
    user, password = key.split(":", 1)
    return user, password


def _invoke(server, namespace, key, body=None):
    url = f"{server.url}/api/v1/namespaces/{namespace}/actions/echo?blocking=true&result=true"
    return requests.post(url, json=body or {}, auth=_auth(key), timeout=60)


def _records(server):
    return [json.loads(line) for line in server.gateway.audit.path.read_text().splitlines()]


def test_own_namespace_ok(gateway):
    server, _, issued = gateway
    assert _invoke(server, "acme", issued["acme"]).status_code == 200


def test_other_namespace_forbidden(gateway):
    server, _, issued = gateway
    assert _invoke(server, "beta", issued["acme"]).status_code == 403


def test_cross_tenant_audited(gateway):
    server, _, issued = gateway
    _invoke(server, "beta", issued["acme"])
    record = _records(server)[-1]
    assert (record["tenant"], record["target_namespace"], record["outcome"]) == (
        "acme",
        "beta",
        "rejected",
    )


def test_cross_tenant_alert_actor(gateway):
    server, _, issued = gateway
    _invoke(server, "beta", issued["acme"])
    alerts = [alert for alert in scan([server.gateway.audit.path]) if alert.rule == "cross_tenant"]
    assert {alert.actor for alert in alerts} == {issued["acme"].split(":", 1)[0]}


def test_other_activation_hidden(gateway):
    server, _, issued = gateway
    url = f"{server.url}/api/v1/namespaces/acme/actions/echo?blocking=true"
    activation = requests.post(url, json={}, auth=_auth(issued["acme"]), timeout=60).json()
    other = f"{server.url}/api/v1/namespaces/_/activations/{activation['activationId']}"
    assert requests.get(other, auth=_auth(issued["beta"]), timeout=10).status_code == 404


def test_traversal_device_flagged(gateway):
    server, _, issued = gateway
    _invoke(server, "acme", issued["acme"], {"device_id": "../../etc/passwd"})
    assert _records(server)[-1]["bad_device_id"] == "'../../etc/passwd'"


def test_rotated_key_rejected(gateway):
    server, settings, issued = gateway
    new_key = rotate_keys("acme", settings=settings)["gateway_key"]
    old_status = _invoke(server, "acme", issued["acme"]).status_code
    issued["acme"] = new_key
    assert old_status == 401


def test_rotated_key_works(gateway):
    server, settings, issued = gateway
    issued["acme"] = rotate_keys("acme", settings=settings)["gateway_key"]
    assert _invoke(server, "acme", issued["acme"]).status_code == 200


def test_deleted_tenant_rejected(gateway):
    server, settings, _ = gateway
    key = create_tenant("gone", settings=settings)[1]["gateway_key"]
    delete_tenant("gone", settings=settings)
    assert _invoke(server, "gone", key).status_code == 401


def test_audit_records_source(gateway):
    server, _, issued = gateway
    _invoke(server, "acme", issued["acme"])
    assert _records(server)[-1]["client"] == "127.0.0.1"


def test_audit_chain_intact(gateway):
    server, _, _ = gateway
    assert verify_audit_log(server.gateway.audit.path) == len(
        read_records([server.gateway.audit.path])
    )


def test_no_key_in_audit(gateway):
    server, _, issued = gateway
    text = server.gateway.audit.path.read_text()
    leaked = [name for name, key in issued.items() if key.split(":", 1)[1] in text]
    assert leaked == []


def test_no_key_in_logs(gateway, caplog):
    server, _, issued = gateway
    guessed = f"{issued['beta'].split(':', 1)[0]}:guessed-secret-value"
    with caplog.at_level("DEBUG"):
        _invoke(server, "acme", issued["acme"])
        _invoke(server, "acme", guessed)
        _invoke(server, "acme", issued["beta"])
    secrets_seen = [
        key for key in (issued["acme"], issued["beta"], guessed) if key.split(":")[1] in caplog.text
    ]
    assert "rejected with 401" in caplog.text
    assert secrets_seen == []
