"""Tests of the action gateway with real runtime processes and a real redis-server."""

from __future__ import annotations

import json

import pytest
import requests

from actions.audit import verify_audit_log
from actions.gateway import DEFAULT_ACTIONS, serve
from actions.pool import ActionSpec
from saodf.secrets import gateway_keys

pytestmark = pytest.mark.integration

ECHO = "import os\n\ndef main(args):\n    print('echo', args)\n    return {'args': args, 'ns': os.environ['__OW_NAMESPACE']}\n"
SLEEPY = "import time\n\ndef main(args):\n    time.sleep(30)\n    return {}\n"
FAILING = "def main(args):\n    return {'error': 'bad input ' + str(args.get('x'))}\n"


@pytest.fixture(scope="module")
def gateway_home(session_settings, tmp_path_factory):
    """A home of its own, so this gateway's audit chain is not interleaved with another
    gateway process of the session; the secrets (API keys) stay the session's."""
    home = tmp_path_factory.mktemp("gateway-home")
    from saodf.secrets import gateway_keys

    gateway_keys(session_settings)
    (home / "secrets").symlink_to(session_settings.home / "secrets", target_is_directory=True)
    return session_settings.with_overrides(home=home)


@pytest.fixture(scope="module")
def gateway(redis_server, gateway_home):
    actions = [
        *DEFAULT_ACTIONS,
        ActionSpec(name="echo", code=ECHO),
        ActionSpec(name="sleepy", code=SLEEPY, timeout_seconds=1.0),
        ActionSpec(name="failing", code=FAILING),
    ]
    server = serve(gateway_home, actions=actions, port=0, max_body_bytes=4096)
    yield server
    server.close()


@pytest.fixture(scope="module")
def auth(session_settings) -> tuple[str, str]:
    user, key = gateway_keys(session_settings)[session_settings.gateway_namespace].split(":", 1)
    return user, key


def _action_url(
    gateway, action: str, namespace: str = "saodf", query: str = "blocking=true"
) -> str:
    return f"{gateway.url}/api/v1/namespaces/{namespace}/actions/{action}?{query}"


def test_health_without_auth(gateway):
    reply = requests.get(f"{gateway.url}/health", timeout=10)
    assert reply.status_code == 200
    assert "detect_anomaly" in reply.json()["actions"]


def test_invoke_returns_activation(gateway, auth):
    reply = requests.post(_action_url(gateway, "echo"), json={"x": 1}, auth=auth, timeout=30)
    assert reply.status_code == 200
    record = reply.json()
    assert record["response"]["success"] is True
    assert record["response"]["statusCode"] == 0
    assert record["response"]["result"] == {"args": {"x": 1}, "ns": "saodf"}
    assert record["duration"] == record["end"] - record["start"]
    assert "echo {'x': 1}" in "\n".join(record["logs"])


def test_invoke_result_only(gateway, auth):
    url = _action_url(gateway, "echo", query="blocking=true&result=true")
    reply = requests.post(url, json={"x": 2}, auth=auth, timeout=30)
    assert reply.json() == {"args": {"x": 2}, "ns": "saodf"}


def test_default_namespace_underscore(gateway, auth):
    reply = requests.post(
        _action_url(gateway, "echo", namespace="_"), json={}, auth=auth, timeout=30
    )
    assert reply.status_code == 200


def test_missing_auth_401(gateway):
    reply = requests.post(_action_url(gateway, "echo"), json={}, timeout=10)
    assert reply.status_code == 401


def test_wrong_key_401(gateway, auth):
    reply = requests.post(
        _action_url(gateway, "echo"), json={}, auth=(auth[0], "wrong"), timeout=10
    )
    assert reply.status_code == 401


def test_other_namespace_403(gateway, auth):
    reply = requests.post(
        _action_url(gateway, "echo", namespace="other"), json={}, auth=auth, timeout=10
    )
    assert reply.status_code == 403


def test_unknown_action_404(gateway, auth):
    reply = requests.post(_action_url(gateway, "nope"), json={}, auth=auth, timeout=10)
    assert reply.status_code == 404


def test_large_body_413(gateway, auth):
    reply = requests.post(
        _action_url(gateway, "echo"), json={"x": "y" * 5000}, auth=auth, timeout=10
    )
    assert reply.status_code == 413


def test_non_object_body_400(gateway, auth):
    reply = requests.post(_action_url(gateway, "echo"), json=[1], auth=auth, timeout=10)
    assert reply.status_code == 400


def test_application_error_502(gateway, auth):
    reply = requests.post(_action_url(gateway, "failing"), json={"x": 3}, auth=auth, timeout=30)
    assert reply.status_code == 502
    assert reply.json()["response"]["status"] == "application error"
    assert reply.json()["response"]["result"] == {"error": "bad input 3"}


