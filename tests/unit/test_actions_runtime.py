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
