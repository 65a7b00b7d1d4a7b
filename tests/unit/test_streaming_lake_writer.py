"""Unit tests of the lake writer's grouping and table building, without a broker."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from saodf.config import Settings
from saodf.lake import RAW_SCHEMA, read_raw, write_parquet_atomic
from streaming.kafka import StreamingError
from streaming.lake_writer import (
    LakeWriter,
    Reading,
    group_readings,
    raw_file_url,
    readings_table,
    state_path,
)


def _reading(offset: int, device: str, hour: int, minute: int = 0, partition: int = 0) -> Reading:
    moment = datetime(2025, 4, 20, hour, minute, tzinfo=timezone.utc)
    message = {
        "device_id": device,
        "timestamp": moment.isoformat(),
        "schema_version": 1,
        "temperature": 20.0 + offset,
        "vibration": 0.5,
    }
    return Reading(partition, offset, message, moment)


def test_group_readings_by_device_hour_partition():
    readings = [
        _reading(0, "a", 12),
        _reading(1, "b", 12),
        _reading(2, "a", 13),
        _reading(3, "a", 12, 59),
        _reading(4, "a", 12, partition=1),
    ]
    groups = group_readings(readings)
    hour12 = datetime(2025, 4, 20, 12, tzinfo=timezone.utc)
    assert sorted(groups) == sorted(
        [
            ("a", hour12, 0),
            ("b", hour12, 0),
            ("a", hour12.replace(hour=13), 0),
            ("a", hour12, 1),
        ]
    )
    assert [r.offset for r in groups[("a", hour12, 0)]] == [0, 3]


def test_readings_table_long_format():
    table = readings_table("telemetry.raw", [_reading(5, "a", 12), _reading(6, "a", 12)])
    assert table.schema == RAW_SCHEMA
    assert table.num_rows == 4
    assert table.column("metric").to_pylist() == [
        "temperature",
        "vibration",
        "temperature",
        "vibration",
    ]
    assert table.column("kafka_offset").to_pylist() == [5, 5, 6, 6]
    assert table.column("value").to_pylist()[2] == 26.0


def test_raw_file_url_names_topic_id(tmp_path):
    items = [_reading(0, "a", 12), _reading(1, "a", 12)]
    hour = datetime(2025, 4, 20, 12, tzinfo=timezone.utc)
    first = raw_file_url(tmp_path.as_uri(), "telemetry.raw", "a", hour, items, "01" * 16)
    second = raw_file_url(tmp_path.as_uri(), "telemetry.raw", "a", hour, items, "02" * 16)
    assert first != second
    assert first.endswith("+" + "01" * 16 + ".parquet")
    assert raw_file_url(tmp_path.as_uri(), "telemetry.raw", "a", hour, items).endswith(
        "+00000000000000000001.parquet"
    )


def test_read_raw_keeps_reused_offsets(tmp_path):
    """Readings of two topic incarnations share offsets; a replay of one batch does not."""
    lake = tmp_path.as_uri()
    hour = datetime(2025, 4, 20, 12, tzinfo=timezone.utc)
    old = [_reading(0, "a", 12, minute=1), _reading(1, "a", 12, minute=2)]
    new = [_reading(0, "a", 12, minute=3), _reading(1, "b", 12, minute=4)]
    for items, topic_id in ((old, "01" * 16), (new, "02" * 16)):
        for device in ("a", "b"):
            batch = [item for item in items if item.device_id == device]
            if batch:
                url = raw_file_url(lake, "telemetry.raw", device, hour, batch, topic_id)
                write_parquet_atomic(readings_table("telemetry.raw", batch), url)
    replayed = raw_file_url(lake, "telemetry.raw", "a", hour, old[:1], "03" * 16)
    write_parquet_atomic(readings_table("telemetry.raw", old[:1]), replayed)
    frame = read_raw(lake)
    assert len(frame) == 8
    assert frame.groupby("device_id").size().to_dict() == {"a": 6, "b": 2}


def test_state_path_sanitises_group(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    settings = Settings.from_env()
    path = state_path(settings, "group/with spaces")
    assert path.parent == tmp_path / "run" / "lake_writer"
    assert path.name == "group_with_spaces.json"


class _Message:
    def __init__(self, offset: int, value: bytes | None):
        self._offset = offset
        self._value = value

    def error(self):
        return None

    def topic(self) -> str:
        return "telemetry.raw"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"sensor-1"

    def value(self) -> bytes | None:
        return self._value


class _StuckProducer:
    """Producer whose queued messages never get a delivery report."""

    def produce(self, *args, **kwargs) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 1


def test_writer_keeps_offsets_when_dlq_flush_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    monkeypatch.setenv("SAODF_LAKE_URL", (tmp_path / "lake").as_uri())
    writer = LakeWriter(Settings.from_env(), group_id="g1")
    writer._producer = _StuckProducer()
    with pytest.raises(StreamingError, match="1 message\\(s\\) still undelivered"):
        writer.process_batch([_Message(0, b"not json")])
    assert writer.next_offsets == {}
    assert not writer.state_file.exists()
