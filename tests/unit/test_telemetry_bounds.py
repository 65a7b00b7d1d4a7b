"""Timestamp bounds of the telemetry message contract."""

from datetime import datetime, timezone

import pytest

from saodf.errors import InvalidTelemetryError
from saodf.telemetry import TimestampOutOfRangeError, decode_message, validate_message

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def reading(timestamp: str) -> dict:
    return {"device_id": "pump-1", "timestamp": timestamp, "temperature": 21.5}


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59Z",
        "1900-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2026-12-05T12:00:01Z",
    ],
)
def test_bounds_reject_outside(timestamp):
    with pytest.raises(InvalidTelemetryError, match=rf"timestamp '{timestamp}' is out of range"):
        validate_message(reading(timestamp), now=NOW)


def test_bounds_message_names_limits():
    with pytest.raises(
        InvalidTelemetryError, match="from 1970-01-01T00:00:00Z to 2026-12-05T12:00:00Z"
    ):
        validate_message(reading("9999-12-31T23:59:59Z"), now=NOW)


@pytest.mark.parametrize(
    "timestamp",
    [
        "1970-01-01T00:00:00Z",
        "2013-07-04T00:00:00Z",
        "2020-02-08T14:00:00Z",
        "2026-12-05T12:00:00Z",
    ],
)
def test_bounds_accept_inside(timestamp):
    assert validate_message(reading(timestamp), now=NOW)["timestamp"] == timestamp


def test_bounds_default_clock_accepts_replay():
    assert decode_message(b'{"device_id": "d1", "timestamp": "2014-02-19T10:50:00Z", "v": 1}')


def test_bounds_default_clock_rejects_far_future():
    with pytest.raises(InvalidTelemetryError, match="out of range"):
        decode_message(b'{"device_id": "d1", "timestamp": "9999-12-31T23:59:59Z", "v": 1}')


def test_bounds_error_keeps_payload():
    with pytest.raises(InvalidTelemetryError) as caught:
        validate_message(reading("1900-01-01T00:00:00Z"), now=NOW)
    assert caught.value.payload == reading("1900-01-01T00:00:00Z")


def test_bounds_error_marks_future():
    with pytest.raises(TimestampOutOfRangeError) as caught:
        validate_message(reading("2026-12-06T00:00:00Z"), now=NOW)
    assert caught.value.in_future


def test_bounds_error_marks_past():
    with pytest.raises(TimestampOutOfRangeError) as caught:
        validate_message(reading("1900-01-01T00:00:00Z"), now=NOW)
    assert not caught.value.in_future
