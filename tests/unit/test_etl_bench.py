"""Tests of the ETL benchmark's input, reference and result schema (not of its timings)."""

from __future__ import annotations

import json

import pytest

from bench import etl as etl_bench
from etl import deepar
from etl.glue_job import PrepareConfig
from saodf import bench as harness
from saodf import lake
from saodf.config import get_settings


def test_synthetic_readings_shape():
    frame = etl_bench.synthetic_readings(100, seed=1)
    assert sorted(frame["metric"].unique()) == sorted(etl_bench.METRICS)
    assert frame["device_id"].nunique() == etl_bench.MOTES
    assert frame["kafka_offset"].is_unique
    assert list(frame.columns) == lake.RAW_SCHEMA.names


def test_synthetic_readings_repeatable():
    first = etl_bench.synthetic_readings(80, seed=3)
    second = etl_bench.synthetic_readings(80, seed=3)
    assert first.equals(second)


def test_reference_writes_outputs(tmp_path):
    lake_url = (tmp_path / "lake").as_uri()
    frame = etl_bench.synthetic_readings(100, seed=2)
    files = etl_bench.write_raw_zone(lake_url, frame)
    config = PrepareConfig(
        raw_url=lake_url, output_url=str(tmp_path / "job"), freq="30s", max_nan_share=1.0
    )
    points = etl_bench.write_reference(lake_url, str(tmp_path / "reference"), config)
    test = deepar.read_jsonl(str(tmp_path / "reference" / "groups/raw/test/data.jsonl"))
    assert files == len(lake.list_raw_files(lake_url))
    assert points == int((frame["metric"] == "temperature").sum())
    assert len(test) == etl_bench.MOTES
    assert len(test[0]["dynamic_feat"]) == len(config.dynamic_features)


@pytest.mark.slow
def test_run_result_valid(monkeypatch):
    monkeypatch.setenv("SAODF_BENCH_ETL_READINGS_PER_MOTE", "100")
    result = harness.validate_result("etl", etl_bench.run(get_settings(), quick=True))
    assert set(result["goals"]) == {"pandas_over_read_write_max", "pandas_log_slope_1x_to_16x"}
    assert result["figures"]["raw_rows_16x"] > result["figures"]["raw_rows_1x"]
    assert json.dumps(result)
