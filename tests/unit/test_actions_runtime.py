"""Tests of the OpenWhisk action proxy protocol of the action runtime."""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import zipfile

import pytest

from actions.runtime import END_MARKER, make_server

ECHO = """
import os

def main(args):
    return {"args": args, "activation": os.environ.get("__OW_ACTIVATION_ID")}
"""


@pytest.fixture
def runtime():
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def _post(port: int, path: str, body) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _init(port: int, code: str = ECHO, **extra) -> tuple[int, dict]:
    return _post(port, "/init", {"value": {"name": "echo", "main": "main", "code": code, **extra}})


def test_init_then_run(runtime):
    assert _init(runtime)[0] == 200
    status, result = _post(runtime, "/run", {"value": {"x": 1}, "activation_id": "abc123"})
    assert status == 200
    assert result == {"args": {"x": 1}, "activation": "abc123"}


def test_second_init_rejected(runtime):
    assert _init(runtime)[0] == 200
    status, body = _init(runtime)
    assert status == 403
    assert body["error"] == "Cannot initialize the action more than once."


def test_run_before_init_rejected(runtime):
    status, body = _post(runtime, "/run", {"value": {}})
    assert status == 403
    assert "not initialized" in body["error"]


def test_init_without_code_fails(runtime):
    status, body = _post(runtime, "/init", {"value": {"name": "empty", "main": "main"}})
    assert status == 502
    assert "neither 'code' nor 'module'" in body["error"]


def test_init_missing_entry_point(runtime):
    status, body = _init(runtime, "def other(args):\n    return {}\n")
    assert status == 502
    assert "no function 'main'" in body["error"]


def test_non_dict_result_rejected(runtime):
    _init(runtime, "def main(args):\n    return [1, 2]\n")
    status, body = _post(runtime, "/run", {"value": {}})
    assert status == 502
    assert "did not return a dictionary" in body["error"]


def test_exception_reported(runtime):
    _init(runtime, "def main(args):\n    raise ValueError('boom')\n")
    status, body = _post(runtime, "/run", {"value": {}})
    assert status == 502
    assert body["error"] == "An exception was raised: boom"


def test_markers_after_run(runtime, capsys):
    _init(runtime, "def main(args):\n    print('hello')\n    return {}\n")
    _post(runtime, "/run", {"value": {}})
    captured = capsys.readouterr()
    assert captured.out.endswith(f"hello\n{END_MARKER}\n")
    assert captured.err.endswith(f"{END_MARKER}\n")


def test_binary_zip_action(runtime):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(
            "__main__.py", "from helper import twice\n\ndef main(a):\n    return twice(a)\n"
        )
        bundle.writestr("helper.py", "def twice(a):\n    return {'n': a['n'] * 2}\n")
    code = base64.b64encode(buffer.getvalue()).decode()
    assert _init(runtime, code, binary=True)[0] == 200
    assert _post(runtime, "/run", {"value": {"n": 21}}) == (200, {"n": 42})


def test_module_action(runtime):
    status, _ = _post(
        runtime,
        "/init",
        {"value": {"name": "detect", "main": "main", "module": "actions.detect_anomaly"}},
    )
    assert status == 200


IDENTITY = "def main(args):\n    return args\n"


def test_identity_returns_input(runtime):
    _init(runtime, IDENTITY)
    value = {"n": 1, "f": 2.5, "nested": {"list": [1, None, True]}, "empty": {}}
    assert _post(runtime, "/run", {"value": value}) == (200, value)


def test_unicode_round_trip(runtime):
    _init(runtime, IDENTITY)
    value = {"température": "23,7 °C", "名前": "温度センサー", "emoji": "🌡️", "rtl": "שלום"}
    assert _post(runtime, "/run", {"value": value}) == (200, value)


def test_unicode_output_before_marker(runtime, capsys):
    _init(runtime, "def main(args):\n    print('mesure', args['v'])\n    return {}\n")
    _post(runtime, "/run", {"value": {"v": "23,7 °C 🌡"}})
    assert capsys.readouterr().out.endswith(f"mesure 23,7 °C 🌡\n{END_MARKER}\n")


def test_large_payload_round_trip(runtime):
    _init(
        runtime,
        "def main(args):\n    return {'size': len(args['blob']), 'tail': args['blob'][-3:]}\n",
    )
    blob = "x" * (8 * 1024 * 1024 - 3) + "end"
    assert _post(runtime, "/run", {"value": {"blob": blob}}) == (
        200,
        {"size": 8 * 1024 * 1024, "tail": "end"},
    )


def test_large_result_round_trip(runtime):
    _init(runtime, "def main(args):\n    return {'values': list(range(args['n']))}\n")
    status, body = _post(runtime, "/run", {"value": {"n": 200_000}})
    assert status == 200
    assert body["values"][-1] == 199_999


def test_payload_over_limit_rejected(runtime):
    from actions.runtime import MAX_BODY_BYTES

    _init(runtime, IDENTITY)
    connection = http.client.HTTPConnection("127.0.0.1", runtime, timeout=10)
    try:
        connection.putrequest("POST", "/run")
        connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
    finally:
        connection.close()


def test_custom_entry_point(runtime):
    code = "def main(args):\n    return {'via': 'main'}\n\ndef handler(args):\n    return {'via': 'handler'}\n"
    assert _init(runtime, code, main="handler")[0] == 200
    assert _post(runtime, "/run", {"value": {}}) == (200, {"via": "handler"})


def test_custom_entry_point_missing(runtime):
    status, body = _init(runtime, IDENTITY, main="handler")
    assert status == 502
    assert "no function 'handler'" in body["error"]


def test_second_init_keeps_first_action(runtime):
    _init(runtime, "def main(args):\n    return {'version': 1}\n")
    status, _ = _init(runtime, "def main(args):\n    return {'version': 2}\n")
    assert status == 403
    assert _post(runtime, "/run", {"value": {}}) == (200, {"version": 1})


@pytest.mark.parametrize(
    ("result", "type_name"),
    [("'text'", "str"), ("None", "NoneType"), ("42", "int"), ("[{'a': 1}]", "list")],
)
def test_non_object_result_rejected(runtime, result, type_name):
    _init(runtime, f"def main(args):\n    return {result}\n")
    status, body = _post(runtime, "/run", {"value": {}})
    assert status == 502
    assert body["error"] == f"The action did not return a dictionary but a {type_name}."


def test_unserializable_result_rejected(runtime):
    _init(runtime, "def main(args):\n    return {'when': object()}\n")
    status, body = _post(runtime, "/run", {"value": {}})
    assert status == 502
    assert body["error"].startswith("The action result is not JSON")


def test_non_object_value_rejected(runtime):
    _init(runtime, IDENTITY)
    status, body = _post(runtime, "/run", {"value": [1, 2]})
    assert status == 400
    assert body["error"] == "/run value is a list; send a JSON object"


def test_ow_environment_set(runtime):
    code = "import os\n\ndef main(args):\n    return {k: v for k, v in os.environ.items() if k.startswith('__OW_')}\n"
    _init(runtime, code)
    body = {
        "value": {},
        "activation_id": "a1",
        "namespace": "tenant",
        "action_name": "/tenant/env",
        "api_host": "http://127.0.0.1:1",
        "api_key": "u:k",
        "deadline": "123",
    }
    status, result = _post(runtime, "/run", body)
    assert status == 200
    assert result["__OW_NAMESPACE"] == "tenant"
    assert result["__OW_ACTION_NAME"] == "/tenant/env"
    assert result["__OW_DEADLINE"] == "123"
    assert result["__OW_API_KEY"] == "u:k"
