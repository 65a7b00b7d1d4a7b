"""Layout and I/O of the data lake zones (a ``file://`` folder locally, ``s3://`` on AWS).

Raw zone, written by the lake writer and read by the preprocessing job::

    {lake}/raw/device_id={device}/date={YYYY-MM-DD}/hour={HH}/{topic}+{partition}+{first}+{last}[+{topic_id}].parquet

Each file holds the readings of one device and hour that came from one Kafka
partition's offset range, in long format (one row per metric), so a replay of the
same offsets overwrites the same file. Readers drop repeated
``(kafka_topic, kafka_partition, kafka_offset, metric, device_id, timestamp)`` rows,
which makes a crash between a write and its offset commit harmless.

Offsets alone do not identify a reading: a topic created again (as every topic of a
memory-only broker after a restart) starts its offsets at 0. The writer therefore adds the
topic's id to the file name, and the key above includes the device and timestamp, so
readings of two incarnations of a topic that share offsets are both kept.
"""

from __future__ import annotations

import io
import posixpath
from datetime import datetime, timezone
from typing import Iterable

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RAW_SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("schema_version", pa.int16()),
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)
RAW_KEY = ["kafka_topic", "kafka_partition", "kafka_offset", "metric", "device_id", "timestamp"]


def zone_url(lake_url: str, zone: str, *parts: str) -> str:
    return "/".join([lake_url.rstrip("/"), zone, *[p.strip("/") for p in parts if p]])


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return the fsspec filesystem for ``url`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def raw_partition_url(lake_url: str, device_id: str, hour_start: datetime) -> str:
    moment = hour_start.astimezone(timezone.utc)
    return zone_url(
        lake_url,
        "raw",
        f"device_id={device_id}",
        f"date={moment:%Y-%m-%d}",
        f"hour={moment:%H}",
    )


def raw_file_name(
    topic: str, partition: int, first_offset: int, last_offset: int, topic_id: str | None = None
) -> str:
    name = f"{topic}+{partition}+{first_offset:020d}+{last_offset:020d}"
    return f"{name}+{topic_id}.parquet" if topic_id else f"{name}.parquet"


def write_parquet_atomic(table: pa.Table, url: str) -> None:
    """Write ``table`` to ``url`` so that readers never see a partial file.

    On a local folder the file is written beside its target and renamed, then the
    folder is fsynced. Object stores (S3) publish a PUT atomically on their own.
    """
    fs, path = filesystem(url)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    if getattr(fs, "protocol", None) in ("file", ("file", "local"), "local") or "file" in (
        fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    ):
        import os

        tmp = f"{path}.tmp-{os.getpid()}"
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    with fs.open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def list_raw_files(
    lake_url: str,
    devices: Iterable[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[str]:
    """List raw files for ``devices`` (all when None) whose hour overlaps ``[start, end)``."""
    fs, root = filesystem(zone_url(lake_url, "raw"))
    if not fs.exists(root):
        return []
    if devices is None:
        device_dirs = [p for p in fs.ls(root, detail=False) if "device_id=" in p]
    else:
        device_dirs = [posixpath.join(root, f"device_id={d}") for d in devices]
    files: list[str] = []
    for device_dir in device_dirs:
        if not fs.exists(device_dir):
            continue
        for path in fs.find(device_dir):
            if not path.endswith(".parquet"):
                continue
            hour = _hour_of(path)
            if hour is not None:
                if start is not None and hour + pd.Timedelta(hours=1) <= start:
                    continue
                if end is not None and hour >= end:
                    continue
            files.append(fs.unstrip_protocol(path) if hasattr(fs, "unstrip_protocol") else path)
    return sorted(files)


def _hour_of(path: str) -> pd.Timestamp | None:
    date = hour = None
    for part in path.split("/"):
        if part.startswith("date="):
            date = part[5:]
        elif part.startswith("hour="):
            hour = part[5:]
    if date is None or hour is None:
        return None
    return pd.Timestamp(f"{date} {hour}:00:00", tz="UTC")


def read_raw(
    lake_url: str,
    devices: Iterable[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Read raw readings in long format, deduplicated, with ``start <= timestamp < end``."""
    files = list_raw_files(lake_url, devices, start, end)
    if not files:
        return RAW_SCHEMA.empty_table().to_pandas()
    tables = []
    for url in files:
        fs, path = filesystem(url)
        with fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle, schema=RAW_SCHEMA))
    frame = pa.concat_tables(tables).to_pandas()
    frame = frame.drop_duplicates(subset=RAW_KEY, keep="last")
    if start is not None:
        frame = frame[frame["timestamp"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["timestamp"] < pd.Timestamp(end)]
    return frame.sort_values(["device_id", "timestamp", "metric"]).reset_index(drop=True)
