"""End-to-end test of the stream consumer: broker, redis-server, gateway and runtimes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from actions.gateway import DEFAULT_ACTIONS, serve
from saodf.stack.process import free_port
from streaming.anomaly_consumer import IN_PROCESS, ConsumerOptions, run
from streaming.kafka import consumer_config, ensure_topics, producer_config

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)
MISSING_TIMESTAMP = "timestamp is missing; send ISO 8601 with a zone, e.g. 2025-04-20T12:34:00Z"


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap, redis_server, session_settings):
    detector = [spec for spec in DEFAULT_ACTIONS if spec.name == "detect_anomaly"]
    server = serve(session_settings, actions=detector, port=0)
    yield server
    server.close()


def _produce(settings, readings: list) -> None:
    ensure_topics(settings, [settings.topic_raw, settings.topic_anomalies, settings.topic_dlq])
    producer = Producer(producer_config(settings))
    for reading in readings:
        value = reading if isinstance(reading, bytes) else json.dumps(reading).encode()
        producer.produce(settings.topic_raw, value=value, key=b"k")
    assert producer.flush(30) == 0


def _collect(settings, topic: str, wanted, timeout: float = 60.0) -> list[dict]:
    """Read ``topic`` from the start until ``wanted(records)`` is true or ``timeout`` passes."""
    consumer = Consumer(consumer_config(settings, f"test-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    records: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not wanted(records):
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            records.append(json.loads(message.value()))
    finally:
        consumer.close()
    return records


def _start_consumer(settings, options: ConsumerOptions):
    stop = threading.Event()
    thread = threading.Thread(
        target=run,
        kwargs={"settings": settings, "options": options, "stop": stop, "max_seconds": 90},
        daemon=True,
    )
    thread.start()
    return stop, thread


def test_spike_reaches_anomalies(gateway, session_settings):
    settings = session_settings.with_overrides(gateway_url=gateway.url)
    device_id = f"stream-{uuid.uuid4().hex[:8]}"
    readings = [
        {
            "device_id": device_id,
            "timestamp": f"2025-04-20T12:{i:02d}:00Z",
            "temperature": 50.0 + i % 4,
        }
        for i in range(40)
    ]
    readings.append(
        {"device_id": device_id, "timestamp": "2025-04-20T12:40:00Z", "temperature": 105.0}
    )
    readings.append({"device_id": device_id, "temperature": 1.0})
    readings.append(b"not json")
    _produce(settings, readings)
    options = ConsumerOptions(group_id=f"test-{uuid.uuid4().hex}", detector_params={"warmup": 20})
    stop, thread = _start_consumer(settings, options)
    try:
        anomalies = _collect(
            settings,
            settings.topic_anomalies,
            lambda records: any(r["message"]["device_id"] == device_id for r in records),
        )
        dead = _collect(
            settings,
            settings.topic_dlq,
            lambda records: sum(r.get("source") == "anomaly_consumer" for r in records) >= 2,
        )
    finally:
        stop.set()
        thread.join(30)
    flagged = [r for r in anomalies if r["message"]["device_id"] == device_id]
    assert len(flagged) == 1
    assert flagged[0]["message"]["temperature"] == 105.0
    assert flagged[0]["metrics"] == ["temperature"]
    assert len(flagged[0]["activation_id"]) == 32
    reasons = [r["reason"] for r in dead if r.get("source") == "anomaly_consumer"]
    assert MISSING_TIMESTAMP in reasons
    assert any(reason.startswith("payload is not JSON") for reason in reasons)


def test_gateway_down_goes_to_dlq(kafka_bootstrap, redis_server, session_settings):
    from saodf.secrets import gateway_keys

    gateway_keys(session_settings)
    settings = session_settings.with_overrides(gateway_url=f"http://127.0.0.1:{free_port()}")
    device_id = f"down-{uuid.uuid4().hex[:8]}"
    _produce(settings, [{"device_id": device_id, "timestamp": "2025-04-20T12:00:00Z", "x": 1.0}])
    options = ConsumerOptions(
        group_id=f"test-{uuid.uuid4().hex}", max_attempts=3, backoff_initial=0.1, request_timeout=5
    )
    stop, thread = _start_consumer(settings, options)
    try:
        dead = _collect(
            settings,
            settings.topic_dlq,
            lambda records: any(device_id in r.get("payload", "") for r in records),
        )
    finally:
        stop.set()
        thread.join(30)
    mine = [r for r in dead if device_id in r.get("payload", "")]
    assert len(mine) == 1
    assert "unreachable" in mine[0]["reason"]


def test_nan_reading_dead_lettered_alone(gateway, session_settings):
    settings = session_settings.with_overrides(gateway_url=gateway.url)
    device_id = f"nan-{uuid.uuid4().hex[:8]}"
    readings = [
        {"device_id": device_id, "timestamp": f"2025-04-20T13:{i:02d}:00Z", "temperature": 50.0}
        for i in range(20)
    ]
    nan_payload = (
        b'{"device_id": "' + device_id.encode() + b'", "timestamp": "2025-04-20T13:30:00Z", '
        b'"temperature": NaN}'
    )
    _produce(settings, [*readings, nan_payload])
    options = ConsumerOptions(group_id=f"test-{uuid.uuid4().hex}")
    stop, thread = _start_consumer(settings, options)
    try:
        dead = _collect(
            settings,
            settings.topic_dlq,
            lambda records: any(device_id in r.get("payload", "") for r in records),
        )
        time.sleep(3)
        dead += _collect(settings, settings.topic_dlq, lambda records: False, timeout=3)
    finally:
        stop.set()
        thread.join(30)
    mine = {r["offset"]: r for r in dead if device_id in r.get("payload", "")}
    assert len(mine) == 1
    only = next(iter(mine.values()))
    assert "NaN" in only["payload"]
    assert "not JSON" in only["reason"]


def test_in_process_spike_reaches_anomalies(kafka_bootstrap, redis_server, session_settings):
    device_id = f"inproc-{uuid.uuid4().hex[:8]}"
    readings = [
        {"device_id": device_id, "timestamp": f"2025-04-20T14:{i:02d}:00Z", "temperature": 50.0}
        for i in range(30)
    ]
    readings.append(
        {"device_id": device_id, "timestamp": "2025-04-20T14:30:00Z", "temperature": 105.0}
    )
    readings.append({"device_id": device_id, "temperature": 1.0})
    _produce(session_settings, readings)

    options = ConsumerOptions(
        group_id=f"test-{uuid.uuid4().hex}",
        detector=IN_PROCESS,
        detector_params={"warmup": 20},
    )
    stop, thread = _start_consumer(session_settings, options)
    try:
        anomalies = _collect(
            session_settings,
            session_settings.topic_anomalies,
            lambda records: any(r["message"]["device_id"] == device_id for r in records),
        )
        dead = _collect(
            session_settings,
            session_settings.topic_dlq,
            lambda records: any(device_id in r.get("payload", "") for r in records),
        )
    finally:
        stop.set()
        thread.join(30)

    flagged = [r for r in anomalies if r["message"]["device_id"] == device_id]
    assert len(flagged) == 1
    assert flagged[0]["message"]["temperature"] == 105.0
    assert flagged[0]["metrics"] == ["temperature"]
    assert len(flagged[0]["activation_id"]) == 32
    assert flagged[0]["degraded"] is False
    mine = [r for r in dead if device_id in r.get("payload", "")]
    assert [r["reason"] for r in mine] == [MISSING_TIMESTAMP]


# Consumer child for the crash test: the settings of its environment on a topic of its own.
# A pause after each batch's decisions keeps it busy long enough to be killed mid-stream.
_CHILD = """
import sys
import time
from saodf.config import get_settings
from streaming.anomaly_consumer import ConsumerOptions, run

