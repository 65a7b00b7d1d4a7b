"""Readers of the telemetry datasets (NAB, SKAB, Intel Berkeley Lab, telemetry JSON Lines).

Every reader returns a frame and a :class:`ReadReport`. Rows that cannot be used are
skipped with their line number, a reason and their raw text, so nothing is dropped
silently. Naive timestamps are taken as UTC unless a reader says otherwise.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import pandas as pd

from saodf.errors import DatasetError, InvalidTelemetryError
from saodf.telemetry import (
    DEVICE_ID_PATTERN,
    SCHEMA_VERSION,
    TimestampOutOfRangeError,
    format_timestamp,
    validate_message,
)

logger = logging.getLogger(__name__)

# Reasons of skipped rows; ReadReport.summary() counts rows per reason.
WRONG_FIELD_COUNT = "wrong field count"
INVALID_TIMESTAMP = "invalid timestamp"
NON_NUMERIC_VALUE = "non-numeric value"
NON_FINITE_VALUE = "non-finite value"
MISSING_VALUE = "missing value"
INVALID_LABEL = "invalid label"
MOTE_ID_OUT_OF_RANGE = "mote id out of range"
LOW_BATTERY_FAULT = "low-battery fault"
IMPLAUSIBLE_READING = "implausible reading"
INVALID_TELEMETRY = "invalid telemetry"
FUTURE_TIMESTAMP = "timestamp in the future"

# Observations about kept rows, counted in ReadReport.notes.
DUPLICATE_TIMESTAMPS = "duplicate timestamps"
OUT_OF_ORDER_ROWS = "out-of-order rows"
MISSING_EPOCHS = "missing epochs"
BLANK_LINES = "blank lines"
ROWS_WITHOUT_METRICS = "rows without metrics"

SKAB_METRICS = {
    "Accelerometer1RMS": "accelerometer1_rms",
    "Accelerometer2RMS": "accelerometer2_rms",
    "Current": "current",
    "Pressure": "pressure",
    "Temperature": "temperature",
    "Thermocouple": "thermocouple",
    "Voltage": "voltage",
    "Volume Flow RateRMS": "volume_flow_rate_rms",
}
SKAB_LABELS = ("anomaly", "changepoint")

INTEL_FIELDS = (
    "date",
    "time",
    "epoch",
    "moteid",
    "temperature",
    "humidity",
    "light",
    "voltage",
)
INTEL_METRICS = ("temperature", "humidity", "light", "voltage")
# The Intel Berkeley Lab deployment had motes 1-54.
INTEL_MAX_MOTE_ID = 54
# Below about 2.4 V a mote reports temperatures near 122 C with negative humidity.
INTEL_LOW_VOLTAGE = 2.4
INTEL_MAX_TEMPERATURE_C = 100.0

DATASETS = ("nab", "skab", "intel")
INTEL_FILES = ("data.txt", "data.txt.gz")

# A reading more than this ahead of the reader's clock is skipped as being in the future.
MAX_CLOCK_SKEW = pd.Timedelta(hours=1)

_OFFSET_SUFFIX = re.compile(r"(?:[Zz]|[+-]\d{2}:?\d{2})$")


class SkippedRow(NamedTuple):
    """A row that a reader did not keep."""

    line_number: int
    reason: str
    text: str
    detail: str = ""


@dataclass
class ReadReport:
    """Counts of one read and the rows it skipped."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    skipped: list[SkippedRow] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)

    def skip(self, line_number: int, reason: str, text: str, detail: str = "") -> None:
        self.skipped.append(SkippedRow(line_number, reason, text, detail))

    def note(self, name: str, count: int = 1) -> None:
        if count:
            self.notes[name] += count

    def summary(self) -> dict[str, int]:
        """Count the skipped rows per reason."""
        return dict(Counter(row.reason for row in self.skipped))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "skipped": self.summary(),
            "notes": dict(self.notes),
        }

    def log(self) -> None:
        """Log the counts, and a warning with the first skipped row when rows were skipped."""
        if self.skipped:
            first = self.skipped[0]
            logger.warning(
                "Skipped %d of %d rows of %s: %s; first at line %d (%s): %r",
                len(self.skipped),
                self.rows_read,
                self.source,
                self.summary(),
                first.line_number,
                first.detail or first.reason,
                first.text[:120],
            )
        logger.info(
            "Read %d rows of %s, kept %d, notes %s",
            self.rows_read,
            self.source,
            self.rows_kept,
            dict(self.notes),
        )


