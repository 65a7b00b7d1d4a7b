"""The whole local stack with Airflow: a Kafka-triggered run, duplicate windows, backfill.

Everything runs as real processes on free loopback ports under a temporary home:
broker, Redis, moto, MLflow, gateway, lake writer, anomaly consumer, and Airflow's
api-server, scheduler, dag-processor and triggerer.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICE = "skab-anomaly-free"


@pytest.fixture(scope="module")
def stack(session_settings, kafka_bootstrap, redis_server, moto_endpoint, mlflow_uri, gateway_url):
    from saodf.airflow_api import AirflowClient
    from saodf.stack import manager, process

    settings = session_settings.with_overrides(window_messages=1_000_000, window_seconds=5.0)
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


def test_backfill_twice_changes_nothing(stack):
    from saodf.backfill import run_backfill

    settings, _client = stack
    start = datetime(2020, 2, 8, 15, tzinfo=timezone.utc)
    end = datetime(2020, 2, 8, 16, tzinfo=timezone.utc)
    first = run_backfill(settings, start, end, timeout=1200, progress=False)
    assert first["runs"] == 2
    assert first["states"] == {"success": 2}
    versions = _versions(settings)
    cache_keys = sorted(stack_cache_keys(settings))

    second = run_backfill(settings, start, end, reprocess="completed", timeout=1200, progress=False)
    assert second["states"].get("failed", 0) == 0
    assert _versions(settings) == versions
    assert sorted(stack_cache_keys(settings)) == cache_keys


def stack_cache_keys(settings) -> list[str]:
    from saodf.tenants import admin_redis_client

    # The admin user lists the keys, for the test.
    keys = admin_redis_client(settings).scan_iter("saodf:fc:*")
    return [key.decode() if isinstance(key, bytes) else key for key in keys]
