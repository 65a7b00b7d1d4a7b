"""Ingest gateway error messages, over HTTP with a stub router."""

from __future__ import annotations

import http.client
import json

import orjson
import pytest

from saodf.config import Settings
from streaming.ingest_config import IngestConfig
from streaming.ingest_gateway import IngestGateway
from streaming.ingest_metrics import IngestMetrics
from streaming.ingest_router import Outcome
from streaming.tokens import create_device_token

DEVICE = "gw-1"


class StubRouter:
    """A router that stores every valid reading in Kafka and every dead letter in the spool."""

    def __init__(self):
        self.metrics = IngestMetrics()

    def submit(self, readings):
        return [Outcome("kafka") for _ in readings]

    def dead_letter(self, letters):
        return ["spool"] * len(letters)

    def start(self):
        pass

    def close(self):
        pass


@pytest.fixture
def gateway(tmp_path):
    settings = Settings.from_env().with_overrides(home=tmp_path / "home")
    server = IngestGateway(settings, IngestConfig(), router=StubRouter(), port=0)
    server.start()
    try:
        yield server, create_device_token(DEVICE, settings)
    finally:
        server.stop()


def _post(server: IngestGateway, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """Send ``body`` with exactly ``headers`` and return the status and decoded JSON body."""
    host, port = server.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/telemetry", skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        connection.send(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _post_readings(server: IngestGateway, token: str, payload: object) -> tuple[int, dict]:
    body = orjson.dumps(payload)
    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(len(body))}
    return _post(server, body, headers)


def test_content_length_text_invalid(gateway):
    server, token = gateway
    headers = {"Authorization": f"Bearer {token}", "Content-Length": "abc"}
    status, body = _post(server, b"{}", headers)
    assert status == 411
    assert body["error"] == (
        "Content-Length 'abc' is invalid; send the body's length in bytes as a decimal integer"
    )


def test_content_length_long_value_cut(gateway):
    server, token = gateway
    headers = {"Authorization": f"Bearer {token}", "Content-Length": "9" * 19 + "x" * 100}
    status, body = _post(server, b"{}", headers)
    assert status == 411
    assert body["error"].startswith(f"Content-Length '{'9' * 19}x...' is invalid")


def test_content_length_missing(gateway):
    server, token = gateway
    status, body = _post(server, b"", {"Authorization": f"Bearer {token}"})
    assert status == 411
    assert body["error"] == "Content-Length is missing"


def test_missing_timestamp_reason(gateway):
    server, token = gateway
    reading = {"device_id": DEVICE, "temperature": 21.5}
    status, body = _post_readings(server, token, reading)
    assert status == 400
    assert body["results"][0]["reason"] == (
        "timestamp is missing; send ISO 8601 with a zone, e.g. 2025-04-20T12:34:00Z"
    )
