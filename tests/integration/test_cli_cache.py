"""``saodf cache populate`` against a real redis-server, from finished runs in a tmp lake."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actions.cache import ForecastCache, redis_client
from actions.redis_acl import READER
from saodf.cli import app

pytestmark = pytest.mark.integration

runner = CliRunner()

FORECAST = {
    "mean": [1.0, 2.0, 3.0],
    "quantiles": {"0.1": [0.5, 1.5, 2.5], "0.5": [1.0, 2.0, 3.0], "0.9": [1.5, 2.5, 3.5]},
}


def _write_run(
    lake: Path, run_key: str, finished_at: str, group: str, version: str, devices: list[str]
) -> None:
    """Write a finished run's prepared test channel, batch output and done marker."""
    prepared = lake / "prepared" / run_key
    channel = prepared / "groups" / group / "test"
    channel.mkdir(parents=True)
    with (channel / "data.jsonl").open("w") as handle:
        for _ in devices:
            handle.write(json.dumps({"start": "2025-04-20 00:00:00", "target": [5.0] * 10}) + "\n")
    prepared_manifest = {
        "groups": [
            {
                "group": group,
                "freq": group,
                "prediction_length": 3,
                "context_length": 6,
                "train": f"groups/{group}/train/data.jsonl",
                "test": f"groups/{group}/test/data.jsonl",
                "series": [{"device_id": d, "target_metric": "temperature"} for d in devices],
            }
        ]
    }
    (prepared / "manifest.json").write_text(json.dumps(prepared_manifest))
    report = {"run_key": run_key, "devices": [{"device_id": d, "skipped": None} for d in devices]}
    (prepared / "report.json").write_text(json.dumps(report))
    forecasts = lake / "forecasts" / run_key / group
    forecasts.mkdir(parents=True)
    with (forecasts / "output.jsonl.out").open("w") as handle:
        for _ in devices:
            handle.write(json.dumps(FORECAST) + "\n")
    output_manifest = {
        "group": group,
        "freq": group,
        "model_name": f"saodf-forecaster-{group}",
        "model_version": version,
        "prediction_length": 3,
        "quantiles": ["0.1", "0.5", "0.9"],
        "series": [
            {"device_id": d, "line": i, "forecast_start": "2025-04-20T00:50:00+00:00"}
            for i, d in enumerate(devices)
        ],
    }
    (forecasts / "manifest.json").write_text(json.dumps(output_manifest))
    marker = lake / "runs" / run_key / "done.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"scope": {"run_key": run_key}, "finished_at": finished_at}))


@pytest.fixture
def devices():
    return [f"dev-{uuid.uuid4().hex[:10]}" for _ in range(3)]


@pytest.fixture
def lake(saodf_env, redis_server, tmp_path, devices) -> Path:
    """Three finished runs: the newest covers only the first device of the oldest run."""
    lake = tmp_path / "lake"
    first, second, third = devices
    _write_run(lake, "run-a", "2026-01-01T00:00:00Z", "5min", "1", [first, second])
    _write_run(lake, "run-b", "2026-01-02T00:00:00Z", "1h", "2", [third])
    _write_run(lake, "run-c", "2026-01-03T00:00:00Z", "5min", "3", [first])
    return lake


def test_populate_restores_every_device(lake, saodf_env, devices):
    result = runner.invoke(app, ["cache", "populate"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    cache = ForecastCache(redis_client(saodf_env, role=READER))
    versions = [cache.pointer(device).model_version for device in devices]
    assert stats["devices"] == 3
    assert sorted(stats["runs"]) == ["run-a", "run-b", "run-c"]
    assert versions == ["3", "1", "2"]


def test_populate_skips_superseded_run(lake, saodf_env, devices):
    _write_run(lake, "run-d", "2026-01-04T00:00:00Z", "5min", "4", devices[:2])
    result = runner.invoke(app, ["cache", "populate"])
    stats = json.loads(result.output)
    assert sorted(stats["runs"]) == ["run-b", "run-d"]
    assert stats["entries"] == 3


def test_populate_one_run_key(lake, saodf_env, devices):
    result = runner.invoke(app, ["cache", "populate", "--run-key", "run-a"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    pointer = ForecastCache(redis_client(saodf_env, role=READER)).pointer(devices[0])
    assert stats["run_key"] == "run-a"
    assert stats["devices"] == 2
    assert pointer.model_version == "1"


def test_populate_no_finished_run(saodf_env, redis_server):
    result = runner.invoke(app, ["cache", "populate"])
    assert result.exit_code == 1
    assert "no finished run in" in result.output
