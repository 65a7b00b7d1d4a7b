"""Tests of the Great Expectations gates on raw and prepared batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from expectations.gate import (
    SUITES_DIR,
    available_suites,
    gate,
    load_suite_definition,
    validate_frame,
)
from saodf import lake
from saodf.errors import ConfigError, ValidationFailedError
from saodf.telemetry import DEVICE_ID_PATTERN, METRIC_NAME_PATTERN


def _raw_batch(rows: int = 20) -> pd.DataFrame:
    """Return a valid raw-zone batch read back through the lake's Arrow schema."""
    frame = pd.DataFrame(
        {
            "device_id": ["sensor-1"] * rows,
            "timestamp": pd.date_range("2025-04-20", periods=rows, freq="1min", tz="UTC"),
            "metric": ["temperature"] * rows,
            "value": np.linspace(20.0, 21.0, rows),
            "schema_version": [1] * rows,
            "kafka_topic": ["telemetry.raw"] * rows,
            "kafka_partition": [0] * rows,
            "kafka_offset": np.arange(rows),
        }
    )
    return pa.Table.from_pandas(frame, schema=lake.RAW_SCHEMA, preserve_index=False).to_pandas()


def _prepared_batch(rows: int = 20) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "device_id": ["sensor-1"] * rows,
            "group": ["1min"] * rows,
            "timestamp": pd.date_range("2025-04-20", periods=rows, freq="1min", tz="UTC"),
            "target": np.linspace(20.0, 21.0, rows),
            "is_outlier": [False] * rows,
            "is_imputed": [False] * rows,
        }
    )


def _failed_types(result) -> set[str]:
    return {failure.expectation_type for failure in result.failures}


def _quarantined(tmp_path: Path, suite: str, batch_id: str) -> Path:
    return tmp_path / "quarantine" / suite / batch_id


# ---------------------------------------------------------------------------
# Suites


def test_suites_available():
    assert available_suites() == ["deepar_dataset", "prepared_series", "raw_telemetry"]


def test_suite_patterns_match_contract():
    expectations = load_suite_definition("raw_telemetry")["expectations"]
    regexes = {
        e["kwargs"]["column"]: e["kwargs"]["regex"]
        for e in expectations
        if e["type"] == "expect_column_values_to_match_regex"
    }
    assert regexes["device_id"] == DEVICE_ID_PATTERN.pattern
    assert regexes["metric"] == METRIC_NAME_PATTERN.pattern


def test_suite_columns_match_schema():
    expectation = load_suite_definition("raw_telemetry")["expectations"][0]
    assert expectation["kwargs"]["column_set"] == lake.RAW_SCHEMA.names


def test_suite_unknown_raises():
    with pytest.raises(
        ConfigError, match="suite 'gold' not found .* available suites: deepar_dataset, prepared"
    ):
        load_suite_definition("gold")


def test_suite_files_are_json():
    for path in SUITES_DIR.glob("*.json"):
        assert json.loads(path.read_text())["name"] == path.stem


# ---------------------------------------------------------------------------
# Raw telemetry


def test_raw_good_batch_passes(tmp_path):
    result = gate(
        _raw_batch(), "raw_telemetry", "run-good", str(tmp_path / "quarantine"), build_docs=False
    )
    assert result.success
    assert result.failures == []
    assert result.statistics["rows"] == 20
    assert not (tmp_path / "quarantine").exists()


def test_raw_null_device_fails(tmp_path):
    batch = _raw_batch()
    batch.loc[3, "device_id"] = None
    with pytest.raises(
        ValidationFailedError, match="expect_column_values_to_not_be_null\\(device_id\\)"
    ):
        gate(batch, "raw_telemetry", "run-null", str(tmp_path / "quarantine"), build_docs=False)
    folder = _quarantined(tmp_path, "raw_telemetry", "run-null")
    assert (folder / "batch.parquet").is_file()
    assert len(pd.read_parquet(folder / "batch.parquet")) == 20
    reasons = json.loads((folder / "reasons.json").read_text())
    assert any("expect_column_values_to_not_be_null(device_id)" in r for r in reasons["reasons"])


def test_raw_duplicate_offsets_fail(tmp_path):
    batch = _raw_batch()
    # Row 5 repeats row 4's reading: same Kafka coordinates, device, timestamp and metric.
    for column in ("kafka_topic", "kafka_partition", "kafka_offset", "device_id", "timestamp"):
        batch.loc[5, column] = batch.loc[4, column]
    batch.loc[5, "metric"] = batch.loc[4, "metric"]
    with pytest.raises(ValidationFailedError, match="expect_compound_columns_to_be_unique"):
        gate(batch, "raw_telemetry", "run-dup", str(tmp_path / "quarantine"), build_docs=False)
    reasons = json.loads(
        (_quarantined(tmp_path, "raw_telemetry", "run-dup") / "reasons.json").read_text()
    )
    failure = reasons["failures"][0]
    assert failure["expectation_type"] == "expect_compound_columns_to_be_unique"
    assert failure["unexpected_count"] == 2
    assert failure["kwargs"]["column_list"][3:] == ["metric", "device_id", "timestamp"]