@dataclass
class DeviceSeries:
    """The readings of one device: ``frame`` has ``timestamp`` and one column per metric.

    ``labels`` is a frame with ``timestamp``, ``anomaly`` and ``changepoint`` (SKAB), a
    list of ``(start, end)`` anomaly windows as UTC timestamps (NAB), or None.
    """

    device_id: str
    frame: pd.DataFrame
    labels: pd.DataFrame | list[tuple[pd.Timestamp, pd.Timestamp]] | None
    source: str

    @property
    def metrics(self) -> list[str]:
        return [column for column in self.frame.columns if column != "timestamp"]


# ---------------------------------------------------------------------------
# Parsing helpers shared by the readers


def _open_text(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} not found; check the path or download the data")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def parse_timestamps(texts: pd.Series, assume_tz: str = "UTC") -> pd.Series:
    """Parse ISO 8601 strings to UTC timestamps; invalid strings become NaT.

    Strings without a zone are taken to be in ``assume_tz``. Strings with an offset are
    parsed apart from naive ones, because pandas 2.3 shifts later naive strings by an
    earlier string's offset when one call parses both.
    """
    texts = texts.astype(str).str.strip()
    result = pd.Series(pd.NaT, index=texts.index, dtype="datetime64[ns, UTC]")
    has_offset = texts.str.contains(_OFFSET_SUFFIX)
    if has_offset.any():
        result[has_offset] = pd.to_datetime(
            texts[has_offset], format="ISO8601", utc=True, errors="coerce"
        )
    naive = ~has_offset
    if naive.any():
        parsed = pd.to_datetime(texts[naive], format="ISO8601", errors="coerce")
        parsed = parsed.dt.tz_localize(assume_tz, ambiguous="NaT", nonexistent="NaT")
        result[naive] = parsed.dt.tz_convert("UTC")
    return result


