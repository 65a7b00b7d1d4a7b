"""Unit tests of the ingest payload parsing, topic parsing and configuration."""

from __future__ import annotations

import orjson
import pytest

from saodf.errors import ConfigError
from streaming.ingest_config import IngestConfig
from streaming.ingest_gateway import BatchTooLargeError, _split_payload
from streaming.mqtt_bridge import topic_device


def test_split_single_object_keeps_raw():
    body = b'{"device_id": "d", "timestamp": "2025-04-20T12:00:00Z", "t": 1}'
    items, error = _split_payload(body, 10)
    assert error is None
    assert items[0][1] == body


def test_split_batch_items():
    body = orjson.dumps([{"a": 1}, {"b": 2}])
    items, error = _split_payload(body, 10)
    assert error is None
    assert [raw for _, raw in items] == [b'{"a":1}', b'{"b":2}']


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"nope", "payload is not JSON"),
        (b"[]", "batch is empty"),
        (b"42", "payload is a JSON int"),
        (b'"text"', "payload is a JSON str"),
    ],
)
def test_split_invalid_body_reason(body, reason):
    items, error = _split_payload(body, 10)
    assert items == []
    assert reason in error


def test_split_batch_too_large():
    with pytest.raises(BatchTooLargeError, match="maximum is 2"):
        _split_payload(orjson.dumps([{}, {}, {}]), 2)


@pytest.mark.parametrize(
    ("topic", "device"),
    [
        ("devices/dev-1/telemetry", "dev-1"),
        ("devices//telemetry", None),
        ("devices/dev-1/status", None),
        ("other/dev-1/telemetry", None),
    ],
)
def test_topic_device_parsing(topic, device):
    assert topic_device(topic) == device


def test_config_reads_env(monkeypatch):
    monkeypatch.setenv("SAODF_INGEST_T_MAX_S", "0.2")
    monkeypatch.setenv("SAODF_MQTT_PORT", "12883")
    config = IngestConfig.from_env()
    assert config.policy.t_max_s == pytest.approx(0.2)
    assert config.mqtt_port == 12883


def test_config_env_round_trip(monkeypatch):
    config = IngestConfig(http_port=1234, sqs_visibility_timeout_s=3)
    for name, value in config.env().items():
        monkeypatch.setenv(name, value)
    assert IngestConfig.from_env() == config


def test_config_rejects_text_number(monkeypatch):
    monkeypatch.setenv("SAODF_INGEST_MAX_BATCH", "many")
    with pytest.raises(ConfigError, match="SAODF_INGEST_MAX_BATCH='many' is not a number"):
        IngestConfig.from_env()


def test_path_label_keeps_routes():
    from streaming.ingest_gateway import TELEMETRY_PATH, path_label

    assert path_label(TELEMETRY_PATH + "?token=abc") == TELEMETRY_PATH


def test_path_label_keeps_short_typos():
    from streaming.ingest_gateway import path_label

    assert path_label("/v1/telemtry") == "/v1/telemtry"


def test_path_label_hides_long_segments():
    import secrets

    from streaming.ingest_gateway import path_label

    token = secrets.token_urlsafe(32)
    label = path_label(f"/v1/{token}")
    assert token not in label
    assert label.startswith("sha256:")
