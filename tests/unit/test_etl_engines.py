"""The pandas and Spark engines give identical output on a subset of the shared NAB and SKAB data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from etl.glue_job import PrepareConfig, run
from etl.readers import iter_dataset
from saodf.config import get_settings
from tests.unit.test_glue_job import _write_raw

# Series with a duplicate hour, hourly gaps, a constant value and 1-second bench readings.
NAB_SERIES = {
    "nab-realKnownCause-machine_temperature_system_failure": slice(8000, 10000),
    "nab-realKnownCause-ambient_temperature_system_failure": slice(0, 1500),
    "nab-artificialNoAnomaly-art_flatline": slice(0, 600),
}
SKAB_SERIES = {"skab-valve1-0": slice(0, 600), "skab-valve1-1": slice(0, 600)}


def _long(frame: pd.DataFrame, device_id: str) -> pd.DataFrame:
    long = frame.melt(id_vars="timestamp", var_name="metric", value_name="reading")
    long = long.dropna().rename(columns={"reading": "value"})
    return long.assign(device_id=device_id)


@pytest.fixture(scope="module")
def shared_lake(tmp_path_factory) -> str:
    data_dir = get_settings().data_dir
    if not (data_dir / "nab").is_dir() or not (data_dir / "skab").is_dir():
        pytest.skip(f"NAB and SKAB data not found under {data_dir}")
    frames = []
    for series, _ in iter_dataset("nab", data_dir, ["realKnownCause", "artificialNoAnomaly"]):
        if series.device_id in NAB_SERIES:
            frames.append(_long(series.frame.iloc[NAB_SERIES[series.device_id]], series.device_id))
    for series, _ in iter_dataset("skab", data_dir, ["valve1"]):
        if series.device_id in SKAB_SERIES:
            rows = series.frame.iloc[SKAB_SERIES[series.device_id]]
            frames.append(_long(rows, series.device_id))
    lake_url = (tmp_path_factory.mktemp("shared") / "lake").as_uri()
    _write_raw(lake_url, pd.concat(frames, ignore_index=True))
    return lake_url


def _files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted((folder / "groups").rglob("*.jsonl"))
    }


@pytest.mark.slow
def test_engines_equal_on_shared_data(shared_lake, tmp_path):
    pytest.importorskip("pyspark")
    common = {"raw_url": shared_lake, "cat_mapping_url": str(tmp_path / "cats.json")}
    pandas_summary = run(PrepareConfig(output_url=str(tmp_path / "pandas"), **common))
    spark_summary = run(PrepareConfig(output_url=str(tmp_path / "spark"), engine="spark", **common))

    assert pandas_summary["devices"] == 5
    assert spark_summary["groups"] == pandas_summary["groups"]
    pandas_files = _files(tmp_path / "pandas")
    spark_files = _files(tmp_path / "spark")
    assert sorted(spark_files) == sorted(pandas_files)
    for name, data in pandas_files.items():
        # Compare decoded records first, so a failure names the series and field.
        pandas_records = [json.loads(line) for line in data.splitlines()]
        spark_records = [json.loads(line) for line in spark_files[name].splitlines()]
        for pandas_record, spark_record in zip(pandas_records, spark_records, strict=True):
            for key, value in pandas_record.items():
                assert spark_record[key] == value, (name, pandas_record.get("cat"), key)
        assert spark_files[name] == data, name
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "spark" / "prepared.parquet"),
        pd.read_parquet(tmp_path / "pandas" / "prepared.parquet"),
    )
    pandas_report = json.loads((tmp_path / "pandas" / "report.json").read_text())["devices"]
    spark_report = json.loads((tmp_path / "spark" / "report.json").read_text())["devices"]
    assert spark_report == pandas_report


def test_shared_subset_pandas_report(shared_lake, tmp_path):
    summary = run(PrepareConfig(raw_url=shared_lake, output_url=str(tmp_path / "out")))
    report = {
        entry["device_id"]: entry
        for entry in json.loads((tmp_path / "out" / "report.json").read_text())["devices"]
    }
    assert summary["groups"] == {"1s": 2, "5min": 2, "1h": 1}
    assert report["nab-artificialNoAnomaly-art_flatline"]["constant"] is True
    assert report["nab-artificialNoAnomaly-art_flatline"]["outliers"] == 0
    assert report["skab-valve1-0"]["target_metric"] == "temperature"