settings = get_settings().with_overrides(topic_raw=sys.argv[1])
options = ConsumerOptions(
    group_id=sys.argv[2], batch_size=20, detector="in_process", commit_interval=0,
    detector_params={"warmup": 20}, on_decisions=lambda messages, results: time.sleep(0.3),
)
run(settings, options, max_seconds=120)
"""


def _committed(watcher: Consumer, topic: str) -> int:
    # committed() queries the group coordinator without joining the group.
    (partition,) = watcher.committed([TopicPartition(topic, 0)], timeout=10)
    return partition.offset


def _crash_readings(device_id: str, minutes: range, spike_at: int | None = None) -> list[dict]:
    return [
        {
            "device_id": device_id,
            "timestamp": f"2025-04-21T{minute // 60:02d}:{minute % 60:02d}:00Z",
            "temperature": 105.0 if minute == spike_at else 50.0 + minute % 3,
        }
        for minute in minutes
    ]


@pytest.mark.slow
def test_crash_resumes_from_committed(kafka_bootstrap, redis_server, session_settings):
    from saodf.config import PROJECT_ROOT
    from saodf.stack.services import saodf_env

    topic = f"test.crash.{uuid.uuid4().hex[:8]}"
    group = f"test-{uuid.uuid4().hex}"
    device_id = f"crash-{uuid.uuid4().hex[:8]}"
    settings = session_settings.with_overrides(topic_raw=topic)
    _produce(settings, _crash_readings(device_id, range(200)))
    child = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", _CHILD, topic, group],
        cwd=PROJECT_ROOT,
        env={**os.environ, **saodf_env(settings)},
    )
    watcher = Consumer(consumer_config(settings, group))
    try:
        deadline = time.monotonic() + 60
        while _committed(watcher, topic) < 40 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        child.kill()
        child.wait(10)
    committed_at_crash = _committed(watcher, topic)
    logger.info("crash test: %d of 200 offsets committed at the kill", committed_at_crash)
    assert committed_at_crash >= 40

    _produce(settings, _crash_readings(device_id, range(200, 300), spike_at=299))
    options = ConsumerOptions(group_id=group, batch_size=20, detector=IN_PROCESS)
    options.detector_params = {"warmup": 20}
    stats = run(settings, options, max_messages=300 - committed_at_crash, max_seconds=90)
    anomalies = _collect(
        settings,
        settings.topic_anomalies,
        lambda records: any(r["message"]["device_id"] == device_id for r in records),
    )
    assert stats.consumed == 300 - committed_at_crash
    assert _committed(watcher, topic) == 300
    watcher.close()
    spikes = [r for r in anomalies if r["message"]["device_id"] == device_id]
    assert [r["message"]["temperature"] for r in spikes] == [105.0]


def test_unknown_detector_rejected(session_settings):
    from saodf.errors import ConfigError
    from streaming.anomaly_consumer import detector_client

    options = ConsumerOptions(detector="remote")
    with pytest.raises(ConfigError, match="detector='remote' is invalid; use one of"):
        detector_client(session_settings, options)
