"""Unit tests of dead-letter records, without a broker."""

from __future__ import annotations

from datetime import datetime, timezone

from streaming.dlq import decode_dlq_payload, dlq_record


def test_dlq_record_keeps_utf8_text():
    record = dlq_record(b'{"device_id": 1}', "device_id 1 is invalid", "lake_writer")
    assert record["payload"] == '{"device_id": 1}'
    assert record["payload_encoding"] == "utf-8"


def test_dlq_record_base64_for_binary():
    record = dlq_record(b"\xff\xfe\x00", "payload is not JSON", "lake_writer")
    assert record["payload_encoding"] == "base64"
    assert decode_dlq_payload(record) == b"\xff\xfe\x00"


def test_dlq_record_fields_and_extra():
    failed_at = datetime(2025, 4, 20, 12, 0, tzinfo=timezone.utc)
    record = dlq_record(b"x", "bad", "gateway", {"offset": 7, "reason": "ignored"}, failed_at)
    assert record["reason"] == "bad"
    assert record["source"] == "gateway"
    assert record["failed_at"] == "2025-04-20T12:00:00Z"
    assert record["offset"] == 7


def test_dlq_payload_roundtrip_text():
    record = dlq_record("température".encode(), "bad", "gateway")
    assert decode_dlq_payload(record) == "température".encode()
