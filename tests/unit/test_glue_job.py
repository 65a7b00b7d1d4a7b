"""Tests of the preprocessing job on a small raw zone written to a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from etl import deepar
from etl.glue_job import (
    PrepareConfig,
    choose_target_metric,
    glue_job_args,
    main,
    run,
)
from saodf import lake
from saodf.config import PROJECT_ROOT
from saodf.errors import ConfigError, DatasetError

START = pd.Timestamp("2025-04-20 00:00", tz="UTC")


def _write_raw(lake_url: str, frame: pd.DataFrame) -> None:
    """Write ``frame`` to the raw zone, one file per device and hour as the lake writer does."""
    frame = frame.copy()
    frame["schema_version"] = 1
    frame["kafka_topic"] = "telemetry.raw"
    frame["kafka_partition"] = 0
    frame["kafka_offset"] = np.arange(len(frame))
    hours = frame["timestamp"].dt.floor("h")
    for (device_id, hour), rows in frame.groupby(["device_id", hours]):
        name = lake.raw_file_name(
            "telemetry.raw", 0, int(rows["kafka_offset"].min()), int(rows["kafka_offset"].max())
        )
        url = lake.raw_partition_url(lake_url, device_id, hour.to_pydatetime()) + "/" + name
        table = pa.Table.from_pandas(rows, schema=lake.RAW_SCHEMA, preserve_index=False)
        lake.write_parquet_atomic(table, url)


def _readings(device_id: str, metric: str, values, freq: str = "5min") -> pd.DataFrame:
    timestamps = pd.date_range(START, periods=len(values), freq=freq)
    return pd.DataFrame(
        {"device_id": device_id, "timestamp": timestamps, "metric": metric, "value": values}
    )


@pytest.fixture()
def raw_lake(tmp_path) -> str:
    """Return a raw zone with a 5-minute device (with faults), a 1-minute device and a short one."""
    wave = list(50 + 5 * np.sin(np.arange(120) / 10))
    wave[30] = 105.0
    sensor_a = _readings("sensor-a", "value", wave)
    sensor_a = sensor_a.drop(index=range(60, 64))
    duplicate = sensor_a.iloc[[10]].assign(value=sensor_a["value"].iloc[10] + 0.5)
    sensor_a = pd.concat([sensor_a, duplicate], ignore_index=True)
    sensor_b = pd.concat(
        [
            _readings("sensor-b", "temperature", list(20 + np.arange(100) * 0.01), "1min"),
            _readings("sensor-b", "humidity", list(40 + np.arange(100) * 0.01), "1min"),
        ],
        ignore_index=True,
    )
    short = _readings("sensor-short", "value", [1.0] * 10)
    lake_url = (tmp_path / "lake").as_uri()
    _write_raw(lake_url, pd.concat([sensor_a, sensor_b, short], ignore_index=True))
    return lake_url


def _config(raw_lake: str, tmp_path: Path, **changes) -> PrepareConfig:
    return PrepareConfig(raw_url=raw_lake, output_url=str(tmp_path / "out"), **changes)


def _manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "manifest.json").read_text())


def _group(tmp_path: Path, name: str) -> dict:
    return next(g for g in _manifest(tmp_path)["groups"] if g["group"] == name)


# ---------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"freq": "fortnightly"}, "freq 'fortnightly' is invalid"),
        ({"aggregation": "max"}, "aggregation 'max' is invalid; use one of: mean, last"),
        ({"imputation": "spline"}, "imputation 'spline' is invalid"),
        ({"outlier_method": "iqr"}, "outlier_method 'iqr' is invalid"),
        ({"engine": "dask"}, "engine 'dask' is invalid; use one of: pandas, spark"),
        ({"max_gap": -1}, "max_gap -1 is invalid"),
        ({"zscore_threshold": 0}, "zscore_threshold 0 is invalid"),
        ({"prediction_length": 0}, "prediction_length 0 is invalid"),
        ({"context_length": 2.5}, "context_length 2.5 is invalid"),
        ({"target_metric": "Temp C"}, "target_metric 'Temp C' is invalid"),
        ({"devices": []}, "devices is an empty list"),
        ({"devices": "sensor-a"}, "devices 'sensor-a' is invalid; give a list"),
        ({"devices": ["bad id"]}, "device id 'bad id' in devices is invalid"),
        ({"dynamic_features": ["moon_phase"]}, "'moon_phase' are unknown"),
        ({"raw_url": ""}, "raw_url '' is invalid"),
    ],
)
def test_config_invalid_field(changes, message):
    fields = {"raw_url": "file:///lake", "output_url": "file:///out", **changes}
    with pytest.raises(ConfigError, match=message):
        PrepareConfig(**fields)


def test_config_start_after_end():
    with pytest.raises(ConfigError, match="is not before end"):
        PrepareConfig(
            raw_url="file:///lake",
            output_url="file:///out",
            start=datetime(2025, 4, 21, tzinfo=timezone.utc),
            end=datetime(2025, 4, 20, tzinfo=timezone.utc),
        )


def test_config_naive_start_utc():
    config = PrepareConfig(raw_url="a", output_url="b", start=datetime(2025, 4, 20, 12))
    assert config.start == datetime(2025, 4, 20, 12, tzinfo=timezone.utc)


def test_glue_args_round_trip():
    config = PrepareConfig(
        raw_url="s3://lake",
        output_url="s3://lake/prepared/run-1",
        cat_mapping_url="s3://lake/meta/cats.json",
        devices=["sensor-a", "sensor-b"],
        start=datetime(2025, 4, 20, tzinfo=timezone.utc),
        end=datetime(2025, 4, 21, tzinfo=timezone.utc),
        freq="5min",
        max_gap=None,
        zscore_threshold=2.5,
        engine="spark",
    )
    arguments = glue_job_args(config)
    assert all(key.startswith("--") for key in arguments)
    assert all(isinstance(value, str) for value in arguments.values())
    assert PrepareConfig.from_args(arguments) == config


def test_from_args_unknown_name():
    with pytest.raises(ConfigError, match="unknown job argument\\(s\\) colour"):
        PrepareConfig.from_args({"raw_url": "a", "output_url": "b", "colour": "red"})


def test_from_args_bad_number():
    with pytest.raises(ConfigError, match="--max_gap 'many' is invalid; give a whole number"):
        PrepareConfig.from_args({"raw_url": "a", "output_url": "b", "max_gap": "many"})


@pytest.mark.parametrize(
    ("metrics", "requested", "expected"),
    [
        (["temperature", "value"], "auto", "value"),
        (["humidity", "temperature"], "auto", "temperature"),
        (["voltage", "current"], "auto", "current"),
        (["voltage", "current"], "voltage", "voltage"),
        (["current"], "voltage", None),
    ],
)
def test_target_metric_choice(metrics, requested, expected):
    assert choose_target_metric(metrics, requested) == expected


# ---------------------------------------------------------------------------
# Output layout


def test_run_groups_by_frequency(raw_lake, tmp_path):
    summary = run(_config(raw_lake, tmp_path))
    assert summary["groups"] == {"1min": 1, "5min": 1}
    assert [g["group"] for g in _manifest(tmp_path)["groups"]] == ["1min", "5min"]


def test_run_manifest_fields(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path))
    manifest = _manifest(tmp_path)
    group = _group(tmp_path, "5min")
    assert manifest["run_key"] == "out"
    assert manifest["config"]["prediction_length"] == 12
    assert group["train"] == "groups/5min/train/data.jsonl"
    assert group["test"] == "groups/5min/test/data.jsonl"
    assert group["context_length"] == 48
    assert group["dynamic_feat_names"] == ["hour_of_day", "day_of_week"]
    entry = group["series"][0]
    assert entry["device_id"] == "sensor-a"
    assert entry["target_metric"] == "value"
    assert entry["start"] == "2025-04-20 00:00:00"
    assert entry["test_length"] == 120
    assert entry["train_length"] == 108
    assert entry["end"] == "2025-04-20T09:55:00Z"


def test_run_short_device_skipped(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path))
    skipped = _manifest(tmp_path)["skipped_devices"]
    assert [s["device_id"] for s in skipped] == ["sensor-short"]
    assert "needs at least context_length + 2 * prediction_length = 72" in skipped[0]["reason"]


def test_run_jsonl_matches_manifest(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path))
    group = _group(tmp_path, "1min")
    train = deepar.read_jsonl(str(tmp_path / "out" / group["train"]))
    test = deepar.read_jsonl(str(tmp_path / "out" / group["test"]))
    assert len(train) == len(group["series"])
    assert len(train[0]["target"]) == group["series"][0]["train_length"]
    assert len(test[0]["target"]) == group["series"][0]["test_length"]
    assert test[0]["target"][:-12] == train[0]["target"]
    assert len(test[0]["dynamic_feat"][0]) == len(test[0]["target"])
    assert train[0]["cat"] == [group["series"][0]["cat"]]


def test_run_gap_written_as_nan(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path, max_gap=2))
    text = (tmp_path / "out" / "groups/5min/test/data.jsonl").read_text()
    target = json.loads(text.splitlines()[0])["target"]
    assert target[60:64] == [target[60], target[61], "NaN", "NaN"]
    assert 0.0 not in target[62:64]


def test_run_prepared_table(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path))
    table = pd.read_parquet(tmp_path / "out" / "prepared.parquet")
    assert list(table.columns) == [
        "device_id",
        "group",
        "timestamp",
        "target",
        "is_outlier",
        "is_imputed",
    ]
    assert str(table["timestamp"].dtype).endswith("UTC]")
    sensor_a = table[table["device_id"] == "sensor-a"].reset_index(drop=True)
    assert sensor_a["is_outlier"].iloc[30]
    assert sensor_a["is_imputed"].iloc[30]
    assert sensor_a["is_imputed"].iloc[60:64].all()
    assert not table["target"].isna().any()


def test_run_report_counts(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    entry = next(d for d in report["devices"] if d["device_id"] == "sensor-a")
    assert entry["rows_in"] == 117
    assert entry["duplicates"] == 1
    assert entry["outliers"] == 1
    assert entry["imputed"] == 5
    assert entry["gaps_left"] == 0


def test_run_is_idempotent(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path))
    first = (tmp_path / "out" / "groups/5min/test/data.jsonl").read_bytes()
    run(_config(raw_lake, tmp_path))
    assert (tmp_path / "out" / "groups/5min/test/data.jsonl").read_bytes() == first


def test_run_removes_stale_groups(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path))
    run(_config(raw_lake, tmp_path, freq="10min", context_length=24, prediction_length=6))
    assert sorted(p.name for p in (tmp_path / "out" / "groups").iterdir()) == ["10min"]


def test_run_categories_persist(raw_lake, tmp_path):
    mapping_url = str(tmp_path / "meta" / "cats.json")
    run(_config(raw_lake, tmp_path, cat_mapping_url=mapping_url, devices=["sensor-b"]))
    run(_config(raw_lake, tmp_path, cat_mapping_url=mapping_url))
    assert deepar.load_category_mapping(mapping_url) == {"sensor-a": 1, "sensor-b": 0}
    assert _group(tmp_path, "1min")["series"][0]["cat"] == 0


def test_run_time_window(raw_lake, tmp_path):
    end = datetime(2025, 4, 20, 2, 0, tzinfo=timezone.utc)
    summary = run(_config(raw_lake, tmp_path, end=end, context_length=10, prediction_length=5))
    table = pd.read_parquet(tmp_path / "out" / "prepared.parquet")
    assert table["timestamp"].max() < pd.Timestamp(end)
    assert summary["groups"] == {"1min": 1, "5min": 1}


def test_run_missing_device_reported(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path, devices=["sensor-a", "sensor-x"]))
    skipped = _manifest(tmp_path)["skipped_devices"]
    assert skipped == [{"device_id": "sensor-x", "reason": "no raw readings in the interval"}]


def test_run_target_metric_named(raw_lake, tmp_path):
    run(_config(raw_lake, tmp_path, target_metric="humidity"))
    group = _group(tmp_path, "1min")
    assert group["series"][0]["target_metric"] == "humidity"
    reasons = {s["device_id"]: s["reason"] for s in _manifest(tmp_path)["skipped_devices"]}
    assert "no readings of target metric 'humidity'" in reasons["sensor-a"]


def test_run_nothing_prepared_raises(raw_lake, tmp_path):
    with pytest.raises(DatasetError, match="sensor-short: 10 steps of 5min"):
        run(_config(raw_lake, tmp_path, devices=["sensor-short"]))
    assert (tmp_path / "out" / "report.json").is_file()


def test_run_real_nab_series(tmp_path):
    from etl.readers import iter_dataset
    from saodf.config import get_settings

    data_dir = get_settings().data_dir
    if not (data_dir / "nab").is_dir():
        pytest.skip(f"NAB data not found under {data_dir}")
    series, _ = next(
        s
        for s in iter_dataset("nab", data_dir, ["realKnownCause"])
        if s[0].device_id.endswith("machine_temperature_system_failure")
    )
    frame = series.frame.iloc[:2000].assign(device_id=series.device_id, metric="value")
    lake_url = (tmp_path / "lake").as_uri()
    _write_raw(lake_url, frame)
    run(PrepareConfig(raw_url=lake_url, output_url=str(tmp_path / "out")))
    report = json.loads((tmp_path / "out" / "report.json").read_text())["devices"][0]
    assert report["freq"] == "5min"
    assert report["rows_in"] == 2000


# ---------------------------------------------------------------------------
# Command line


@pytest.fixture()
def quiet_logging(monkeypatch):
    """Keep main() from adding a root handler bound to pytest's captured stderr."""
    monkeypatch.setattr("saodf.log.configure_logging", lambda level=None: None)


