"""Bad inputs through the readers, the per-device transforms and the preprocessing job.

Each bad input gives an error that names the value, or a skipped row or report entry
with a reason; none is dropped without a trace.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl import readers
from etl.glue_job import PrepareConfig, run
from etl.readers import iter_dataset, read_nab_series, read_telemetry_jsonl
from etl.transforms import detect_outliers, prepare_series
from saodf.errors import DatasetError
from tests.unit.test_glue_job import _readings, _write_raw

NOW = pd.Timestamp("2025-04-21 00:00", tz="UTC")
GOOD = {"device_id": "sensor-1", "timestamp": "2025-04-20T12:00:00Z", "temperature": 21.5}


def _jsonl(tmp_path: Path, *lines: str) -> tuple[pd.DataFrame, readers.ReadReport]:
    path = tmp_path / "telemetry.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return read_telemetry_jsonl(path, now=NOW)


def _message(**changes) -> str:
    message = {**GOOD, **changes}
    return json.dumps({k: v for k, v in message.items() if v is not None}, ensure_ascii=False)


# ---------------------------------------------------------------------------
# Telemetry JSON Lines reader


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ('{"device_id": "sensor-1", "timestamp": ', "line is not JSON: Expecting value"),
        (
            _message(device_id=None),
            "device_id None is invalid; use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit",
        ),
        (_message(temperature="21.5"), "metric temperature='21.5' is not a number"),
        (
            '{"device_id": "sensor-1", "timestamp": "2025-04-20T12:00:00Z", "temperature": NaN}',
            "metric temperature=nan is not finite; omit the metric for a missing reading",
        ),
        (
            '{"device_id": "sensor-1", "timestamp": "2025-04-20T12:00:00Z", '
            '"temperature": Infinity}',
            "metric temperature=inf is not finite; omit the metric for a missing reading",
        ),
        (
            _message(timestamp="2025-04-20T12:00:00"),
            "timestamp '2025-04-20T12:00:00' has no time zone; append 'Z' or an offset such as "
            "+02:00",
        ),
        (
            _message(device_id="sensör-1"),
            "device_id 'sensör-1' is invalid; use 1-128 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit",
        ),
    ],
    ids=["malformed", "no-device", "text-number", "nan", "infinity", "naive", "non-ascii"],
)
def test_jsonl_bad_line_reason(tmp_path, line, detail):
    frame, report = _jsonl(tmp_path, _message(), line)
    assert len(frame) == 1
    assert report.rows_read == 2
    assert report.summary() == {readers.INVALID_TELEMETRY: 1}
    skipped = report.skipped[0]
    assert skipped.line_number == 2
    assert skipped.text == line.strip()
    assert skipped.detail.startswith(detail)


def test_jsonl_future_skipped(tmp_path):
    line = _message(timestamp="2099-01-01T00:00:00Z")
    frame, report = _jsonl(tmp_path, _message(), line)
    assert len(frame) == 1
    assert report.summary() == {readers.FUTURE_TIMESTAMP: 1}
    assert report.skipped[0].detail == (
        "timestamp 2099-01-01T00:00:00Z is after 2025-04-21T01:00:00+00:00"
    )


def test_jsonl_within_skew_kept(tmp_path):
    frame, report = _jsonl(tmp_path, _message(timestamp="2025-04-21T00:59:00Z"))
    assert len(frame) == 1
    assert report.skipped == []


def test_jsonl_duplicates_counted(tmp_path):
    frame, report = _jsonl(
        tmp_path,
        _message(timestamp="2025-04-20T12:01:00Z"),
        _message(timestamp="2025-04-20T12:00:00Z"),
        _message(timestamp="2025-04-20T12:01:00Z", temperature=22.0),
        _message(device_id="sensor-2", timestamp="2025-04-20T11:00:00Z"),
    )
    assert frame["temperature"].tolist() == [21.5, 21.5, 22.0, 21.5]
    assert report.notes[readers.DUPLICATE_TIMESTAMPS] == 1
    assert report.notes[readers.OUT_OF_ORDER_ROWS] == 1


def test_jsonl_empty_file(tmp_path):
    frame, report = _jsonl(tmp_path)
    assert frame.empty
    assert list(frame.columns) == ["device_id", "timestamp"]
    assert report.rows_read == 0
    assert report.skipped == []


def test_nab_future_row_skipped(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("timestamp,value\n2014-01-01 00:00:00,1\n2099-01-01 00:00:00,2\n")
    frame, report = read_nab_series(path, now=NOW)
    assert frame["value"].tolist() == [1.0]
    assert [(row.line_number, row.reason) for row in report.skipped] == [
        (3, readers.FUTURE_TIMESTAMP)
    ]


# ---------------------------------------------------------------------------
# prepare_series


def _times(*texts: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(texts), utc=True))


def test_prepare_text_values_rejected():
    with pytest.raises(DatasetError, match="reading '21.5' at position 1 is a str, not a number"):
        prepare_series(
            _times("2025-04-20 12:00", "2025-04-20 12:01"),
            pd.Series([20.0, "21.5"], dtype=object),
            freq="1min",
        )


def test_prepare_object_floats_accepted():
    prepared = prepare_series(
        _times("2025-04-20 12:00", "2025-04-20 12:01"),
        pd.Series([20.0, None], dtype=object),
        freq="1min",
    )
    assert prepared.frame["target"].iloc[0] == 20.0
    assert prepared.stats.non_finite == 1


def test_prepare_nan_and_inf_counted():
    prepared = prepare_series(
        _times("2025-04-20 12:00", "2025-04-20 12:01", "2025-04-20 12:02", "2025-04-20 12:03"),
        pd.Series([10.0, np.inf, np.nan, 13.0]),
        freq="1min",
    )
    assert prepared.stats.non_finite == 2
    assert prepared.frame["target"].tolist() == [10.0, 11.0, 12.0, 13.0]
    assert prepared.frame["is_imputed"].tolist() == [False, True, True, False]


def test_prepare_nan_duplicate_not_kept():
    prepared = prepare_series(
        _times("2025-04-20 12:00", "2025-04-20 12:00", "2025-04-20 12:01"),
        pd.Series([10.0, np.nan, 11.0]),
        freq="1min",
    )
    assert prepared.frame["target"].tolist() == [10.0, 11.0]
    assert prepared.stats.duplicates == 0


def test_prepare_out_of_order_sorted():
    prepared = prepare_series(
        _times("2025-04-20 12:02", "2025-04-20 12:00", "2025-04-20 12:01"),
        pd.Series([3.0, 1.0, 2.0]),
        freq="1min",
    )
    assert prepared.frame["target"].tolist() == [1.0, 2.0, 3.0]
    assert prepared.stats.out_of_order == 1


def test_prepare_naive_zone_assumed():
    prepared = prepare_series(
        pd.Series(pd.to_datetime(["2025-04-20 12:00", "2025-04-20 12:01"])),
        pd.Series([1.0, 2.0]),
        freq="1min",
        assume_tz="Europe/Berlin",
    )
    assert prepared.frame["timestamp"].iloc[0] == pd.Timestamp("2025-04-20 10:00", tz="UTC")


def test_prepare_future_dropped():
    prepared = prepare_series(
        _times("2025-04-20 12:00", "2025-04-20 12:01", "2099-01-01 00:00"),
        pd.Series([1.0, 2.0, 3.0]),
        freq="1min",
        not_after=NOW,
    )
    assert prepared.stats.future == 1
    assert prepared.frame["target"].tolist() == [1.0, 2.0]


def test_prepare_far_timestamp_max_steps():
    with pytest.raises(
        DatasetError,
        match=r"2025-04-20T12:00:00\+00:00 to 2099-01-01T00:00:00\+00:00 make 38762641 steps of "
        "1min, above max_steps=1000000",
    ):
        prepare_series(
            _times("2025-04-20 12:00", "2025-04-20 12:01", "2099-01-01 00:00"),
            pd.Series([1.0, 2.0, 3.0]),
            freq="1min",
        )


def test_prepare_one_point_auto_freq():
    with pytest.raises(DatasetError, match="cannot infer a frequency from 1 distinct timestamp"):
        prepare_series(_times("2025-04-20 12:00"), pd.Series([1.0]), freq="auto")


def test_prepare_one_point_fixed_freq():
    prepared = prepare_series(_times("2025-04-20 12:00"), pd.Series([1.0]), freq="5min")
    assert prepared.frame["target"].tolist() == [1.0]
    assert prepared.stats.outliers == 0
    assert prepared.stats.constant


def test_prepare_constant_series():
    prepared = prepare_series(
        pd.Series(pd.date_range("2025-04-20", periods=30, freq="1min", tz="UTC")),
        pd.Series([7.0] * 30),
        freq="1min",
        outlier_method="mad",
    )
    assert prepared.frame["target"].tolist() == [7.0] * 30
    assert not prepared.frame["is_outlier"].any()
    assert prepared.stats.constant


def test_prepare_empty_series():
    with pytest.raises(DatasetError, match=r"no finite reading .* \(0 rows in"):
        prepare_series(pd.Series([], dtype="datetime64[ns, UTC]"), pd.Series([]), freq="1min")


def test_prepare_all_nan_series():
    with pytest.raises(DatasetError, match=r"\(2 rows in, 2 NaN or infinite, 0 after None\)"):
        prepare_series(_times("2025-04-20", "2025-04-21"), pd.Series([np.nan, np.nan]), "1h")


def test_mad_zero_flags_spike():
    # MAD is 0 with 20 equal values; MeanAD is 55 / 21, so 105 scores 16.75.
    values = pd.Series([50.0] * 20 + [105.0])
    mask = detect_outliers(values, method="mad")
    assert mask.tolist() == [False] * 20 + [True]


# ---------------------------------------------------------------------------
# Preprocessing job


def _lake(tmp_path: Path, frame: pd.DataFrame) -> str:
    lake_url = (tmp_path / "lake").as_uri()
    _write_raw(lake_url, frame)
    return lake_url


def _report(tmp_path: Path) -> dict[str, dict]:
    devices = json.loads((tmp_path / "out" / "report.json").read_text())["devices"]
    return {entry["device_id"]: entry for entry in devices}


def test_job_future_reading_counted(tmp_path):
    readings = _readings("sensor-a", "value", list(50 + np.sin(np.arange(80))))
    future = readings.iloc[[0]].assign(timestamp=pd.Timestamp("2099-01-01", tz="UTC"))
    lake_url = _lake(tmp_path, pd.concat([readings, future], ignore_index=True))
    summary = run(PrepareConfig(raw_url=lake_url, output_url=str(tmp_path / "out")))
    entry = _report(tmp_path)["sensor-a"]
    assert summary["groups"] == {"5min": 1}
    assert entry["future"] == 1
    assert entry["rows_in"] == 81


def test_job_one_point_device_skipped(tmp_path):
    frame = pd.concat(
        [
            _readings("sensor-a", "value", list(50 + np.sin(np.arange(80)))),
            _readings("sensor-one", "value", [1.0]),
        ],
        ignore_index=True,
    )
    run(PrepareConfig(raw_url=_lake(tmp_path, frame), output_url=str(tmp_path / "out")))
    assert _report(tmp_path)["sensor-one"]["skipped"] == (
        "cannot infer a frequency from 1 distinct timestamp(s); give at least two, or set the "
        "frequency explicitly"
    )


def test_job_constant_device_reported(tmp_path):
    lake_url = _lake(tmp_path, _readings("sensor-flat", "value", [45.0] * 80))
    run(PrepareConfig(raw_url=lake_url, output_url=str(tmp_path / "out")))
    entry = _report(tmp_path)["sensor-flat"]
    assert entry["constant"] is True
    assert entry["outliers"] == 0
    assert entry["skipped"] is None


def test_job_empty_lake_raises(tmp_path):
    with pytest.raises(DatasetError, match=r"could be prepared \(no raw rows\)"):
        run(PrepareConfig(raw_url=(tmp_path / "lake").as_uri(), output_url=str(tmp_path / "out")))
    assert json.loads((tmp_path / "out" / "report.json").read_text())["devices"] == []


# ---------------------------------------------------------------------------
# Intel Berkeley Lab through iter_dataset

INTEL_TEXT = (
    "2004-02-28 00:58:46.002832 2 1 19.9884 37.0933 45.08 2.69964\n"
    "2004-02-28 00:59:16.02785 3 1 19.3024 38.4629 45.08 2.68742\n"
    "2004-02-28 01:00:16 3 11 19.1 38.0 45.08 2.6\n"
    "2004-02-28 01:01:16 7 1\n"
)


def _intel_dir(tmp_path: Path) -> Path:
    (tmp_path / "intel").mkdir()
    with gzip.open(tmp_path / "intel" / "data.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write(INTEL_TEXT)
    return tmp_path


def test_intel_dataset_devices(tmp_path):
    found = list(iter_dataset("intel", _intel_dir(tmp_path)))
    assert [series.device_id for series, _ in found] == ["intel-mote-1", "intel-mote-11"]
    assert found[0][0].metrics == ["temperature", "humidity", "light", "voltage"]
    assert found[0][0].frame["temperature"].tolist() == [19.9884, 19.3024]
    assert found[0][1].summary() == {readers.WRONG_FIELD_COUNT: 1}


def test_intel_dataset_device_filter(tmp_path):
    found = list(iter_dataset("intel", _intel_dir(tmp_path), ["intel-mote-11"]))
    assert [series.device_id for series, _ in found] == ["intel-mote-11"]


def test_intel_dataset_unknown_device(tmp_path):
    with pytest.raises(DatasetError, match="'intel-mote-99' not found .* intel-mote-1, intel-mo"):
        list(iter_dataset("intel", _intel_dir(tmp_path), ["intel-mote-99"]))


def test_intel_dataset_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="download it with 'saodf data fetch intel'"):
        list(iter_dataset("intel", tmp_path))


def test_intel_plain_file_found(tmp_path):
    (tmp_path / "intel").mkdir()
    (tmp_path / "intel" / "data.txt").write_text(INTEL_TEXT)
    assert readers.intel_lab_file(tmp_path) == tmp_path / "intel" / "data.txt"
    assert not math.isnan(next(iter_dataset("intel", tmp_path))[0].frame["light"].iloc[0])