def test_raw_missing_timestamp_fails():
    batch = _raw_batch()
    batch.loc[2, "timestamp"] = pd.NaT
    result = validate_frame(batch, "raw_telemetry", "run-nat")
    assert not result.success
    assert "expect_column_values_to_not_be_null" in _failed_types(result)


def test_raw_epoch_timestamp_fails(tmp_path):
    batch = _raw_batch()
    batch.loc[2, "timestamp"] = pd.Timestamp("1970-01-01", tz="UTC")
    with pytest.raises(
        ValidationFailedError, match="expect_column_values_to_be_between\\(timestamp\\)"
    ):
        gate(batch, "raw_telemetry", "run-epoch", str(tmp_path / "quarantine"), build_docs=False)


def test_raw_string_timestamp_fails(tmp_path):
    batch = _raw_batch()
    batch["timestamp"] = batch["timestamp"].astype(str)
    batch.loc[1, "timestamp"] = "yesterday"
    with pytest.raises(
        ValidationFailedError, match="expect_column_values_to_be_of_type\\(timestamp\\)"
    ):
        gate(batch, "raw_telemetry", "run-text", str(tmp_path / "quarantine"), build_docs=False)
    frame = pd.read_parquet(_quarantined(tmp_path, "raw_telemetry", "run-text") / "batch.parquet")
    assert frame["timestamp"].iloc[1] == "yesterday"


def test_raw_bad_device_pattern():
    batch = _raw_batch()
    batch.loc[0, "device_id"] = "bad id!"
    result = validate_frame(batch, "raw_telemetry", "run-pattern")
    failure = next(f for f in result.failures if f.column == "device_id")
    assert failure.expectation_type == "expect_column_values_to_match_regex"
    assert failure.unexpected_examples == ["bad id!"]


def test_raw_negative_offset_fails():
    batch = _raw_batch()
    batch.loc[0, "kafka_offset"] = -1
    result = validate_frame(batch, "raw_telemetry", "run-negative")
    assert any(f.column == "kafka_offset" for f in result.failures)


def test_raw_missing_column_fails():
    result = validate_frame(
        _raw_batch().drop(columns=["kafka_offset"]), "raw_telemetry", "run-cols"
    )
    assert not result.success
    assert "expect_table_columns_to_match_set" in _failed_types(result)


def test_raw_real_lake_batch(tmp_path):
    lake_url = (tmp_path / "lake").as_uri()
    batch = _raw_batch()
    hour = batch["timestamp"].iloc[0].to_pydatetime()
    url = (
        lake.raw_partition_url(lake_url, "sensor-1", hour)
        + "/"
        + lake.raw_file_name("telemetry.raw", 0, 0, 19)
    )
    lake.write_parquet_atomic(pa.Table.from_pandas(batch, schema=lake.RAW_SCHEMA), url)
    assert validate_frame(lake.read_raw(lake_url), "raw_telemetry", "run-lake").success


def test_batch_id_invalid():
    with pytest.raises(ConfigError, match="batch_id '../x' is invalid"):
        validate_frame(_raw_batch(), "raw_telemetry", "../x")


# ---------------------------------------------------------------------------
# Prepared series


def test_prepared_good_batch_passes():
    assert validate_frame(_prepared_batch(), "prepared_series", "run-ok").success


def test_prepared_some_nan_passes():
    batch = _prepared_batch()
    batch.loc[[2, 3], "target"] = np.nan
    assert validate_frame(batch, "prepared_series", "run-gaps").success


def test_prepared_too_many_nan_fails():
    batch = _prepared_batch()
    batch.loc[0:5, "target"] = np.nan
    result = validate_frame(batch, "prepared_series", "run-nan")
    failure = next(f for f in result.failures if f.column == "target")
    assert failure.expectation_type == "expect_column_values_to_not_be_null"


def test_prepared_infinite_fails():
    batch = _prepared_batch()
    batch.loc[4, "target"] = np.inf
    result = validate_frame(batch, "prepared_series", "run-inf")
    assert "expect_column_values_to_be_between" in _failed_types(result)


def test_prepared_duplicate_timestamp_fails(tmp_path):
    batch = _prepared_batch()
    batch.loc[1, "timestamp"] = batch.loc[0, "timestamp"]
    with pytest.raises(
        ValidationFailedError, match="compound_columns_to_be_unique\\(device_id,timestamp\\)"
    ):
        gate(batch, "prepared_series", "run-dup", str(tmp_path / "quarantine"), build_docs=False)
    assert (_quarantined(tmp_path, "prepared_series", "run-dup") / "reasons.json").is_file()


def test_prepared_empty_fails():
    result = validate_frame(_prepared_batch().iloc[:0], "prepared_series", "run-empty")
    assert "expect_table_row_count_to_be_between" in _failed_types(result)


def test_module_import_is_light():
    code = "import sys, expectations.gate; print('great_expectations' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert completed.stdout.strip() == "False"
