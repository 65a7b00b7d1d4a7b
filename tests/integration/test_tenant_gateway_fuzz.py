"""Fuzzing of the action gateway's HTTP surface with tenant keys: no 500 and no crash."""

from __future__ import annotations

import base64
import http.client
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions.gateway import serve
from actions.pool import ActionSpec
from saodf.config import get_settings, reset_settings
from saodf.secrets import gateway_keys
from saodf.tenants import create_tenant

pytestmark = pytest.mark.integration

ECHO = "def main(args):\n    return {'keys': sorted(args)}\n"
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    home = tmp_path_factory.mktemp("tenant-fuzz")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        reset_settings()
        local = get_settings()
        gateway_keys(local)
        key = create_tenant("acme", settings=local)[1]["gateway_key"]
        server = serve(local, actions=[ActionSpec(name="echo", code=ECHO)], port=0)
        try:
            yield server, key
        finally:
            server.close()
            reset_settings()


def _send(server, method, path, body, authorization):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Length": str(len(body))}
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


AUTH = st.sampled_from(["valid", "none", "garbage", "wrong"])


def _authorization(kind, key, garbage):
    if kind == "valid":
        return "Basic " + base64.b64encode(key.encode()).decode()
    if kind == "none":
        return None
    if kind == "wrong":
        return "Basic " + base64.b64encode(garbage.encode("utf-8", "replace")).decode()
    # http.client rejects header values with control characters before sending them.
    text = garbage.encode("latin-1", "replace").decode("latin-1")
    return "".join(char for char in text if char >= " " and char != "\x7f")


@FUZZ
@given(
    namespace=st.sampled_from(["acme", "_", "saodf", "beta"]) | st.text(max_size=20),
    action=st.sampled_from(["echo", "forecast"]) | st.text(max_size=12),
    body=st.binary(max_size=300) | st.just(b'{"device_id": "../../etc/passwd"}'),
    auth=AUTH,
    garbage=st.text(max_size=40),
    method=st.sampled_from(["POST", "GET", "PUT"]),
)
def test_no_server_error(gateway, namespace, action, body, auth, garbage, method):
    server, key = gateway
    path = f"/api/v1/namespaces/{quote(namespace, safe='')}/actions/{quote(action, safe='')}"
    status = _send(
        server, method, path + "?blocking=true", body, _authorization(auth, key, garbage)
    )
    assert status < 500 or status == 502


def test_still_healthy(gateway):
    server, _ = gateway
    assert _send(server, "GET", "/health", b"", None) == 200
