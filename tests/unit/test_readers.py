"""Tests of the dataset readers on small files and on the NAB and SKAB data in place."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from etl import readers
from etl.readers import (
    DeviceSeries,
    ReadReport,
    iter_dataset,
    read_intel_lab,
    read_nab_series,
    read_skab_file,
    read_telemetry_jsonl,
    to_messages,
)
from saodf.config import get_settings
from saodf.errors import DatasetError
from saodf.telemetry import DEVICE_ID_PATTERN

SKAB_HEADER = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
    "Thermocouple;Voltage;Volume Flow RateRMS"
)


def _data_dir() -> Path:
    path = get_settings().data_dir
    if not (path / "nab").is_dir() or not (path / "skab").is_dir():
        pytest.skip(f"NAB and SKAB data not found under {path}")
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _skab_row(stamp: str, *cells: str) -> str:
    return ";".join([stamp, *cells])


# ---------------------------------------------------------------------------
# ReadReport


def test_report_summary_counts_reasons():
    report = ReadReport(source="x.csv")
    report.skip(2, readers.INVALID_TIMESTAMP, "a,1")
    report.skip(3, readers.INVALID_TIMESTAMP, "b,1")
    report.skip(4, readers.NON_NUMERIC_VALUE, "2024-01-01 00:00:00,x")
    assert report.summary() == {readers.INVALID_TIMESTAMP: 2, readers.NON_NUMERIC_VALUE: 1}


def test_report_skipped_unpacks_line_and_reason():
    report = ReadReport(source="x.csv")
    report.skip(7, readers.WRONG_FIELD_COUNT, "a,b,c")
    line_number, reason, text, _ = report.skipped[0]
    assert line_number == 7
    assert reason == readers.WRONG_FIELD_COUNT
    assert text == "a,b,c"


# ---------------------------------------------------------------------------
# NAB


def test_nab_good_rows(tmp_path):
    path = _write(
        tmp_path / "s.csv",
        "timestamp,value\n2014-01-01 00:00:00,1.5\n2014-01-01 00:05:00,2\n",
    )
    frame, report = read_nab_series(path)
    assert list(frame.columns) == ["timestamp", "value"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2014-01-01 00:00:00", tz="UTC")
    assert frame["value"].tolist() == [1.5, 2.0]
    assert report.rows_read == 2
    assert report.rows_kept == 2
    assert report.skipped == []


def test_nab_malformed_rows_skipped(tmp_path):
    path = _write(
        tmp_path / "s.csv",
        "timestamp,value\n"
        "2014-01-01 00:00:00,1\n"
        "not a time,2\n"
        "2014-01-01 00:10:00,abc\n"
        "2014-01-01 00:15:00,3,extra\n"
        "2014-01-01 00:20:00,\n"
        "2014-01-01 00:25:00,inf\n"
        "2014-01-01 00:30:00,4\n",
    )
    frame, report = read_nab_series(path)
    assert frame["value"].tolist() == [1.0, 4.0]
    assert report.rows_read == 7
    assert report.rows_kept == 2
    by_line = {row.line_number: row.reason for row in report.skipped}
    assert by_line[3] == readers.INVALID_TIMESTAMP
    assert by_line[4] == readers.NON_NUMERIC_VALUE
    assert by_line[5] == readers.WRONG_FIELD_COUNT
    assert by_line[6] == readers.MISSING_VALUE
    assert by_line[7] == readers.NON_FINITE_VALUE


def test_nab_skipped_keeps_raw_text(tmp_path):
    path = _write(tmp_path / "s.csv", "timestamp,value\n2014-01-01 00:00:00,abc\n")
    _, report = read_nab_series(path)
    assert report.skipped[0].text == "2014-01-01 00:00:00,abc"
    assert "value=abc" in report.skipped[0].detail


def test_nab_duplicates_kept_and_counted(tmp_path):
    path = _write(
        tmp_path / "s.csv",
        "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:00:00,2\n2014-01-01 00:05:00,3\n",
    )
    frame, report = read_nab_series(path)
    assert len(frame) == 3
    assert report.notes[readers.DUPLICATE_TIMESTAMPS] == 1


def test_nab_out_of_order_counted(tmp_path):
    path = _write(
        tmp_path / "s.csv",
        "timestamp,value\n2014-01-01 00:05:00,1\n2014-01-01 00:00:00,2\n",
    )
    _, report = read_nab_series(path)
    assert report.notes[readers.OUT_OF_ORDER_ROWS] == 1


def test_nab_offset_timestamp_converted(tmp_path):
    path = _write(
        tmp_path / "s.csv",
        "timestamp,value\n2014-01-01T01:00:00+01:00,1\n2014-01-01 00:05:00,2\n",
    )
    frame, _ = read_nab_series(path)
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2014-01-01 00:00:00", tz="UTC")
    assert frame["timestamp"].iloc[1] == pd.Timestamp("2014-01-01 00:05:00", tz="UTC")


def test_nab_wrong_header_raises(tmp_path):
    path = _write(tmp_path / "s.csv", "time,reading\n2014-01-01 00:00:00,1\n")
    with pytest.raises(DatasetError, match="expected 'timestamp,value'"):
        read_nab_series(path)


def test_nab_missing_file_raises(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_nab_series(tmp_path / "absent.csv")


def test_nab_real_duplicate_hour():
    path = _data_dir() / "nab/data/realKnownCause/machine_temperature_system_failure.csv"
    frame, report = read_nab_series(path)
    assert len(frame) == 22695
    assert report.notes[readers.DUPLICATE_TIMESTAMPS] == 12
    assert report.skipped == []


# ---------------------------------------------------------------------------
# SKAB


def test_skab_columns_renamed(tmp_path):
    path = _write(
        tmp_path / "0.csv",
        SKAB_HEADER
        + ";anomaly;changepoint\n"
        + _skab_row("2020-03-09 10:14:33", "1", "2", "3", "4", "5", "6", "7", "8", "1.0", "0.0")
        + "\n",
    )
    frame, _ = read_skab_file(path)
    expected = ["timestamp", *readers.SKAB_METRICS.values(), "anomaly", "changepoint"]
    assert list(frame.columns) == expected
    assert frame["volume_flow_rate_rms"].iloc[0] == 8.0
    assert frame["anomaly"].iloc[0] == 1
    assert str(frame["anomaly"].dtype) == "int64"


def test_skab_labels_absent_are_zero(tmp_path):
    path = _write(
        tmp_path / "anomaly-free.csv",
        SKAB_HEADER + "\n" + _skab_row("2020-02-08 13:30:47", *["1"] * 8) + "\n",
    )
    frame, _ = read_skab_file(path)
    assert frame["anomaly"].tolist() == [0]
    assert frame["changepoint"].tolist() == [0]


def test_skab_bad_rows_skipped(tmp_path):
    path = _write(
        tmp_path / "1.csv",
        SKAB_HEADER
        + ";anomaly;changepoint\n"
        + _skab_row("2020-03-09 10:14:33", *["1"] * 8, "0", "0")
        + "\n"
        + _skab_row("yesterday", *["1"] * 8, "0", "0")
        + "\n"
        + _skab_row("2020-03-09 10:14:35", "x", *["1"] * 7, "0", "0")
        + "\n"
        + _skab_row("2020-03-09 10:14:36", *["1"] * 8, "2", "0")
        + "\n"
        + "2020-03-09 10:14:37;1;2\n",
    )
    frame, report = read_skab_file(path)
    assert len(frame) == 1
    by_line = {row.line_number: row.reason for row in report.skipped}
    assert by_line == {
        3: readers.INVALID_TIMESTAMP,
        4: readers.NON_NUMERIC_VALUE,
        5: readers.INVALID_LABEL,
        6: readers.WRONG_FIELD_COUNT,
    }


def test_skab_empty_cell_kept_as_nan(tmp_path):
    path = _write(
        tmp_path / "2.csv",
        SKAB_HEADER + "\n" + _skab_row("2020-03-09 10:14:33", "", *["1"] * 7) + "\n",
    )
    frame, report = read_skab_file(path)
    assert math.isnan(frame["accelerometer1_rms"].iloc[0])
    assert report.skipped == []


def test_skab_real_file_labels():
    frame, report = read_skab_file(_data_dir() / "skab/data/valve1/0.csv")
    assert report.rows_kept == len(frame)
    assert set(frame["anomaly"].unique()) == {0, 1}
    assert set(frame["changepoint"].unique()) == {0, 1}


# ---------------------------------------------------------------------------
# Intel Berkeley Lab


INTEL_LINES = [
    "2004-02-28 00:58:46.002832 2 1 19.9884 37.0933 45.08 2.69964",
    "2004-02-28 00:59:16.02785 3 1 19.3024 38.4629 45.08 2.68742",
    "2004-02-28 01:00:16.02 6 1 19.1652 38.8039 45.08 2.68742",
    "2004-02-28 01:01:16 7 1 19.175 38.8379",
    "2004-03-10 10:00:00 9000 1 122.153 -3.91901 11.04 2.03397",
    "2004-03-10 10:00:01 9001 2 122.153 -3.91901 11.04 2.6",
    "2004-02-28 01:02:16 8 58 19.1 38.0 45.08 2.6",
    "2004-02-28 01:03:16 9 2 19.2 38.1 45.08 2.6",
]


def test_intel_faults_reported(tmp_path):
    path = _write(tmp_path / "data.txt", "\n".join(INTEL_LINES) + "\n")
    frame, report = read_intel_lab(path)
    by_line = {row.line_number: row.reason for row in report.skipped}
    assert by_line == {
        4: readers.WRONG_FIELD_COUNT,
        5: readers.LOW_BATTERY_FAULT,
        6: readers.IMPLAUSIBLE_READING,
        7: readers.MOTE_ID_OUT_OF_RANGE,
    }
    assert report.rows_read == 8
    assert report.rows_kept == 4
    assert len(frame) == 4


def test_intel_missing_epochs_kept(tmp_path):
    path = _write(tmp_path / "data.txt", "\n".join(INTEL_LINES) + "\n")
    frame, report = read_intel_lab(path)
    # Mote 1 keeps epochs 2, 3 and 6, so 4 and 5 are missing.
    assert report.notes[readers.MISSING_EPOCHS] == 2
    assert frame[frame["device_id"] == "intel-mote-1"]["epoch"].tolist() == [2, 3, 6]


def test_intel_device_ids(tmp_path):
    path = _write(tmp_path / "data.txt", "\n".join(INTEL_LINES) + "\n")
    frame, _ = read_intel_lab(path)
    assert sorted(frame["device_id"].unique()) == ["intel-mote-1", "intel-mote-2"]


def test_intel_gzip_read(tmp_path):
    path = tmp_path / "data.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(INTEL_LINES[:2]) + "\n")
    frame, _ = read_intel_lab(path)
    assert frame["temperature"].tolist() == [19.9884, 19.3024]


def test_intel_assume_tz(tmp_path):
    path = _write(tmp_path / "data.txt", INTEL_LINES[0] + "\n")
    frame, _ = read_intel_lab(path, assume_tz="America/Los_Angeles")
    expected = pd.Timestamp("2004-02-28 08:58:46.002832", tz="UTC")
    assert frame["timestamp"].iloc[0] == expected


def test_intel_series_split(tmp_path):
    path = _write(tmp_path / "data.txt", "\n".join(INTEL_LINES) + "\n")
    frame, _ = read_intel_lab(path)
    series = list(readers.iter_devices(frame, str(path)))
    assert [s.device_id for s in series] == ["intel-mote-1", "intel-mote-2"]
    assert series[0].metrics == list(readers.INTEL_METRICS)


# ---------------------------------------------------------------------------
# Telemetry JSON Lines


def test_jsonl_invalid_lines_reported(tmp_path):
    lines = [
        json.dumps(
            {"device_id": "sensor-1", "timestamp": "2025-04-20T12:34:00Z", "temperature": 1}
        ),
        "{not json",
        json.dumps({"device_id": "sensor-1", "timestamp": "2025-04-20T12:35:00", "temperature": 2}),
        json.dumps({"device_id": "sensor-2", "timestamp": "2025-04-20T12:35:00Z", "vibration": 3}),
    ]
    path = _write(tmp_path / "t.jsonl", "\n".join(lines) + "\n")
    frame, report = read_telemetry_jsonl(path)
    assert frame["device_id"].tolist() == ["sensor-1", "sensor-2"]
    assert report.summary() == {readers.INVALID_TELEMETRY: 2}
    assert "has no time zone" in report.skipped[1].detail
    assert report.skipped[1].line_number == 3


def test_jsonl_wide_frame(tmp_path):
    lines = [
        json.dumps(
            {"device_id": "sensor-1", "timestamp": "2025-04-20T12:34:00Z", "temperature": 1}
        ),
        json.dumps({"device_id": "sensor-2", "timestamp": "2025-04-20T12:35:00Z", "vibration": 3}),
    ]
    path = _write(tmp_path / "t.jsonl", "\n".join(lines) + "\n")
    frame, _ = read_telemetry_jsonl(path)
    assert set(frame.columns) == {"device_id", "timestamp", "temperature", "vibration"}
    assert math.isnan(frame["vibration"].iloc[0])
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"


# ---------------------------------------------------------------------------
# iter_dataset


def test_dataset_unknown_raises(tmp_path):
    with pytest.raises(DatasetError, match="dataset 'kdd' is unknown; valid datasets: nab, skab"):
        list(iter_dataset("kdd", tmp_path))


def test_dataset_missing_folder_raises(tmp_path):
    with pytest.raises(DatasetError, match=r"skab data folder .*skab/data not found"):
        list(iter_dataset("skab", tmp_path))


def test_dataset_unknown_group_raises():
    with pytest.raises(DatasetError, match="'valve9' not found .* valid groups: anomaly-free"):
        list(iter_dataset("skab", _data_dir(), ["valve9"]))


def test_dataset_skab_device_ids():
    ids = [series.device_id for series, _ in iter_dataset("skab", _data_dir())]
    assert ids[0] == "skab-anomaly-free"
    assert ids[1:4] == ["skab-valve1-0", "skab-valve1-1", "skab-valve1-2"]
    assert "skab-valve1-15" in ids
    assert all(DEVICE_ID_PATTERN.match(device_id) for device_id in ids)


def test_dataset_skab_labels_separate():
    series, _ = next(iter_dataset("skab", _data_dir(), ["valve1"]))
    assert "anomaly" not in series.metrics
    assert list(series.labels.columns) == ["timestamp", "anomaly", "changepoint"]


def test_dataset_nab_windows():
    found = {
        series.device_id: series
        for series, _ in iter_dataset("nab", _data_dir(), ["realKnownCause"])
    }
    series = found["nab-realKnownCause-machine_temperature_system_failure"]
    assert series.metrics == ["value"]
    assert len(series.labels) == 4
    assert series.labels[0][0] == pd.Timestamp("2013-12-10 06:25:00", tz="UTC")


def test_dataset_nab_ids_valid():
    ids = [series.device_id for series, _ in iter_dataset("nab", _data_dir())]
    assert len(ids) > 20
    assert all(DEVICE_ID_PATTERN.match(device_id) for device_id in ids)


# ---------------------------------------------------------------------------
# to_messages


def _series() -> DeviceSeries:
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(
                ["2020-03-09 10:14:33", "2020-03-09 10:14:34", "2020-03-09 10:14:35"], utc=True
            ),
            "current": [1.0, float("nan"), float("nan")],
            "pressure": [2.0, 3.0, float("nan")],
        }
    )
    return DeviceSeries("skab-valve1-0", frame, None, "test")


def test_messages_follow_contract():
    messages = list(to_messages(_series()))
    assert messages[0] == {
        "device_id": "skab-valve1-0",
        "timestamp": "2020-03-09T10:14:33Z",
        "schema_version": 1,
        "current": 1.0,
        "pressure": 2.0,
    }


def test_messages_omit_nan_metrics():
    messages = list(to_messages(_series()))
    assert "current" not in messages[1]


def test_messages_empty_row_counted():
    report = ReadReport(source="test")
    messages = list(to_messages(_series(), report))
    assert len(messages) == 2
    assert report.notes[readers.ROWS_WITHOUT_METRICS] == 1