def test_timeout_then_recovers(gateway, auth):
    reply = requests.post(_action_url(gateway, "sleepy"), json={}, auth=auth, timeout=60)
    assert reply.status_code == 502
    assert (
        "exceeded its time limit of 1000 milliseconds"
        in reply.json()["response"]["result"]["error"]
    )
    again = requests.post(_action_url(gateway, "sleepy"), json={}, auth=auth, timeout=60)
    assert again.json()["response"]["status"] == "action developer error"


def test_activation_lookup(gateway, auth):
    record = requests.post(_action_url(gateway, "echo"), json={}, auth=auth, timeout=30).json()
    url = f"{gateway.url}/api/v1/namespaces/saodf/activations/{record['activationId']}"
    assert requests.get(url, auth=auth, timeout=10).json() == record


def test_non_blocking_returns_id(gateway, auth):
    url = _action_url(gateway, "echo", query="blocking=false")
    reply = requests.post(url, json={}, auth=auth, timeout=30)
    assert reply.status_code == 202
    assert len(reply.json()["activationId"]) == 32


def test_detect_anomaly_through_gateway(gateway, auth):
    readings = [
        {
            "device_id": "gw-dev-1",
            "timestamp": f"2025-04-20T12:{i:02d}:00Z",
            "temperature": 50.0 + i % 3,
        }
        for i in range(40)
    ]
    readings.append(
        {"device_id": "gw-dev-1", "timestamp": "2025-04-20T12:40:00Z", "temperature": 150.0}
    )
    url = _action_url(gateway, "detect_anomaly", query="blocking=true&result=true")
    reply = requests.post(url, json={"readings": readings, "warmup": 20}, auth=auth, timeout=60)
    assert reply.status_code == 200
    assert reply.json()["anomalies"] == 1


def test_metrics_require_auth(gateway):
    assert requests.get(f"{gateway.url}/metrics", timeout=10).status_code == 401


def test_metrics_exposition(gateway, auth):
    requests.post(_action_url(gateway, "echo"), json={}, auth=auth, timeout=30)
    text = requests.get(f"{gateway.url}/metrics", auth=auth, timeout=10).text
    assert (
        'saodf_gateway_invocations_total{namespace="saodf",action="echo",status="success"}' in text
    )
    assert "saodf_cache_up 1" in text
    assert "saodf_cache_used_memory_bytes" in text
    assert 'saodf_gateway_activation_duration_seconds_bucket{action="echo",le="+Inf"}' in text


def test_audit_log_chain(gateway, auth):
    requests.post(_action_url(gateway, "echo"), json={}, auth=auth, timeout=30)
    requests.post(_action_url(gateway, "echo"), json={}, timeout=10)
    path = gateway.gateway.audit.path
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert verify_audit_log(path) == len(records)
    assert {"invoke", "reject"} <= {record["event"] for record in records}
    assert all(auth[1] not in json.dumps(record) for record in records)


def _raw_request(gateway, request: bytes, timeout: float = 10.0) -> bytes:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(gateway.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
    return b"".join(chunks)


def test_negative_content_length_400(gateway, auth):
    import base64

    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = (
        b"POST /api/v1/namespaces/saodf/actions/echo?blocking=true HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nAuthorization: Basic " + token.encode() + b"\r\n"
        b"Content-Length: -5\r\n\r\n"
    )
    reply = _raw_request(gateway, request)
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"negative" in reply or b"Content-Length" in reply


def test_put_method_not_allowed_json(gateway, auth):
    reply = requests.put(_action_url(gateway, "echo"), json={}, auth=auth, timeout=10)
    assert reply.status_code == 405
    assert "not allowed" in reply.json()["error"]
    assert reply.headers["Allow"] == "POST"


def test_deeply_nested_body_400(gateway, auth):
    body = "[" * 2000 + "]" * 2000
    reply = requests.post(_action_url(gateway, "echo"), data=body, auth=auth, timeout=30)
    assert reply.status_code == 400
    assert "too deeply" in reply.json()["error"]
    records = [json.loads(line) for line in gateway.gateway.audit.path.read_text().splitlines()]
    rejects = [record for record in records if "too deeply" in str(record.get("reason"))]
    assert len(rejects) == 1
    assert rejects[0]["http_status"] == 400
    assert verify_audit_log(gateway.gateway.audit.path) == len(records)


def test_deeply_nested_object_then_serves(gateway, auth):
    body = '{"x": ' + "[" * 1500 + "]" * 1500 + "}"
    nested = requests.post(_action_url(gateway, "echo"), data=body, auth=auth, timeout=30)
    assert nested.status_code == 400
    reply = requests.post(_action_url(gateway, "echo"), json={"x": 1}, auth=auth, timeout=30)
    assert reply.status_code == 200
