"""Tests of the ``deepar_dataset`` gate on the preprocessing job's JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from etl.glue_job import PrepareConfig, run
from expectations.deepar_dataset import (
    COLUMNS,
    deepar_dataset_frame,
    gate_deepar_dataset,
    max_category,
)
from expectations.gate import validate_frame
from saodf.errors import DatasetError, ValidationFailedError
from tests.unit.test_glue_job import _readings, _write_raw

SUITE = "deepar_dataset"


@pytest.fixture()
def prepared(tmp_path) -> Path:
    """Return a job output with a 5-minute and a 1-minute device."""
    lake_url = (tmp_path / "lake").as_uri()
    frame = pd.concat(
        [
            _readings("sensor-a", "value", list(50 + 5 * np.sin(np.arange(120) / 10))),
            _readings("sensor-b", "value", list(np.arange(100) * 0.1), "1min"),
        ],
        ignore_index=True,
    )
    _write_raw(lake_url, frame)
    run(PrepareConfig(raw_url=lake_url, output_url=str(tmp_path / "out")))
    return tmp_path / "out"


def _rewrite(path: Path, change) -> None:
    """Apply ``change`` to the first record of a JSON Lines file."""
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    change(record)
    lines[0] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


def _reasons(frame: pd.DataFrame, max_cat: int = 1) -> list[str]:
    return validate_frame(frame, SUITE, "run-x", {"max_cat": max_cat}).reasons()


def test_frame_one_row_per_series(prepared):
    frame = deepar_dataset_frame(str(prepared))
    assert list(frame.columns) == COLUMNS
    assert frame["device_id"].tolist() == ["sensor-b", "sensor-a"]
    row = frame.iloc[1].to_dict()
    assert row["group"] == "5min"
    assert row["start"] == "2025-04-20 00:00:00"
    assert row["start_offset_seconds"] == 0.0
    assert row["train_length"] == 108
    assert row["target_length"] == 120
    assert row["holdout_length"] == 12
    assert row["min_length"] == 60
    assert row["train_is_prefix"]
    assert row["cat"] == 0
    assert row["dynamic_feat_count"] == 2
    assert row["dynamic_feat_mismatches"] == 0
    assert row["nan_share"] == 0.0


def test_gate_passes_job_output(prepared, tmp_path):
    result = gate_deepar_dataset(str(prepared), "run-ok", str(tmp_path / "q"), build_docs=False)
    assert result.success
    assert result.failures == []


def test_max_category_from_mapping(prepared):
    assert max_category(str(prepared)) == 1


def test_misaligned_start_fails(prepared):
    _rewrite(
        prepared / "groups/5min/test/data.jsonl", lambda r: r.update(start="2025-04-20 00:00:30")
    )
    reasons = _reasons(deepar_dataset_frame(str(prepared)))
    assert reasons[0] == (
        "expect_column_values_to_be_between(start_offset_seconds): 1 unexpected (50.00%), "
        "e.g. [30.0]"
    )


def test_short_train_fails(prepared):
    frame = deepar_dataset_frame(str(prepared))
    frame.loc[0, "train_length"] = 59
    assert _reasons(frame) == [
        "expect_column_pair_values_a_to_be_greater_than_b(train_length,min_length): "
        "1 unexpected (50.00%), e.g. [[59, 60]]"
    ]


def test_holdout_mismatch_fails(prepared):
    frame = deepar_dataset_frame(str(prepared))
    frame.loc[1, "holdout_length"] = 11
    assert _reasons(frame) == [
        "expect_column_pair_values_to_be_equal(holdout_length,prediction_length): "
        "1 unexpected (50.00%), e.g. [[11, 12]]"
    ]


def test_cat_out_of_range_fails(prepared):
    assert _reasons(deepar_dataset_frame(str(prepared)), max_cat=0) == [
        "expect_column_values_to_be_between(cat): 1 unexpected (50.00%), e.g. [1]"
    ]


def test_dynamic_feat_length_fails(prepared):
    _rewrite(
        prepared / "groups/1min/train/data.jsonl",
        lambda r: r["dynamic_feat"][0].append(0.0),
    )
    frame = deepar_dataset_frame(str(prepared))
    assert frame["dynamic_feat_mismatches"].tolist() == [1, 0]
    assert _reasons(frame) == [
        "expect_column_values_to_be_between(dynamic_feat_mismatches): 1 unexpected (50.00%), "
        "e.g. [1]"
    ]


def test_train_not_prefix_fails(prepared):
    _rewrite(prepared / "groups/1min/train/data.jsonl", lambda r: r["target"].__setitem__(0, 99.0))
    assert _reasons(deepar_dataset_frame(str(prepared))) == [
        "expect_column_values_to_be_in_set(train_is_prefix): 1 unexpected (50.00%), e.g. [False]"
    ]


def test_nan_share_fails(prepared):
    def blank(record):
        record["target"][:30] = ["NaN"] * 30

    _rewrite(prepared / "groups/5min/test/data.jsonl", blank)
    _rewrite(prepared / "groups/5min/train/data.jsonl", blank)
    frame = deepar_dataset_frame(str(prepared))
    assert frame["nan_share"].tolist() == [0.0, 0.25]
    assert _reasons(frame) == [
        "expect_column_values_to_be_between(nan_share): 1 unexpected (50.00%), e.g. [0.25]"
    ]


def test_feature_count_differs_fails(prepared):
    frame = deepar_dataset_frame(str(prepared))
    frame.loc[0, "dynamic_feat_count"] = 3
    assert _reasons(frame) == [
        "expect_column_unique_value_count_to_be_between(dynamic_feat_count): observed 2"
    ]


def test_failed_dataset_quarantined(prepared, tmp_path):
    _rewrite(
        prepared / "groups/5min/test/data.jsonl", lambda r: r.update(start="2025-04-20 00:01:00")
    )
    with pytest.raises(ValidationFailedError, match="start_offset_seconds"):
        gate_deepar_dataset(str(prepared), "run-bad", str(tmp_path / "q"), build_docs=False)
    folder = tmp_path / "q" / SUITE / "run-bad"
    reasons = json.loads((folder / "reasons.json").read_text())
    assert reasons["files"] == [
        "batch.parquet",
        "dataset/groups/1min/test/data.jsonl",
        "dataset/groups/1min/train/data.jsonl",
        "dataset/groups/5min/test/data.jsonl",
        "dataset/groups/5min/train/data.jsonl",
        "dataset/manifest.json",
    ]
    copied = (folder / "dataset/groups/5min/test/data.jsonl").read_text()
    assert copied == (prepared / "groups/5min/test/data.jsonl").read_text()
    assert len(pd.read_parquet(folder / "batch.parquet")) == 2


def test_missing_manifest_raises(tmp_path):
    with pytest.raises(DatasetError, match="manifest .*manifest.json not found; run the"):
        deepar_dataset_frame(str(tmp_path))


def test_series_count_mismatch_raises(prepared):
    path = prepared / "groups/5min/train/data.jsonl"
    path.write_text("")
    with pytest.raises(DatasetError, match="group '5min' .* lists 1 series but has 0 train"):
        deepar_dataset_frame(str(prepared))
