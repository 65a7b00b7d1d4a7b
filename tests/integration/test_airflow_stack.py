"""The whole local stack with Airflow: a Kafka-triggered run, duplicate windows, backfill.

Everything runs as real processes on free loopback ports under a temporary home:
broker, Redis, moto, MLflow, gateway, lake writer, anomaly consumer, and Airflow's
api-server, scheduler, dag-processor and triggerer.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICE = "skab-anomaly-free"

NAB_SERIES = Path("nab", "data", "realKnownCause", "machine_temperature_system_failure.csv")
NAB_DEVICE = "nab-realKnownCause-machine_temperature_system_failure"
# A scheduled run trains on the HISTORY_HOURS before its interval's end. Preprocessing
# needs context_length + 2 * prediction_length = 72 steps, 6 hours at NAB's 5-minute step.
HISTORY_HOURS = 8
# The backfill runs the data intervals 10:00-11:00 and 11:00-12:00 of a day outside the
# series' labelled anomaly windows. The lake gets the readings from 01:00 to 12:59. That is
# the history both runs read (03:00-11:59), two hours before it and one hour after the
# last interval, which no run may read.
BACKFILL_FROM = datetime(2013, 12, 5, 10, tzinfo=timezone.utc)
BACKFILL_TO = datetime(2013, 12, 5, 11, tzinfo=timezone.utc)
SLICE_START = "2013-12-05 01:00:00"
SLICE_END = "2013-12-05 13:00:00"
# The lake zones that pipeline runs write (saodf.pipeline.urls, claims and Data Docs).
PIPELINE_ZONES = ("prepared", "forecasts", "runs", "quarantine", "data_docs", "meta")


@pytest.fixture(scope="module")
def stack(session_settings, kafka_bootstrap, redis_server, moto_endpoint, mlflow_uri, gateway_url):
    from saodf.airflow_api import AirflowClient
    from saodf.stack import manager, process

    settings = session_settings.with_overrides(
        window_messages=1_000_000, window_seconds=5.0, history_hours=HISTORY_HOURS
    )
    manager.up(settings, echo=lambda line: None)
    client = AirflowClient(settings)
    client.wait_for_dag("telemetry_pipeline", timeout=240)
    yield settings, client
    # The session fixtures stop the services they started; this fixture stops the rest.
    fixture_services = {"broker", "redis", "moto", "mlflow", "gateway"}
    specs = manager.service_specs(settings)
    for name in reversed(manager.SERVICE_ORDER):
        if name not in fixture_services:
            process.stop(specs[name])


def _runs(client, run_type: str) -> list[dict]:
    return [r for r in client.dag_runs("telemetry_pipeline", limit=100) if r["run_type"] == run_type]


def _read_topic(settings, topic: str, seconds: float = 10.0) -> list[bytes]:
    from confluent_kafka import Consumer

    from streaming.kafka import consumer_config

    consumer = Consumer(
        consumer_config(settings, f"stack-test-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    values = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                values.append(message.value())
    finally:
        consumer.close()
    return values


def _versions(settings) -> int:
    from models.registry import client_for

    client = client_for(settings.mlflow_tracking_uri)
    return sum(
        len(client.search_model_versions(f"name = '{model.name}'"))
        for model in client.search_registered_models()
    )


def test_no_import_errors(stack):
    _settings, client = stack
    assert client.import_errors() == []


def test_kafka_window_runs_pipeline(stack):
    from saodf.demo import wait_for_triggered_run
    from saodf.gateway_client import invoke
    from streaming.replay import replay

    settings, client = stack
    known = {r["dag_run_id"] for r in client.dag_runs("telemetry_pipeline", limit=100)}
    stats = replay("skab", settings.data_dir, groups=["anomaly-free"], settings=settings, progress=False)
    assert stats.delivered == 9405
    run = wait_for_triggered_run(client, known, timeout=900, echo=lambda line: None)
    assert run["state"] == "success"
    result = invoke(settings, "forecast", {"device_id": DEVICE})
    assert result["cache"] == "hit"
    assert result["model_name"] == "saodf-forecaster-1s"


def test_duplicate_window_starts_no_run(stack):
    settings, client = stack
    windows = _read_topic(settings, settings.topic_windows)
    assert windows
    before = len(_runs(client, "asset_triggered"))

    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(settings.topic_windows, windows[0])
    assert producer.flush(10) == 0
    time.sleep(20)
    assert len(_runs(client, "asset_triggered")) == before
    window_id = json.loads(windows[0])["window_id"]
    dead = [v for v in _read_topic(settings, settings.topic_dlq) if window_id.encode() in v]
    assert dead


def test_backfill_twice_changes_nothing(stack, tmp_path):
    from saodf.backfill import backfill_runs, data_intervals, run_backfill
    from saodf.pipeline import run_key_for_interval

    settings, client = stack
    intervals = data_intervals(BACKFILL_FROM, BACKFILL_TO)
    assert len(intervals) == 2
    run_keys = {run_key_for_interval(start, end) for start, end in intervals}

    with _long_cache_ttls(settings):
        cache_keys_before = set(stack_cache_keys(settings))
        _replay_nab_slice(settings, client, tmp_path)
        hours = _raw_hours(settings, NAB_DEVICE)
        assert len(hours) == 12
        assert hours[0] == "2013-12-05/01"
        assert hours[-1] == "2013-12-05/12"
        files_before = _lake_files(settings)

        first = run_backfill(settings, BACKFILL_FROM, BACKFILL_TO, timeout=1200, progress=False)
        assert first["runs"] == 2
        assert first["new_runs"] == 2
        assert first["states"] == {"success": 2}
        runs = backfill_runs(client, intervals[0][1], intervals[-1][1])
        assert sorted(_data_interval(run) for run in runs) == intervals
        for run in runs:
            start, end = _data_interval(run)
            checked = _xcom(client, run["dag_run_id"], "quality_and_prep.validate_raw")
            # The raw gate reads the interval only: 12 readings at a 5-minute step.
            assert checked["rows"] == 12, run["dag_run_id"]
            assert checked["devices"] == 1, run["dag_run_id"]
            _check_run_outputs(settings, start, end)

        files = _lake_files(settings)
        written = {path for path, digest in files.items() if files_before.get(path) != digest}
        written_keys = {_run_key_of(path) for path in written} - {None}
        assert written_keys == run_keys
        records = _records(settings, files, run_keys, cache_keys_before)
        assert records["cache_keys"]

        second = run_backfill(
            settings,
            BACKFILL_FROM,
            BACKFILL_TO,
            reprocess="completed",
            timeout=1200,
            progress=False,
        )
        assert second["states"].get("failed", 0) == 0
        assert second["runs"] == 2
        assert second["new_runs"] == 0
        files_again = _lake_files(settings)
        records_again = _records(settings, files_again, run_keys, cache_keys_before)

    assert records_again["mlflow_runs"] == records["mlflow_runs"]
    assert records_again["model_versions"] == records["model_versions"]
    assert records_again["cache_keys"] == records["cache_keys"]
    assert records_again["run_outputs"] == records["run_outputs"]
    assert files_again == files


def _replay_nab_slice(settings, client, tmp_path: Path) -> None:
    """Replay the NAB slice to Kafka and wait for the window run that the lake writer starts.

    The slice is written in the NAB layout to ``tmp_path``, outside the repository, so the
    replay tool reads it like the full dataset and names the device the same way.
    """
    from saodf.demo import wait_for_triggered_run
    from streaming.replay import replay

    source = Path(settings.data_dir) / NAB_SERIES
    lines = source.read_text(encoding="utf-8").splitlines()
    # NAB timestamps are "YYYY-MM-DD HH:MM:SS", so text order is time order.
    rows = [line for line in lines[1:] if SLICE_START <= line[:19] < SLICE_END]
    target = tmp_path / NAB_SERIES
    target.parent.mkdir(parents=True)
    target.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")

    known = {r["dag_run_id"] for r in client.dag_runs("telemetry_pipeline", limit=100)}
    stats = replay("nab", tmp_path, groups=["realKnownCause"], settings=settings, progress=False)
    assert stats.delivered == len(rows)
    run = wait_for_triggered_run(client, known, timeout=900, echo=lambda line: None)
    assert run["state"] == "success"
    _wait_until_no_active_runs(client, timeout=900)


def _wait_until_no_active_runs(client, timeout: float) -> None:
    """Wait until no run of the pipeline is queued or running (later window runs included)."""
    deadline = time.monotonic() + timeout
    while True:
        active = [
            r["dag_run_id"]
            for r in client.dag_runs("telemetry_pipeline", limit=100)
            if r["state"] in ("queued", "running")
        ]
        if not active:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"pipeline runs still active after {timeout:.0f} s: {active}")
        time.sleep(5)


def _data_interval(run: dict) -> tuple[datetime, datetime]:
    return (
        datetime.fromisoformat(run["data_interval_start"].replace("Z", "+00:00")),
        datetime.fromisoformat(run["data_interval_end"].replace("Z", "+00:00")),
    )


def _xcom(client, dag_run_id: str, task_id: str):
    """Return the return value that ``task_id`` pushed in the pipeline run ``dag_run_id``."""
    entry = client.get(
        f"/dags/telemetry_pipeline/dagRuns/{dag_run_id}/taskInstances/{task_id}"
        "/xcomEntries/return_value"
    )
    value = entry["value"]
    # Airflow 3.3 returns the stored JSON text, or an object when the Task Execution API
    # stored the value already parsed.
    return json.loads(value) if isinstance(value, str) else value


def _check_run_outputs(settings, start: datetime, end: datetime) -> None:
    """Check that the run of ``[start, end)`` wrote its outputs from data before ``end``."""
    import pandas as pd

    from saodf.pipeline import run_key_for_interval

    run_key = run_key_for_interval(start, end)
    root = _lake_root(settings)
    with open(root / "runs" / run_key / "done.json", encoding="utf-8") as handle:
        scope = json.load(handle)["scope"]
    assert scope["devices"] == [NAB_DEVICE]
    assert scope["interval_start"] == f"{start:%Y-%m-%dT%H:%M:%SZ}"
    assert scope["end"] == f"{end:%Y-%m-%dT%H:%M:%SZ}"
    assert scope["start"] == f"{end - timedelta(hours=HISTORY_HOURS):%Y-%m-%dT%H:%M:%SZ}"

    prepared = pd.read_parquet(root / "prepared" / run_key / "prepared.parquet")
    assert set(prepared["device_id"]) == {NAB_DEVICE}
    assert prepared["timestamp"].min() == pd.Timestamp(end) - pd.Timedelta(hours=HISTORY_HOURS)
    assert prepared["timestamp"].max() == pd.Timestamp(end) - pd.Timedelta(minutes=5)

    manifests = sorted((root / "forecasts" / run_key).glob("*/manifest.json"))
    assert len(manifests) == 1, run_key
    series = json.loads(manifests[0].read_text(encoding="utf-8"))["series"]
    assert [s["device_id"] for s in series] == [NAB_DEVICE]
    # The forecast starts right after the last reading the run used: the interval's end.
    forecast_start = pd.Timestamp(series[0]["forecast_start"])
    if forecast_start.tzinfo is None:
        forecast_start = forecast_start.tz_localize("UTC")
    assert forecast_start == pd.Timestamp(end)


def _lake_root(settings) -> Path:
    import fsspec

    _fs, root = fsspec.core.url_to_fs(settings.lake_url)
    return Path(root)


def _raw_hours(settings, device_id: str) -> list[str]:
    """Return the ``date/hour`` raw partitions of ``device_id`` that hold files."""
    folder = _lake_root(settings) / "raw" / f"device_id={device_id}"
    hours = {
        f"{path.parent.parent.name[len('date=') :]}/{path.parent.name[len('hour=') :]}"
        for path in folder.rglob("*.parquet")
    }
    return sorted(hours)


def _lake_files(settings) -> dict[str, str]:
    """Return the SHA-256 of every file in the pipeline zones, keyed by its lake path."""
    root = _lake_root(settings)
    digests = {}
    for zone in PIPELINE_ZONES:
        for path in sorted((root / zone).rglob("*")):
            if path.is_file():
                digests[path.relative_to(root).as_posix()] = hashlib.sha256(
                    path.read_bytes()
                ).hexdigest()
    return digests


def _run_key_of(path: str) -> str | None:
    """Return the run key that a pipeline-zone path belongs to, or None for shared files."""
    parts = path.split("/")
    zone = parts[0]
    if zone == "meta":
        # The category mapping that every run extends.
        return None
    if zone == "runs" and parts[1] == "claims":
        return parts[2].removesuffix(".json")
    if zone in ("quarantine", "data_docs"):
        # {zone}/{suite}/{run_key}/...
        return parts[2]
    return parts[1]


def _records(settings, files: dict[str, str], run_keys: set[str], cache_keys_before: set[str]):
    """Return what a repeated backfill must leave unchanged."""
    run_outputs = {}
    for run_key in sorted(run_keys):
        owned = sorted(
            (path, digest) for path, digest in files.items() if _run_key_of(path) == run_key
        )
        assert owned, run_key
        run_outputs[run_key] = hashlib.sha256(json.dumps(owned).encode()).hexdigest()
    return {
        "mlflow_runs": _mlflow_run_count(settings),
        "model_versions": _versions(settings),
        # Keys written before this test may expire meanwhile, so only the test's keys count.
        "cache_keys": sorted(set(stack_cache_keys(settings)) - cache_keys_before),
        "run_outputs": run_outputs,
    }


def _mlflow_run_count(settings) -> int:
    from mlflow.entities import ViewType

    from models.registry import client_for

    client = client_for(settings.mlflow_tracking_uri)
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs(
        [experiment.experiment_id for experiment in experiments],
        run_view_type=ViewType.ALL,
        max_results=50_000,
    )
    return len(runs)


@contextlib.contextmanager
def _long_cache_ttls(settings):
    """Set the forecast cache's TTL policy to a day, then restore the old policy.

    Forecast entries of dynamic devices expire after 5 minutes by default, which a slow
    backfill can outlast between two records of the cache keys. Redis serves the whole
    test session, so the old policy comes back for the tests after this one.
    """
    from actions.cache import DYNAMIC, STABLE, TTL_POLICY_KEY, ForecastCache
    from saodf.tenants import admin_redis_client

    client = admin_redis_client(settings)
    saved = client.hgetall(TTL_POLICY_KEY)
    cache = ForecastCache(client)
    cache.set_ttl(DYNAMIC, 24 * 3600)
    cache.set_ttl(STABLE, 24 * 3600)
    try:
        yield
    finally:
        client.delete(TTL_POLICY_KEY)
        if saved:
            client.hset(TTL_POLICY_KEY, mapping=saved)


def stack_cache_keys(settings) -> list[str]:
    from saodf.tenants import admin_redis_client

    # The admin user lists the keys, for the test.
    keys = admin_redis_client(settings).scan_iter("saodf:fc:*")
    return [key.decode() if isinstance(key, bytes) else key for key in keys]