def _parse_numbers(texts: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Return the numbers, a mask of unparsable text and a mask of infinite values.

    Empty cells and ``nan`` become NaN without being flagged.
    """
    stripped = texts.astype(str).str.strip()
    numbers = pd.to_numeric(stripped, errors="coerce").astype("float64")
    empty = stripped.eq("") | stripped.str.lower().eq("nan")
    unparsable = numbers.isna() & ~empty
    infinite = np.isinf(numbers)
    return numbers, unparsable, infinite


def _skip_rows(
    report: ReadReport,
    table: pd.DataFrame,
    mask: pd.Series,
    reason: str,
    detail: str | pd.Series = "",
) -> pd.Series:
    """Record the rows of ``table`` selected by ``mask`` as skipped and return ``~mask``."""
    for index in np.flatnonzero(mask.to_numpy()):
        row_detail = detail if isinstance(detail, str) else str(detail.iloc[index])
        report.skip(
            int(table["_line"].iloc[index]), reason, str(table["_text"].iloc[index]), row_detail
        )
    return ~mask


def _split_delimited(
    path: Path, delimiter: str, expected: list[str], report: ReadReport
) -> pd.DataFrame:
    """Read a delimited file with a header into string columns plus ``_line`` and ``_text``.

    Rows whose field count differs from the header's are skipped.
    """
    lines: list[int] = []
    rows: list[list[str]] = []
    with _open_text(path) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path} is empty; expected a header {delimiter.join(expected)}")
        header = [name.strip().lstrip("\ufeff") for name in header]
        if header[: len(expected)] != expected:
            raise DatasetError(
                f"{path} has the header {delimiter.join(header)!r}; expected "
                f"{delimiter.join(expected)!r}"
            )
        width = len(header)
        for fields in reader:
            if not fields:
                report.note(BLANK_LINES)
                continue
            report.rows_read += 1
            if len(fields) != width:
                report.skip(
                    reader.line_num,
                    WRONG_FIELD_COUNT,
                    delimiter.join(fields),
                    f"{len(fields)} fields, expected {width}",
                )
                continue
            lines.append(reader.line_num)
            rows.append(fields)
    table = pd.DataFrame(rows, columns=header, dtype=object)
    if table.empty:
        table = pd.DataFrame({name: pd.Series(dtype=object) for name in header})
    table["_line"] = pd.Series(lines, dtype="int64")
    table["_text"] = [delimiter.join(fields) for fields in rows]
    return table


def _note_order(report: ReadReport, timestamps: pd.Series) -> None:
    report.note(DUPLICATE_TIMESTAMPS, int(timestamps.duplicated(keep="first").sum()))
    report.note(OUT_OF_ORDER_ROWS, int((timestamps.diff() < pd.Timedelta(0)).sum()))


def _future_bound(now: pd.Timestamp | None) -> pd.Timestamp:
    """Return the latest timestamp a reader keeps: ``now`` (default: the clock) plus the skew."""
    moment = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    if moment.tzinfo is None:
        moment = moment.tz_localize("UTC")
    return moment.tz_convert("UTC") + MAX_CLOCK_SKEW


def _skip_future(
    report: ReadReport,
    table: pd.DataFrame,
    timestamps: pd.Series,
    keep: pd.Series,
    now: pd.Timestamp | None,
) -> pd.Series:
    """Skip the kept rows whose timestamp is after :func:`_future_bound`; return the new mask."""
    bound = _future_bound(now)
    future = (timestamps > bound) & keep
    detail = "timestamp " + timestamps.astype(str) + f" is after {bound.isoformat()}"
    return keep & _skip_rows(report, table, future, FUTURE_TIMESTAMP, detail)


def _apply_numeric(
    report: ReadReport, table: pd.DataFrame, columns: list[str]
) -> tuple[pd.DataFrame, pd.Series]:
    """Convert ``columns`` to floats and skip rows with unparsable or infinite cells."""
    keep = pd.Series(True, index=table.index)
    converted = {}
    for column in columns:
        numbers, unparsable, infinite = _parse_numbers(table[column])
        converted[column] = numbers
        detail = column + "=" + table[column].astype(str)
        keep &= _skip_rows(report, table, unparsable & keep, NON_NUMERIC_VALUE, detail)
        keep &= _skip_rows(report, table, infinite & keep, NON_FINITE_VALUE, detail)
    return pd.DataFrame(converted, index=table.index), keep


# ---------------------------------------------------------------------------
# Dataset readers


def read_nab_series(
    path: Path | str, now: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ReadReport]:
    """Read one NAB series (``timestamp,value``) into ``timestamp`` (UTC) and ``value``.

    Duplicate timestamps are kept and counted in the report's notes. Rows more than
    :data:`MAX_CLOCK_SKEW` after ``now`` (default: the clock) are skipped.
    """
    path = Path(path)
    report = ReadReport(source=str(path))
    table = _split_delimited(path, ",", ["timestamp", "value"], report)
    timestamps = parse_timestamps(table["timestamp"])
    keep = _skip_rows(
        report, table, timestamps.isna(), INVALID_TIMESTAMP, "timestamp=" + table["timestamp"]
    )
    keep = _skip_future(report, table, timestamps, keep, now)
    numbers, keep_numeric = _apply_numeric(report, table, ["value"])
    keep &= keep_numeric
    keep &= _skip_rows(
        report, table, numbers["value"].isna() & keep, MISSING_VALUE, "value is empty"
    )
    frame = pd.DataFrame({"timestamp": timestamps[keep], "value": numbers["value"][keep]})
    frame = frame.reset_index(drop=True)
    report.rows_kept = len(frame)
    _note_order(report, frame["timestamp"])
    return frame, report


def read_skab_file(
    path: Path | str, now: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ReadReport]:
    """Read one SKAB experiment (semicolon separated) with snake_case metric names.

    The frame has ``timestamp`` (UTC), the eight metrics of :data:`SKAB_METRICS` and the
    integer labels ``anomaly`` and ``changepoint`` (0 when the file has no labels, as
    ``anomaly-free.csv``). Empty metric cells stay NaN; rows with text that is not a
    number, and rows more than :data:`MAX_CLOCK_SKEW` after ``now`` (default: the clock),
    are skipped.
    """
    path = Path(path)
    report = ReadReport(source=str(path))
    expected = ["datetime", *SKAB_METRICS]
    table = _split_delimited(path, ";", expected, report)
    timestamps = parse_timestamps(table["datetime"])
    keep = _skip_rows(
        report, table, timestamps.isna(), INVALID_TIMESTAMP, "datetime=" + table["datetime"]
    )
    keep = _skip_future(report, table, timestamps, keep, now)
    numbers, keep_numeric = _apply_numeric(report, table, list(SKAB_METRICS))
    keep &= keep_numeric
    labels = {}
    for label in SKAB_LABELS:
        if label not in table.columns:
            labels[label] = pd.Series(0, index=table.index, dtype="int64")
            continue
        values, _, _ = _parse_numbers(table[label])
        invalid = ~values.isin([0.0, 1.0]) & keep
        keep &= _skip_rows(report, table, invalid, INVALID_LABEL, label + "=" + table[label])
        labels[label] = values.where(values.isin([0.0, 1.0]), 0).astype("int64")
    frame = pd.DataFrame({"timestamp": timestamps})
    for original, name in SKAB_METRICS.items():
        frame[name] = numbers[original]
    for label in SKAB_LABELS:
        frame[label] = labels[label]
    frame = frame[keep].reset_index(drop=True)
    report.rows_kept = len(frame)
    _note_order(report, frame["timestamp"])
    return frame, report


def read_intel_lab(
    path: Path | str, assume_tz: str = "UTC", now: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ReadReport]:
    """Read the Intel Berkeley Lab ``data.txt`` (or ``data.txt.gz``) into one row per reading.

    The frame has ``device_id`` (``intel-mote-{id}``), ``timestamp`` (UTC), ``epoch`` and
    the metrics ``temperature`` (C), ``humidity`` (%), ``light`` (lux) and ``voltage`` (V).
    Lines without exactly 8 fields and mote ids outside 1-54 are skipped with a reason.
    A temperature above 100 C or a negative humidity is skipped as a low-battery fault
    when the voltage is below 2.4 V, and as an implausible reading otherwise. Missing
    epochs (gaps in a mote's epoch sequence) are kept and counted in the notes.

    Args:
        path: The file, plain or gzip-compressed.
        assume_tz: The zone of the file's naive date and time.
        now: Rows more than :data:`MAX_CLOCK_SKEW` after it are skipped (default: the clock).
    """
    path = Path(path)
    report = ReadReport(source=str(path))
    lines: list[int] = []
    rows: list[list[str]] = []
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                report.note(BLANK_LINES)
                continue
            report.rows_read += 1
            if len(fields) != len(INTEL_FIELDS):
                report.skip(
                    line_number,
                    WRONG_FIELD_COUNT,
                    line.rstrip("\r\n"),
                    f"{len(fields)} fields, expected {len(INTEL_FIELDS)}",
                )
                continue
            lines.append(line_number)
            rows.append(fields)
    table = pd.DataFrame(rows, columns=list(INTEL_FIELDS), dtype=object)
    if table.empty:
        table = pd.DataFrame({name: pd.Series(dtype=object) for name in INTEL_FIELDS})
    table["_line"] = pd.Series(lines, dtype="int64")
    table["_text"] = [" ".join(fields) for fields in rows]

    timestamps = parse_timestamps(table["date"] + " " + table["time"], assume_tz=assume_tz)
    keep = _skip_rows(
        report,
        table,
        timestamps.isna(),
        INVALID_TIMESTAMP,
        "date time=" + table["date"] + " " + table["time"],
    )
    keep = _skip_future(report, table, timestamps, keep, now)
    numbers, keep_numeric = _apply_numeric(report, table, ["epoch", "moteid", *INTEL_METRICS])
    keep &= keep_numeric
    mote = numbers["moteid"]
    bad_mote = (mote.isna() | (mote < 1) | (mote > INTEL_MAX_MOTE_ID) | (mote % 1 != 0)) & keep
    keep &= _skip_rows(
        report,
        table,
        bad_mote,
        MOTE_ID_OUT_OF_RANGE,
        f"moteid not in 1-{INTEL_MAX_MOTE_ID}: " + table["moteid"],
    )
    implausible = (numbers["temperature"] > INTEL_MAX_TEMPERATURE_C) | (numbers["humidity"] < 0)
    low_voltage = numbers["voltage"] < INTEL_LOW_VOLTAGE
    reading = (
        "temperature="
        + table["temperature"]
        + " humidity="
        + table["humidity"]
        + " voltage="
        + table["voltage"]
    )
    keep &= _skip_rows(report, table, implausible & low_voltage & keep, LOW_BATTERY_FAULT, reading)
    keep &= _skip_rows(report, table, implausible & keep, IMPLAUSIBLE_READING, reading)

    frame = pd.DataFrame(
        {
            "device_id": "intel-mote-" + mote.fillna(0).astype("int64").astype(str),
            "timestamp": timestamps,
            "epoch": numbers["epoch"].fillna(-1).astype("int64"),
        }
    )
    for metric in INTEL_METRICS:
        frame[metric] = numbers[metric]
    frame = frame[keep].reset_index(drop=True)
    report.rows_kept = len(frame)
    report.note(MISSING_EPOCHS, _count_missing_epochs(frame))
    return frame, report


def _count_missing_epochs(frame: pd.DataFrame) -> int:
    """Count the epoch numbers absent between each mote's first and last epoch."""
    if frame.empty:
        return 0
    epochs = frame[frame["epoch"] >= 0].groupby("device_id")["epoch"]
    span = epochs.max() - epochs.min() + 1
    return int((span - epochs.nunique()).clip(lower=0).sum())


def read_telemetry_jsonl(
    path: Path | str, now: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ReadReport]:
    """Read telemetry messages, one JSON object per line, into a wide frame.

    The frame has ``device_id``, ``timestamp`` (UTC) and one float column per metric
    (NaN where a message lacks the metric), in the order of the file. Lines that are not
    JSON or break the message contract are skipped with the
    :class:`InvalidTelemetryError` reason as detail, and messages more than
    :data:`MAX_CLOCK_SKEW` after ``now`` (default: the clock) as being in the future.
    Repeated and out-of-order timestamps of a device are kept and counted in the notes.
    """
    path = Path(path)
    report = ReadReport(source=str(path))
    bound = _future_bound(now)
    # The message contract rejects readings more than a day after this clock.
    received_at = (bound - MAX_CLOCK_SKEW).to_pydatetime()
    messages: list[dict[str, Any]] = []
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                report.note(BLANK_LINES)
                continue
            report.rows_read += 1
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError as exc:
                report.skip(line_number, INVALID_TELEMETRY, text, f"line is not JSON: {exc}")
                continue
            try:
                message = validate_message(decoded, now=received_at)
            except TimestampOutOfRangeError as exc:
                if exc.in_future:
                    detail = (
                        f"timestamp {format_timestamp(exc.moment)} is after {bound.isoformat()}"
                    )
                    report.skip(line_number, FUTURE_TIMESTAMP, text, detail)
                else:
                    report.skip(line_number, INVALID_TELEMETRY, text, exc.reason)
                continue
            except InvalidTelemetryError as exc:
                report.skip(line_number, INVALID_TELEMETRY, text, exc.reason)
                continue
            if pd.Timestamp(message["timestamp"]) > bound:
                detail = f"timestamp {message['timestamp']} is after {bound.isoformat()}"
                report.skip(line_number, FUTURE_TIMESTAMP, text, detail)
                continue
            messages.append(message)
    frame = pd.DataFrame(messages)
    if frame.empty:
        frame = pd.DataFrame(
            {
                "device_id": pd.Series(dtype=object),
                "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            }
        )
    else:
        frame = frame.drop(columns=["schema_version"])
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True)
        for _, rows in frame.groupby("device_id", sort=False):
            _note_order(report, rows["timestamp"])
    report.rows_kept = len(frame)
    return frame, report


# ---------------------------------------------------------------------------
# Datasets as device series


def iter_devices(frame: pd.DataFrame, source: str) -> Iterator[DeviceSeries]:
    """Split a frame with a ``device_id`` column into one :class:`DeviceSeries` per device.

    Columns other than ``timestamp`` and the metrics (``epoch``) are left out.
    """
    metrics = [c for c in frame.columns if c not in ("device_id", "timestamp", "epoch")]
    for device_id, rows in frame.groupby("device_id", sort=True):
        yield DeviceSeries(
            device_id=str(device_id),
            frame=rows[["timestamp", *metrics]].reset_index(drop=True),
            labels=None,
            source=source,
        )


def _check_device_id(device_id: str, path: Path) -> str:
    if not DEVICE_ID_PATTERN.match(device_id):
        raise DatasetError(
            f"file {path} gives the device id {device_id!r}, which is invalid; rename the file "
            "to letters, digits, '.', '_' and '-'"
        )
    return device_id


def _dataset_groups(root: Path, dataset: str, groups: list[str] | None) -> list[Path]:
    if not root.is_dir():
        raise DatasetError(
            f"{dataset} data folder {root} not found. Pass --data-dir DIR to `saodf replay` or "
            f"set SAODF_DATA_DIR=DIR, where DIR contains {dataset}/. To download it into DIR, "
            f"run `saodf data fetch {dataset} --dest DIR`"
        )
    available = sorted(p.name for p in root.iterdir() if p.is_dir())
    if groups is None:
        return [root / name for name in available]
    unknown = [name for name in groups if name not in available]
    if unknown:
        raise DatasetError(
            f"{dataset} group(s) {', '.join(map(repr, unknown))} not found in {root}; "
            f"valid groups: {', '.join(available)}"
        )
    return [root / name for name in groups]


def _file_order(path: Path) -> tuple[int, int | str]:
    """Sort SKAB experiments numerically (2.csv before 10.csv)."""
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _iter_skab(
    data_dir: Path, groups: list[str] | None
) -> Iterator[tuple[DeviceSeries, ReadReport]]:
    for group_dir in _dataset_groups(data_dir / "skab" / "data", "skab", groups):
        for path in sorted(group_dir.glob("*.csv"), key=_file_order):
            if group_dir.name == path.stem:
                device_id = f"skab-{group_dir.name}"
            else:
                device_id = f"skab-{group_dir.name}-{path.stem}"
            _check_device_id(device_id, path)
            frame, report = read_skab_file(path)
            metrics = list(SKAB_METRICS.values())
            series = DeviceSeries(
                device_id=device_id,
                frame=frame[["timestamp", *metrics]],
                labels=frame[["timestamp", *SKAB_LABELS]],
                source=str(path),
            )
            yield series, report


def _load_nab_windows(path: Path) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    if not path.is_file():
        logger.warning("NAB labels file %s not found; series get no anomaly windows", path)
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"NAB labels file {path} is not valid JSON: {exc}") from None
    windows = {}
    for key, pairs in raw.items():
        windows[key] = [
            (pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")) for start, end in pairs
        ]
    return windows


def _iter_nab(
    data_dir: Path, groups: list[str] | None
) -> Iterator[tuple[DeviceSeries, ReadReport]]:
    root = data_dir / "nab"
    group_dirs = _dataset_groups(root / "data", "nab", groups)
    windows = _load_nab_windows(root / "labels" / "combined_windows.json")
    for group_dir in group_dirs:
        for path in sorted(group_dir.glob("*.csv")):
            device_id = _check_device_id(f"nab-{group_dir.name}-{path.stem}", path)
            frame, report = read_nab_series(path)
            labels = windows.get(f"{group_dir.name}/{path.name}")
            yield DeviceSeries(device_id, frame, labels, str(path)), report


def intel_lab_file(data_dir: Path | str) -> Path | None:
    """Return ``data_dir/intel/data.txt`` or ``data.txt.gz`` when one exists, else None."""
    folder = Path(data_dir) / "intel"
    for name in INTEL_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _iter_intel(
    data_dir: Path, groups: list[str] | None
) -> Iterator[tuple[DeviceSeries, ReadReport]]:
    path = intel_lab_file(data_dir)
    if path is None:
        raise DatasetError(
            f"intel data file not found: neither {data_dir / 'intel' / INTEL_FILES[0]} nor "
            f"{INTEL_FILES[1]} exists; download it with 'saodf data fetch intel'"
        )
    frame, report = read_intel_lab(path)
    report.log()
    devices = sorted(frame["device_id"].unique(), key=lambda name: int(name.rsplit("-", 1)[1]))
    if groups is not None:
        unknown = [name for name in groups if name not in devices]
        if unknown:
            raise DatasetError(
                f"intel device(s) {', '.join(map(repr, unknown))} not found in {path}; valid "
                f"devices: {', '.join(devices)}"
            )
        devices = [name for name in devices if name in groups]
    by_device = {series.device_id: series for series in iter_devices(frame, str(path))}
    for device_id in devices:
        yield by_device[device_id], report


def iter_dataset(
    dataset: str, data_dir: Path | str, groups: list[str] | None = None
) -> Iterator[tuple[DeviceSeries, ReadReport]]:
    """Yield each device of a dataset folder with the report of its file.

    ``"skab"`` reads ``data_dir/skab/data/<group>/<file>.csv`` as device
    ``skab-{group}-{stem}`` (``skab-anomaly-free`` for ``anomaly-free/anomaly-free.csv``).
    ``"nab"`` reads ``data_dir/nab/data/<group>/<series>.csv`` as device
    ``nab-{group}-{series}`` with its anomaly windows from ``labels/combined_windows.json``.
    ``"intel"`` reads ``data_dir/intel/data.txt`` (or ``data.txt.gz``, as ``saodf data
    fetch intel`` stores it) as devices ``intel-mote-{id}`` in mote order, every one with
    the report of the whole file; ``groups`` selects device ids.

    Raises:
        DatasetError: The dataset, a group or a device is unknown, or its folder or file
            is missing.
    """
    data_dir = Path(data_dir)
    if dataset == "skab":
        yield from _iter_skab(data_dir, groups)
    elif dataset == "nab":
        yield from _iter_nab(data_dir, groups)
    elif dataset == "intel":
        yield from _iter_intel(data_dir, groups)
    else:
        raise DatasetError(f"dataset {dataset!r} is unknown; valid datasets: {', '.join(DATASETS)}")


def to_messages(series: DeviceSeries, report: ReadReport | None = None) -> Iterator[dict[str, Any]]:
    """Yield one validated telemetry message per row of ``series``.

    NaN metrics are left out. A row without any metric left yields nothing and is
    counted under ``rows without metrics`` in ``report`` (and in a log line).
    """
    metrics = series.metrics
    values = series.frame[metrics].to_numpy(dtype="float64")
    timestamps = series.frame["timestamp"]
    empty_rows = 0
    for index, moment in enumerate(timestamps):
        message: dict[str, Any] = {
            "device_id": series.device_id,
            "timestamp": format_timestamp(moment.to_pydatetime()),
            "schema_version": SCHEMA_VERSION,
        }
        for name, value in zip(metrics, values[index], strict=True):
            if not math.isnan(value):
                message[name] = float(value)
        if len(message) == 3:
            empty_rows += 1
            continue
        yield validate_message(message)
    if empty_rows:
        logger.info(
            "Device %s: %d rows have no metric and were not emitted", series.device_id, empty_rows
        )
        if report is not None:
            report.note(ROWS_WITHOUT_METRICS, empty_rows)
