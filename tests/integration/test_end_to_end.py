"""A replayed SKAB device goes through every stage and ends cached and flagged.

Real broker, Redis, MLflow and gateway on free loopback ports; the DAG's task
functions run in-process in their order, without the Airflow scheduler.
"""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICE = "skab-valve1-1"
TINY_DEEPAR = {"epochs": 1, "num_batches_per_epoch": 5, "num_cells": 30, "num_layers": 1}


def _consume_all(settings, topic: str, idle_polls: int = 10) -> list[dict]:
    from confluent_kafka import Consumer

    from streaming.kafka import consumer_config

    consumer = Consumer(
        consumer_config(
            settings, f"e2e-read-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([topic])
    records, idle = [], 0
    try:
        for _ in range(300):
            message = consumer.poll(0.5)
            if message is None:
                idle += 1
                if records and idle >= idle_polls:
                    break
                continue
            idle = 0
            if not message.error():
                records.append(json.loads(message.value()))
    finally:
        consumer.close()
    return records


@pytest.fixture
def e2e_settings(saodf_env, kafka_bootstrap, redis_server, mlflow_uri, gateway_url):
    """Settings with topics of their own, so this test ignores other tests' messages."""
    suffix = uuid.uuid4().hex[:8]
    settings = saodf_env.with_overrides(
        topic_raw=f"e2e.raw.{suffix}",
        topic_windows=f"e2e.windows.{suffix}",
        topic_anomalies=f"e2e.anomalies.{suffix}",
        topic_dlq=f"e2e.dlq.{suffix}",
        window_messages=1_000_000,
        window_seconds=3.0,
    )
    from streaming.kafka import ensure_topics

    ensure_topics(
        settings,
        [settings.topic_raw, settings.topic_windows, settings.topic_anomalies, settings.topic_dlq],
    )
    return settings


def _replay_device(settings) -> int:
    from confluent_kafka import Producer

    from etl.readers import iter_dataset, to_messages
    from saodf.telemetry import encode_message
    from streaming.kafka import producer_config

    producer = Producer(producer_config(settings))
    sent = 0
    for series, _report in iter_dataset("skab", settings.data_dir, ["valve1"]):
        if series.device_id != DEVICE:
            continue
        for message in to_messages(series):
            producer.produce(settings.topic_raw, encode_message(message), key=DEVICE.encode())
            sent += 1
            if sent % 1000 == 0:
                producer.poll(0)
    assert producer.flush(30) == 0
    return sent


def test_replayed_device_cached_and_flagged(e2e_settings):
    from actions.cache import ForecastCache
    from actions.redis_acl import READER
    from saodf import pipeline
    from saodf.gateway_client import invoke
    from streaming import anomaly_consumer
    from streaming.lake_writer import LakeWriter

    settings = e2e_settings
    sent = _replay_device(settings)
    assert sent > 1000

    writer = LakeWriter(settings, group_id=f"e2e-lake-{uuid.uuid4().hex[:8]}")
    writer.run(max_seconds=40)
    windows = _consume_all(settings, settings.topic_windows, idle_polls=4)
    assert len(windows) >= 1
    assert windows[0]["devices"] == [DEVICE]
    assert sum(w["message_count"] for w in windows) == sent

    scope = pipeline.merge_window_events(windows)
    assert pipeline.validate_raw(scope, settings)["success"]
    prepared = pipeline.preprocess(scope, settings)
    assert prepared["summary"]
    assert pipeline.validate_prepared(scope, settings)["success"]
    trained = pipeline.train(scope, settings, config_overrides=TINY_DEEPAR)
    assert set(trained["groups"]) == {"1s"}
    transformed = pipeline.batch_transform(scope, trained, settings)
    assert transformed["result"]["1s"]["series"] == 1
    cached = pipeline.populate_cache(scope, settings)
    assert cached["stats"]["entries"] == 1

    result = invoke(settings, "forecast", {"device_id": DEVICE})
    assert "error" not in result
    assert result["cache"] == "hit"
    assert result["model_name"] == "saodf-forecaster-1s"
    assert len(result["mean"]) == trained["groups"]["1s"]["prediction_length"]
    assert set(result["quantiles"]) == {"0.1", "0.5", "0.9"}
    assert ForecastCache.from_settings(settings, role=READER).stats()["hits"] >= 1

    options = anomaly_consumer.ConsumerOptions(group_id=f"e2e-anomaly-{uuid.uuid4().hex[:8]}")
    stats = anomaly_consumer.run(settings, options, max_messages=sent, max_seconds=120)
    assert stats.consumed == sent
    flagged = _consume_all(settings, settings.topic_anomalies, idle_polls=4)
    assert stats.anomalies == len(flagged)
    assert len(flagged) >= 1
    assert all(record["message"]["device_id"] == DEVICE for record in flagged)

    teardown = pipeline.teardown(scope, scope["run_key"], settings)
    assert teardown["removed"] is True
