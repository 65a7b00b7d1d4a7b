"""Bad raw batches through the ``raw_telemetry`` gate, its warnings and its Data Docs."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from etl.readers import iter_dataset
from expectations.gate import default_docs_url, gate, suite_parameters, validate_frame
from saodf import lake
from saodf.config import get_settings
from saodf.errors import ValidationFailedError
from tests.unit.test_gates import _raw_batch

SUITE = "raw_telemetry"


def _failures(batch: pd.DataFrame) -> list[str]:
    return validate_frame(batch, SUITE, "run-bad").reasons()


def _with_metric(metric: str, value: float) -> pd.DataFrame:
    batch = _raw_batch()
    batch.loc[0, "metric"] = metric
    batch.loc[0, "value"] = value
    return batch


def test_raw_empty_batch_fails():
    assert _failures(_raw_batch().iloc[:0]) == [
        "expect_table_row_count_to_be_between(table): observed 0"
    ]


def test_raw_future_timestamp_fails():
    batch = _raw_batch()
    batch.loc[3, "timestamp"] = pd.Timestamp("2099-01-01", tz="UTC")
    result = validate_frame(batch, SUITE, "run-future")
    failure = result.failures[0]
    assert len(result.failures) == 1
    assert failure.column == "timestamp"
    assert failure.unexpected_examples == ["2099-01-01T00:00:00+00:00"]


def test_raw_max_timestamp_parameter():
    now = datetime(2025, 4, 20, 12, tzinfo=timezone.utc)
    assert suite_parameters(now=now) == {"max_timestamp": "2025-04-20T13:00:00+00:00"}


def test_raw_infinite_value_fails():
    batch = _raw_batch()
    batch.loc[2, "value"] = np.inf
    assert _failures(batch) == [
        "expect_column_values_to_be_between(value): 1 unexpected (5.00%), e.g. [inf]",
        "expect_column_values_to_be_between(value where metric == 'temperature'): "
        "1 unexpected (5.00%), e.g. [inf]",
    ]


def test_raw_nan_value_fails():
    batch = _raw_batch()
    batch.loc[2, "value"] = np.nan
    assert _failures(batch) == [
        "expect_column_values_to_not_be_null(value): 1 unexpected (5.00%), e.g. [None]"
    ]


def test_raw_text_numbers_fail():
    batch = _raw_batch()
    batch["value"] = batch["value"].astype(str)
    result = validate_frame(batch, SUITE, "run-text")
    failure = next(f for f in result.failures if f.expectation_type.endswith("to_be_in_type_list"))
    assert failure.column == "value"
    assert failure.unexpected_count == 20


def test_raw_naive_timestamps_fail():
    batch = _raw_batch()
    batch["timestamp"] = batch["timestamp"].dt.tz_localize(None)
    result = validate_frame(batch, SUITE, "run-naive")
    failure = next(f for f in result.failures if f.expectation_type.endswith("to_be_of_type"))
    assert failure.column == "timestamp"
    assert failure.observed_value == "datetime64"


def test_raw_non_ascii_device_fails():
    batch = _raw_batch()
    batch.loc[0, "device_id"] = "sensör-1"
    result = validate_frame(batch, SUITE, "run-ascii")
    assert [f.expectation_type for f in result.failures] == ["expect_column_values_to_match_regex"]
    assert result.failures[0].unexpected_examples == ["sensör-1"]


@pytest.mark.parametrize(
    ("metric", "value", "percent"),
    [
        ("humidity", 120.0, "100.00"),
        ("humidity", -3.9, "100.00"),
        ("temperature", 5000.0, "5.00"),
        ("voltage", -1.0, "100.00"),
        ("vibration", -0.5, "100.00"),
    ],
)
def test_raw_implausible_reading_fails(metric, value, percent):
    # The share is of the rows of that metric: the batch has 19 temperature rows.
    assert _failures(_with_metric(metric, value)) == [
        f"expect_column_values_to_be_between(value where metric == '{metric}'): 1 unexpected "
        f"({percent}%), e.g. [{value}]"
    ]


def test_raw_plausible_reading_passes():
    assert validate_frame(_with_metric("humidity", 99.5), SUITE, "run-ok").success


def test_raw_duplicate_reading_warns():
    batch = _raw_batch()
    batch.loc[1, "timestamp"] = batch.loc[0, "timestamp"]
    result = validate_frame(batch, SUITE, "run-dup-reading")
    assert result.success
    assert result.failures == []
    assert [w.expectation_type for w in result.warnings] == ["expect_compound_columns_to_be_unique"]
    assert result.warnings[0].unexpected_count == 2
    assert result.warnings[0].severity == "warning"


def test_raw_warning_in_reasons_json(tmp_path):
    batch = _raw_batch()
    batch.loc[1, "timestamp"] = batch.loc[0, "timestamp"]
    batch.loc[2, "value"] = np.inf
    with pytest.raises(ValidationFailedError, match=r"\(2 expectations\)"):
        gate(batch, SUITE, "run-mixed", str(tmp_path / "quarantine"), build_docs=False)
    reasons = json.loads(
        (tmp_path / "quarantine" / SUITE / "run-mixed" / "reasons.json").read_text()
    )
    assert len(reasons["reasons"]) == 2
    assert reasons["warnings"][0].startswith("expect_compound_columns_to_be_unique(")
    assert reasons["files"] == ["batch.parquet"]


def test_raw_docs_built_on_pass(tmp_path):
    result = gate(_raw_batch(), SUITE, "run-docs", str(tmp_path / "lake" / "quarantine"))
    index = tmp_path / "lake" / "data_docs" / SUITE / "run-docs" / "index.html"
    assert result.docs_url == str(index)
    assert index.is_file()
    assert list((index.parent / "validations" / SUITE / "run-docs").rglob("*.html"))


def test_raw_docs_url_on_failure(tmp_path):
    batch = _raw_batch()
    batch.loc[0, "device_id"] = None
    docs_url = str(tmp_path / "docs")
    with pytest.raises(ValidationFailedError):
        gate(batch, SUITE, "run-docs-fail", str(tmp_path / "quarantine"), docs_url=docs_url)
    reasons = json.loads(
        (tmp_path / "quarantine" / SUITE / "run-docs-fail" / "reasons.json").read_text()
    )
    assert reasons["docs_url"] == f"{docs_url}/{SUITE}/run-docs-fail/index.html"
    assert (tmp_path / "docs" / SUITE / "run-docs-fail" / "index.html").is_file()


def test_default_docs_url():
    assert default_docs_url("s3://bucket/lake/quarantine/") == "s3://bucket/lake/data_docs"


def test_raw_shared_data_passes():
    data_dir = get_settings().data_dir
    if not (data_dir / "nab").is_dir() or not (data_dir / "skab").is_dir():
        pytest.skip(f"NAB and SKAB data not found under {data_dir}")
    frames = []
    for dataset, group in (("skab", "valve1"), ("nab", "realKnownCause")):
        for series, _ in iter_dataset(dataset, data_dir, [group]):
            long = series.frame.iloc[:500].melt(
                id_vars="timestamp", var_name="metric", value_name="reading"
            )
            long = long.dropna().rename(columns={"reading": "value"})
            frames.append(long.assign(device_id=series.device_id))
    batch = pd.concat(frames, ignore_index=True)
    batch["schema_version"] = 1
    batch["kafka_topic"] = "telemetry.raw"
    batch["kafka_partition"] = 0
    batch["kafka_offset"] = np.arange(len(batch))
    table = pa.Table.from_pandas(batch, schema=lake.RAW_SCHEMA, preserve_index=False)
    result = validate_frame(table.to_pandas(), SUITE, "run-shared")
    assert result.reasons() == []
    assert result.success
