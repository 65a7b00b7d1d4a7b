"""Window bookkeeping of the lake writer: offsets, devices and time range of the open window.

A window closes after ``window_messages`` consumed messages or ``window_seconds`` of wall
time since its first message, whichever comes first. Its event lists the offsets and
devices whose readings reached the lake. The window id is a hash of the topic and the offset range of
each partition, so the same offsets always give the same id and consumers can deduplicate.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from saodf.telemetry import format_timestamp, parse_timestamp

logger = logging.getLogger(__name__)

# Timestamps in the raw zone have microsecond precision, so "just after the max" is +1 us.
END_RESOLUTION = timedelta(microseconds=1)


def window_id(topic: str, offsets: dict[int, tuple[int, int]]) -> str:
    """Return the sha1 hex id of ``topic`` and the ``{partition: (first, last)}`` offsets."""
    if not offsets:
        raise ValueError("a window id needs at least one partition offset range")
    ranges = ";".join(
        f"{topic}:{partition}:{first}-{last}"
        for partition, (first, last) in sorted(offsets.items())
    )
    return hashlib.sha1(ranges.encode("utf-8")).hexdigest()


@dataclass
class PartitionSpan:
    """The part of the open window that came from one partition."""

    first: int
    last: int
    opened_at: float
    valid: int = 0
    invalid: int = 0
    devices: set[str] = field(default_factory=set)
    min_ts: datetime | None = None
    max_ts: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "last": self.last,
            "opened_at": self.opened_at,
            "valid": self.valid,
            "invalid": self.invalid,
            "devices": sorted(self.devices),
            "min_ts": format_timestamp(self.min_ts) if self.min_ts else None,
            "max_ts": format_timestamp(self.max_ts) if self.max_ts else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PartitionSpan":
        return cls(
            first=int(data["first"]),
            last=int(data["last"]),
            opened_at=float(data["opened_at"]),
            valid=int(data["valid"]),
            invalid=int(data["invalid"]),
            devices=set(data["devices"]),
            min_ts=parse_timestamp(data["min_ts"]) if data.get("min_ts") else None,
            max_ts=parse_timestamp(data["max_ts"]) if data.get("max_ts") else None,
        )


@dataclass
class Window:
    """The open window of one lake writer, across all partitions it has consumed."""

    topic: str
    spans: dict[int, PartitionSpan] = field(default_factory=dict)

    @property
    def message_total(self) -> int:
        """Number of consumed messages in the window, valid and dead-lettered."""
        return sum(span.valid + span.invalid for span in self.spans.values())

    @property
    def valid_count(self) -> int:
        return sum(span.valid for span in self.spans.values())

    @property
    def invalid_count(self) -> int:
        return sum(span.invalid for span in self.spans.values())

    @property
    def opened_at(self) -> float | None:
        """Wall-clock time (epoch seconds) at which the window's first message arrived."""
        if not self.spans:
            return None
        return min(span.opened_at for span in self.spans.values())

    def is_empty(self) -> bool:
        return not self.spans

    def add(
        self,
        partition: int,
        offset: int,
        now: float,
        device_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Record one consumed message, with ``device_id`` None for a dead-lettered one."""
        span = self.spans.get(partition)
        if span is None:
            span = PartitionSpan(first=offset, last=offset, opened_at=now)
            self.spans[partition] = span
        if offset < span.first or (offset <= span.last and span.valid + span.invalid > 0):
            raise ValueError(
                f"offset {offset} of partition {partition} is not after the window's last "
                f"offset {span.last}; a partition's offsets must be added in order"
            )
        span.last = offset
        if device_id is None:
            span.invalid += 1
            return
        span.valid += 1
        span.devices.add(device_id)
        if timestamp is not None:
            if span.min_ts is None or timestamp < span.min_ts:
                span.min_ts = timestamp
            if span.max_ts is None or timestamp > span.max_ts:
                span.max_ts = timestamp

    def room(self, max_messages: int) -> int:
        """Return how many more messages fit before the window reaches ``max_messages``."""
        return max(max_messages - self.message_total, 0)

    def is_due(self, now: float, max_messages: int, max_seconds: float) -> bool:
        """Return True when the window is full or its first message is ``max_seconds`` old."""
        if self.is_empty():
            return False
        if self.message_total >= max_messages:
            return True
        return now - (self.opened_at or now) >= max_seconds

    def offsets(self) -> dict[int, tuple[int, int]]:
        return {p: (span.first, span.last) for p, span in sorted(self.spans.items())}

    def id(self) -> str:
        return window_id(self.topic, self.offsets())

    def to_event(self, lake_url: str, emitted_at: datetime) -> dict[str, Any]:
        """Build the window event; ``message_count`` counts readings written to the lake.

        ``dlq_count`` counts the messages of the window's offsets that went to the
        dead-letter topic instead. Raises ValueError for a window without valid readings.
        """
        starts = [s.min_ts for s in self.spans.values() if s.min_ts is not None]
        ends = [s.max_ts for s in self.spans.values() if s.max_ts is not None]
        if not starts or not ends:
            raise ValueError(f"window {self.offsets()} has no valid reading to announce")
        devices: set[str] = set()
        for span in self.spans.values():
            devices |= span.devices
        return {
            "window_id": self.id(),
            "topic": self.topic,
            "offsets": {str(p): [first, last] for p, (first, last) in self.offsets().items()},
            "devices": sorted(devices),
            "start": format_timestamp(min(starts)),
            "end": format_timestamp(max(ends) + END_RESOLUTION),
            "message_count": self.valid_count,
            "dlq_count": self.invalid_count,
            "lake_url": lake_url,
            "emitted_at": format_timestamp(emitted_at.astimezone(timezone.utc)),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "spans": {str(p): span.to_dict() for p, span in sorted(self.spans.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Window":
        return cls(
            topic=data["topic"],
            spans={int(p): PartitionSpan.from_dict(s) for p, s in data.get("spans", {}).items()},
        )


def reconcile_partition(saved_next: int | None, committed: int | None) -> tuple[int | None, bool]:
    """Decide where a partition resumes after a restart, from saved state and committed offset.

    The state file is written after the lake files are durable and before the commit, so
    a saved next offset ahead of the committed one is safe to resume from.

    Returns:
        ``(seek_to, keep_window)``: the offset to seek to (None keeps the committed
        offset) and whether the saved window part of this partition is still valid.
    """
    if saved_next is None or committed is None or committed < 0:
        # Without a commit the group is new or the broker lost its offsets, so the state is stale.
        return None, False
    if saved_next > committed:
        return saved_next, True
    if saved_next == committed:
        return None, True
    # Another group member consumed past the saved state, so that part of the window is stale.
    return None, False