def test_main_argparse_path(raw_lake, tmp_path, monkeypatch, capsys, quiet_logging):
    monkeypatch.setitem(sys.modules, "awsglue.utils", None)
    summary = main(["--raw_url", raw_lake, "--output_url", str(tmp_path / "out"), "--freq", "5min"])
    assert summary["groups"] == {"5min": 1}
    assert json.loads(capsys.readouterr().out)["groups"] == {"5min": 1}


def test_main_awsglue_path(raw_lake, tmp_path, capsys, quiet_logging):
    pytest.importorskip("awsglue.utils")
    arguments = ["--raw_url", raw_lake, "--output_url", str(tmp_path / "out")]
    summary = main([*arguments, "--JOB_NAME", "saodf-prepare", "--devices", "sensor-b"])
    assert summary["groups"] == {"1min": 1}


def test_module_runs_as_script(raw_lake, tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "etl.glue_job",
            "--raw_url",
            raw_lake,
            "--output_url",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROJECT_ROOT,
        env=environment,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["devices"] == 2
    assert _group(tmp_path, "5min")["series"][0]["device_id"] == "sensor-a"


# ---------------------------------------------------------------------------
# Spark engine


@pytest.mark.slow
def test_spark_matches_pandas(raw_lake, tmp_path):
    pytest.importorskip("pyspark")
    pandas_out = tmp_path / "pandas"
    spark_out = tmp_path / "spark"
    mapping_url = str(tmp_path / "cats.json")
    common = {"raw_url": raw_lake, "cat_mapping_url": mapping_url}
    run(PrepareConfig(output_url=str(pandas_out), **common))
    run(PrepareConfig(output_url=str(spark_out), engine="spark", **common))
    for channel in ("groups/5min/train", "groups/5min/test", "groups/1min/test"):
        pandas_lines = (pandas_out / channel / "data.jsonl").read_bytes()
        spark_lines = (spark_out / channel / "data.jsonl").read_bytes()
        assert spark_lines == pandas_lines, channel
    pandas_table = pd.read_parquet(pandas_out / "prepared.parquet")
    spark_table = pd.read_parquet(spark_out / "prepared.parquet")
    pd.testing.assert_frame_equal(spark_table, pandas_table)
    pandas_report = json.loads((pandas_out / "report.json").read_text())["devices"]
    spark_report = json.loads((spark_out / "report.json").read_text())["devices"]
    assert spark_report == pandas_report


def test_gappy_device_skipped_with_reason():
    from etl.glue_job import prepare_device

    values = list(50 + 5 * np.sin(np.arange(200) / 10))
    frame = _readings("gappy-1", "value", values)
    # Drop 60 consecutive readings: a gap far longer than max_gap stays NaN (30% of the grid).
    frame = pd.concat([frame.iloc[:100], frame.iloc[160:]])
    config = PrepareConfig(raw_url="file:///unused", output_url="file:///unused", max_gap=12)
    result = prepare_device("gappy-1", frame, config)
    assert result.frame is None
    assert result.skip_reason.startswith("24% of the target is still missing after imputation")
