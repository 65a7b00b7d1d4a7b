"""Unit tests of the lake writer's window bookkeeping, without a broker."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest

from streaming.windows import Window, reconcile_partition, window_id

T0 = datetime(2025, 4, 20, 12, 0, tzinfo=timezone.utc)


def _filled(count: int, partition: int = 0, first_offset: int = 0, now: float = 100.0) -> Window:
    window = Window("telemetry.raw")
    for offset in range(first_offset, first_offset + count):
        window.add(partition, offset, now, "sensor-1", T0.replace(second=offset % 60))
    return window


def test_window_id_matches_sha1_of_ranges():
    expected = hashlib.sha1(b"telemetry.raw:0:0-49999;telemetry.raw:1:10-20").hexdigest()
    assert window_id("telemetry.raw", {1: (10, 20), 0: (0, 49999)}) == expected


def test_window_id_is_deterministic():
    assert window_id("t", {0: (1, 2)}) == window_id("t", {0: (1, 2)})


def test_window_id_differs_by_range():
    assert window_id("t", {0: (1, 2)}) != window_id("t", {0: (1, 3)})


def test_window_id_rejects_empty_offsets():
    with pytest.raises(ValueError, match="at least one partition"):
        window_id("t", {})


def test_window_empty_is_never_due():
    assert not Window("t").is_due(now=1e9, max_messages=1, max_seconds=0.0)


def test_window_due_at_message_count():
    window = _filled(5)
    assert window.is_due(now=100.0, max_messages=5, max_seconds=60.0)


def test_window_not_due_below_count_and_age():
    window = _filled(4)
    assert not window.is_due(now=159.0, max_messages=5, max_seconds=60.0)


def test_window_due_at_age_without_new_messages():
    window = _filled(1, now=100.0)
    assert window.is_due(now=160.0, max_messages=50_000, max_seconds=60.0)


def test_window_counts_invalid_messages_toward_size():
    window = _filled(3)
    window.add(0, 3, 100.0)
    assert window.is_due(now=100.0, max_messages=4, max_seconds=60.0)


def test_window_room_shrinks_to_zero():
    window = _filled(3)
    assert window.room(5) == 2
    assert window.room(2) == 0


def test_window_add_rejects_repeated_offset():
    window = _filled(3)
    with pytest.raises(ValueError, match="not after the window's last offset 2"):
        window.add(0, 2, 100.0, "sensor-1", T0)


def test_window_event_fields():
    window = _filled(3)
    window.add(1, 7, 101.0, "sensor-0", T0.replace(minute=5))
    window.add(1, 8, 101.0)
    event = window.to_event("file:///lake", datetime(2025, 4, 20, 13, 0, tzinfo=timezone.utc))
    assert event["window_id"] == window_id("telemetry.raw", {0: (0, 2), 1: (7, 8)})
    assert event["topic"] == "telemetry.raw"
    assert event["offsets"] == {"0": [0, 2], "1": [7, 8]}
    assert event["devices"] == ["sensor-0", "sensor-1"]
    assert event["start"] == "2025-04-20T12:00:00Z"
    assert event["end"] == "2025-04-20T12:05:00.000001Z"
    assert event["message_count"] == 4
    assert event["dlq_count"] == 1
    assert event["lake_url"] == "file:///lake"
    assert event["emitted_at"] == "2025-04-20T13:00:00Z"


def test_window_event_rejects_only_invalid():
    window = Window("t")
    window.add(0, 0, 1.0)
    with pytest.raises(ValueError, match="no valid reading"):
        window.to_event("file:///lake", T0)


def test_window_roundtrip_through_dict():
    window = _filled(3)
    window.add(2, 9, 105.0)
    restored = Window.from_dict(window.to_dict())
    assert restored.offsets() == window.offsets()
    assert restored.valid_count == 3
    assert restored.invalid_count == 1
    assert restored.opened_at == 100.0
    assert restored.to_event("x", T0) == window.to_event("x", T0)


@pytest.mark.parametrize(
    ("saved", "committed", "expected"),
    [
        (None, 10, (None, False)),
        (10, None, (None, False)),
        (10, -1001, (None, False)),
        (10, 10, (None, True)),
        (12, 10, (12, True)),
        (8, 10, (None, False)),
    ],
)
def test_reconcile_partition_cases(saved, committed, expected):
    assert reconcile_partition(saved, committed) == expected
