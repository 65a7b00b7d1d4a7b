"""The telemetry message contract: parsing and validation shared by every entry point."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from saodf.errors import InvalidTelemetryError

SCHEMA_VERSION = 1
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
METRIC_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RESERVED_FIELDS = frozenset({"device_id", "timestamp", "schema_version"})
MAX_METRICS = 64
# A reading before the Unix epoch or more than a day ahead of the receiving clock comes from a
# wrong device clock. Historical replays (2013-2020 data) fall inside these bounds.
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE_SKEW = timedelta(days=1)


def parse_timestamp(value: Any) -> datetime:
    """Parse an ISO 8601 timestamp that carries a zone and return it in UTC."""
    if not isinstance(value, str):
        raise InvalidTelemetryError(
            f"timestamp {value!r} is not a string; send ISO 8601 with a zone, "
            "e.g. 2025-04-20T12:34:00Z"
        )
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidTelemetryError(
            f"timestamp {value!r} is not ISO 8601; use e.g. 2025-04-20T12:34:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidTelemetryError(
            f"timestamp {value!r} has no time zone; append 'Z' or an offset such as +02:00"
        )
    return parsed.astimezone(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 in UTC with a ``Z`` suffix."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: attach a zone before formatting")
    text = moment.astimezone(timezone.utc).isoformat()
    return text.replace("+00:00", "Z")


class TimestampOutOfRangeError(InvalidTelemetryError):
    """A reading stamped before 1970-01-01 or more than a day after the receiving clock."""

    def __init__(
        self, reason: str, payload: object = None, *, moment: datetime, in_future: bool
    ) -> None:
        super().__init__(reason, payload)
        self.moment = moment
        self.in_future = in_future


def check_timestamp_bounds(
    moment: datetime, value: Any, now: datetime | None = None, payload: object = None
) -> None:
    """Raise TimestampOutOfRangeError when ``moment`` is before 1970 or over a day after ``now``."""
    received_at = now if now is not None else datetime.now(timezone.utc)
    latest = received_at + MAX_FUTURE_SKEW
    if EARLIEST_TIMESTAMP <= moment <= latest:
        return
    raise TimestampOutOfRangeError(
        f"timestamp {value!r} is out of range. Send a time from "
        f"{format_timestamp(EARLIEST_TIMESTAMP)} to {format_timestamp(latest)}, "
        "at most one day after the receiving clock; fix the device clock",
        payload,
        moment=moment,
        in_future=moment > latest,
    )


def validate_message(message: Any, *, now: datetime | None = None) -> dict[str, Any]:
    """Validate one decoded telemetry message and return it normalised.

    The result has ``device_id``, ``timestamp`` (UTC, ``Z`` suffix), ``schema_version``
    and the numeric metrics as floats. Raises :class:`InvalidTelemetryError` naming the
    offending field and value. ``now`` is the receiving clock (default: the current UTC
    time); timestamps before 1970-01-01 or more than one day after it are rejected.
    """
    if not isinstance(message, dict):
        raise InvalidTelemetryError(
            f"message is a {type(message).__name__}, not a JSON object", payload=message
        )
    device_id = message.get("device_id")
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
        raise InvalidTelemetryError(
            f"device_id {device_id!r} is invalid; use 1-128 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit",
            payload=message,
        )
    if "timestamp" not in message:
        raise InvalidTelemetryError(
            "timestamp is missing; send ISO 8601 with a zone, e.g. 2025-04-20T12:34:00Z",
            payload=message,
        )
    try:
        moment = parse_timestamp(message["timestamp"])
    except InvalidTelemetryError as exc:
        raise InvalidTelemetryError(exc.reason, payload=message) from None
    check_timestamp_bounds(moment, message["timestamp"], now, payload=message)
    version = message.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InvalidTelemetryError(
            f"schema_version {version!r} is not supported; this platform reads version "
            f"{SCHEMA_VERSION}",
            payload=message,
        )
    metrics: dict[str, float] = {}
    for name, value in message.items():
        if name in RESERVED_FIELDS:
            continue
        if not isinstance(name, str) or not METRIC_NAME_PATTERN.match(name):
            raise InvalidTelemetryError(
                f"metric name {name!r} is invalid; use lower-case letters, digits and _",
                payload=message,
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidTelemetryError(f"metric {name}={value!r} is not a number", payload=message)
        if not math.isfinite(value):
            raise InvalidTelemetryError(
                f"metric {name}={value!r} is not finite; omit the metric for a missing reading",
                payload=message,
            )
        metrics[name] = float(value)
    if not metrics:
        raise InvalidTelemetryError(
            f"message for device {device_id!r} has no numeric metric", payload=message
        )
    if len(metrics) > MAX_METRICS:
        raise InvalidTelemetryError(
            f"message has {len(metrics)} metrics; the maximum is {MAX_METRICS}", payload=message
        )
    return {
        "device_id": device_id,
        "timestamp": format_timestamp(moment),
        "schema_version": SCHEMA_VERSION,
        **metrics,
    }


def decode_message(raw: bytes | str, *, now: datetime | None = None) -> dict[str, Any]:
    """Decode JSON bytes and validate them as one telemetry message received at ``now``."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        preview = raw[:80] if isinstance(raw, (bytes, str)) else raw
        raise InvalidTelemetryError(
            f"payload is not JSON ({exc}): {preview!r}", payload=raw
        ) from None
    return validate_message(decoded, now=now)


def encode_message(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message)


def metric_names(message: dict[str, Any]) -> list[str]:
    return [name for name in message if name not in RESERVED_FIELDS]
