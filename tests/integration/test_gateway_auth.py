"""Authentication, auditing and namespace isolation of a gateway with two namespaces."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from actions.audit import AuditChainError, verify_audit_log
from actions.gateway import MAX_AUDIT_PATH_CHARS, GatewayError, add_namespace, serve
from actions.pool import ActionSpec
from saodf.audit_tools import secret_digest
from saodf.config import get_settings, reset_settings
from saodf.secrets import gateway_keys

pytestmark = pytest.mark.integration

COUNTER = """
import os

COUNT = 0


def main(args):
    global COUNT
    COUNT += 1
    return {"count": COUNT, "pid": os.getpid(), "ns": os.environ["__OW_NAMESPACE"]}
"""
DYING = (
    "import os\n\n\ndef main(args):\n    if args.get('die'):\n        os._exit(3)\n    return {}\n"
)


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    """A gateway in its own home, with namespaces ``saodf`` and ``tenant-b`` and their keys."""
    home = tmp_path_factory.mktemp("gateway-auth")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        reset_settings()
        settings = get_settings()
        gateway_keys(settings)
        add_namespace(settings, "tenant-b")
        actions = [ActionSpec(name="counter", code=COUNTER), ActionSpec(name="dying", code=DYING)]
        server = serve(settings, actions=actions, port=0)
        try:
            yield server, settings, gateway_keys(settings)
        finally:
            server.close()
            reset_settings()


def _auth(keys: dict[str, str], namespace: str) -> tuple[str, str]:
    user, key = keys[namespace].split(":", 1)
    return user, key


def _invoke(server, namespace: str, action: str, auth, body=None, result: bool = True):
    query = "blocking=true&result=true" if result else "blocking=true"
    url = f"{server.url}/api/v1/namespaces/{namespace}/actions/{action}?{query}"
    return requests.post(url, json=body or {}, auth=auth, timeout=60)


def _audit(server) -> list[dict]:
    path = server.gateway.audit.path
    return [json.loads(line) for line in path.read_text().splitlines()]


def _last_reject(server) -> dict:
    return [record for record in _audit(server) if record["event"] == "reject"][-1]


def test_missing_auth_audited(tenants):
    server, _, _ = tenants
    reply = requests.post(f"{server.url}/api/v1/namespaces/saodf/actions/counter", timeout=10)
    record = _last_reject(server)
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="saodf"'
    assert record["http_status"] == 401
    assert record["reason"].endswith("missing basic credentials.")
    assert record["path"] == "/api/v1/namespaces/saodf/actions/counter"
    assert record["namespace"] is None


def test_wrong_key_audited(tenants):
    server, _, keys = tenants
    user, _ = _auth(keys, "saodf")
    reply = _invoke(server, "saodf", "counter", (user, "guessed-key-123"))
    record = _last_reject(server)
    assert reply.status_code == 401
    assert record["reason"].endswith("wrong credentials.")
    assert "guessed-key-123" not in json.dumps(_audit(server))


def test_wrong_key_digest_audited(tenants):
    server, _, keys = tenants
    user, _ = _auth(keys, "saodf")
    _invoke(server, "saodf", "counter", (user, "guessed-key-456"))
    record = _last_reject(server)
    assert record["key_digest"] == secret_digest(f"{user}:guessed-key-456")
    assert record["key_id"] == user


def test_unknown_key_id_redacted(tenants):
    server, _, _ = tenants
    pasted = "Zm9vYmFyLXNlY3JldC1wYXN0ZWQtYXMtdXNlcg"
    _invoke(server, "saodf", "counter", (pasted, "x"))
    record = _last_reject(server)
    assert record["key_id"] == f"<redacted {len(pasted)} characters>"
    assert pasted not in json.dumps(_audit(server))


def test_missing_auth_has_no_digest(tenants):
    server, _, _ = tenants
    requests.post(f"{server.url}/api/v1/namespaces/saodf/actions/counter", timeout=10)
    record = _last_reject(server)
    assert "key_digest" not in record
    assert "key_id" not in record


def test_other_scheme_digest_audited(tenants):
    server, _, _ = tenants
    header = "Bearer opaque-token-789"
    reply = requests.post(
        f"{server.url}/api/v1/namespaces/saodf/actions/counter",
        headers={"Authorization": header},
        timeout=10,
    )
    record = _last_reject(server)
    assert reply.status_code == 401
    assert record["reason"].endswith("unsupported authorization scheme; use Basic.")
    assert record["key_digest"] == secret_digest(header)
    assert "opaque-token-789" not in json.dumps(_audit(server))


def test_lowercase_basic_scheme_accepted(tenants):
    server, _, keys = tenants
    token = base64.b64encode(keys["saodf"].encode()).decode()
    reply = requests.post(
        f"{server.url}/api/v1/namespaces/saodf/actions/counter?blocking=true",
        headers={"Authorization": f"basic {token}"},
        json={},
        timeout=60,
    )
    assert reply.status_code == 200


def test_unknown_namespace_redacted(tenants):
    server, _, _ = tenants
    pasted = "c2VjcmV0LWluLXRoZS1wYXRo-0123456789"
    reply = _invoke(server, pasted, "counter", ("nobody", "x"))
    record = _last_reject(server)
    assert reply.status_code == 401
    assert (
        record["path"] == f"/api/v1/namespaces/<redacted {len(pasted)} characters>/actions/counter"
    )
    assert pasted not in json.dumps(_audit(server))


def test_other_namespace_target_redacted(tenants):
    server, _, keys = tenants
    pasted = "c2VjcmV0LWFzLW5hbWVzcGFjZQ"
    reply = _invoke(server, pasted, "counter", _auth(keys, "saodf"))
    record = _last_reject(server)
    assert reply.status_code == 403
    assert record["target_namespace"] == f"<redacted {len(pasted)} characters>"
    assert pasted not in reply.text
    assert pasted not in json.dumps(_audit(server))


def test_long_path_bounded(tenants):
    server, _, _ = tenants
    path = "/unknown/" + "a" * 5000
    reply = requests.get(f"{server.url}{path}", timeout=10)
    record = _last_reject(server)
    assert reply.status_code == 404
    assert (
        record["path"]
        == f"{path[:MAX_AUDIT_PATH_CHARS]}...<{len(path) - MAX_AUDIT_PATH_CHARS} more characters>"
    )
    assert len(reply.json()["error"]) < 2 * MAX_AUDIT_PATH_CHARS


def test_openapi_served_without_auth(tenants):
    server, _, _ = tenants
    reply = requests.get(f"{server.url}/api/v1/openapi.json", timeout=10)
    document = reply.json()
    assert reply.status_code == 200
    assert document["openapi"].startswith("3.")
    assert "/api/v1/namespaces/{namespace}/actions/{actionName}" in document["paths"]


def test_head_health_without_body(tenants):
    server, _, _ = tenants
    reply = requests.head(f"{server.url}/health", timeout=10)
    assert reply.status_code == 200
    assert reply.content == b""
    assert int(reply.headers["Content-Length"]) > 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/health", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("OPTIONS", "/api/v1/openapi.json", "GET"),
        ("GET", "/api/v1/namespaces/saodf/actions/counter", "POST"),
        ("PUT", "/api/v1/namespaces/saodf/activations/" + "0" * 32, "GET"),
    ],
)
def test_other_method_rejected_audited(tenants, method, path, allow):
    server, _, _ = tenants
    reply = requests.request(method, f"{server.url}{path}", timeout=10)
    record = _last_reject(server)
    assert reply.status_code == 405
    assert reply.headers["Allow"] == allow
    assert record["http_status"] == 405
    assert record["method"] == method


@pytest.mark.parametrize("query", ["blocking=maybe", "blocking=true&result=1"])
def test_invalid_query_flag_rejected(tenants, query):
    server, _, keys = tenants
    url = f"{server.url}/api/v1/namespaces/saodf/actions/counter?{query}"
    reply = requests.post(url, json={}, auth=_auth(keys, "saodf"), timeout=10)
    assert reply.status_code == 400
    assert "must be true or false" in reply.json()["error"]


def test_malformed_basic_audited(tenants):
    server, _, _ = tenants
    reply = requests.post(
        f"{server.url}/api/v1/namespaces/saodf/actions/counter",
        headers={"Authorization": "Basic !!!not-base64"},
        timeout=10,
    )
    record = _last_reject(server)
    assert reply.status_code == 401
    assert record["reason"].endswith("malformed basic credentials.")
    assert record["key_digest"] == secret_digest("!!!not-base64")


def test_other_namespace_audited(tenants):
    server, _, keys = tenants
    user, _ = _auth(keys, "tenant-b")
    reply = _invoke(server, "saodf", "counter", _auth(keys, "tenant-b"))
    record = _last_reject(server)
    assert reply.status_code == 403
    assert record["http_status"] == 403
    assert record["namespace"] == "tenant-b"
    assert record["subject"] == user
    assert "namespace 'saodf'" in record["reason"]


def test_unknown_namespace_forbidden(tenants):
    server, _, keys = tenants
    reply = _invoke(server, "tenant-z", "counter", _auth(keys, "saodf"))
    assert reply.status_code == 403


def test_underscore_is_own_namespace(tenants):
    server, _, keys = tenants
    reply = _invoke(server, "_", "counter", _auth(keys, "tenant-b"))
    assert reply.status_code == 200
    assert reply.json()["ns"] == "tenant-b"


def test_namespaces_get_own_runtimes(tenants):
    server, _, keys = tenants
    first_a = _invoke(server, "saodf", "counter", _auth(keys, "saodf")).json()
    second_a = _invoke(server, "saodf", "counter", _auth(keys, "saodf")).json()
    in_b = _invoke(server, "tenant-b", "counter", _auth(keys, "tenant-b")).json()
    assert second_a["count"] == first_a["count"] + 1
    assert second_a["pid"] == first_a["pid"]
    assert in_b["pid"] != first_a["pid"]
    assert in_b["ns"] == "tenant-b"
    assert second_a["ns"] == "saodf"


def test_activation_of_other_namespace_hidden(tenants):
    server, _, keys = tenants
    record = _invoke(server, "saodf", "counter", _auth(keys, "saodf"), result=False).json()
    url = f"{server.url}/api/v1/namespaces/tenant-b/activations/{record['activationId']}"
    reply = requests.get(url, auth=_auth(keys, "tenant-b"), timeout=10)
    assert reply.status_code == 404
    assert _last_reject(server)["namespace"] == "tenant-b"
    own = url.replace("/tenant-b/", "/saodf/")
    assert requests.get(own, auth=_auth(keys, "saodf"), timeout=10).json() == record


def test_invocations_audited_per_namespace(tenants):
    server, _, keys = tenants
    record = _invoke(server, "tenant-b", "counter", _auth(keys, "tenant-b"), result=False).json()
    (entry,) = [r for r in _audit(server) if r.get("activation_id") == record["activationId"]]
    assert entry["event"] == "invoke"
    assert entry["namespace"] == "tenant-b"
    assert entry["http_status"] == 200


def test_dead_runtime_answers_503(tenants):
    server, _, keys = tenants
    reply = _invoke(server, "saodf", "dying", _auth(keys, "saodf"), {"die": True})
    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "5"
    assert reply.json()["error"].startswith("The action runtime is unavailable")
    again = _invoke(server, "saodf", "dying", _auth(keys, "saodf"))
    assert again.status_code == 200


def test_audit_tamper_detected(tenants):
    server, _, keys = tenants
    _invoke(server, "saodf", "counter", _auth(keys, "saodf"))
    requests.post(f"{server.url}/api/v1/namespaces/saodf/actions/counter", timeout=10)
    _invoke(server, "saodf", "counter", _auth(keys, "saodf"))
    path = server.gateway.audit.path
    original = path.read_bytes()
    assert verify_audit_log(path) == len(_audit(server))
    lines = original.decode().splitlines()
    index = max(i for i, line in enumerate(lines[:-1]) if '"http_status":401' in line)
    lines[index] = lines[index].replace('"http_status":401', '"http_status":200')
    try:
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(AuditChainError, match=f"line {index + 2} does not carry"):
            verify_audit_log(path)
    finally:
        path.write_bytes(original)


def test_add_namespace_rejects_duplicate(tenants):
    _, settings, _ = tenants
    with pytest.raises(GatewayError, match="namespace 'tenant-b' already has a key"):
        add_namespace(settings, "tenant-b")


@pytest.mark.parametrize("name", ["_", "", "bad/name", "-leading"])
def test_add_namespace_rejects_invalid(tenants, name):
    _, settings, _ = tenants
    with pytest.raises(GatewayError, match="is invalid"):
        add_namespace(settings, name)
