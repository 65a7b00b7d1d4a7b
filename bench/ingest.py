"""Ingest benchmark: accepted readings per second over HTTP and MQTT, routing overhead, lake latency.

:func:`run` starts its own Tansu broker, moto_server and mosquitto on free ports of
127.0.0.1 under a temporary home, so it never touches a running stack, and stops them
by pid. Every phase is bounded in time. Figures depend on the machine and on whatever
else runs there.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from saodf.config import Settings
from saodf.lake import read_raw
from saodf.stack import process, services
from saodf.telemetry import format_timestamp

logger = logging.getLogger(__name__)

T0 = datetime(2025, 4, 20, tzinfo=timezone.utc)


def _readings(device: str, start: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "device_id": device,
            "timestamp": format_timestamp(T0 + timedelta(seconds=start + i)),
            "temperature": float(i % 50),
        }
        for i in range(count)
    ]


def _decision_overhead(router, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        router.decide()
    return (time.perf_counter() - started) / count * 1e6


def _http_rate(url: str, token: str, seconds: float, batch: int) -> dict[str, float]:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    sent = 0
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < deadline:
        body = orjson.dumps(_readings("bench-http", sent, batch))
        response = session.post(f"{url}/v1/telemetry", data=body, timeout=30)
        response.raise_for_status()
        sent += response.json()["accepted"]
    elapsed = time.monotonic() - started
    return {"readings": sent, "seconds": round(elapsed, 3), "per_second": round(sent / elapsed, 1)}


def _mqtt_rate(bridge, port: int, token: str, count: int, timeout: float) -> dict[str, float]:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-mqtt")
    client.username_pw_set("bench-mqtt", token)
    client.connect("127.0.0.1", port)
    client.loop_start()
    before = bridge.handled
    started = time.monotonic()
    try:
        for index, reading in enumerate(_readings("bench-mqtt", 0, count)):
            client.publish("devices/bench-mqtt/telemetry", orjson.dumps(reading), qos=1)
            if index % 100 == 0:
                client.loop_write()
        deadline = started + timeout
        while bridge.handled - before < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    elapsed = time.monotonic() - started
    handled = bridge.handled - before
    return {
        "readings": handled,
        "seconds": round(elapsed, 3),
        "per_second": round(handled / elapsed, 1),
    }


def _lake_latency(settings: Settings, url: str, token: str, rounds: int) -> dict[str, Any]:
    import requests

    from streaming.lake_writer import LakeWriter

    stop = threading.Event()
    writer = LakeWriter(settings, group_id=f"bench-{uuid.uuid4().hex[:8]}", batch_size=200)
    thread = threading.Thread(target=writer.run, kwargs={"stop_event": stop, "max_seconds": 300})
    thread.start()
    latencies: list[float] = []
    try:
        for number in range(rounds):
            readings = _readings("bench-lake", number * 1000, 20)
            started = time.monotonic()
            response = requests.post(
                f"{url}/v1/telemetry",
                data=orjson.dumps(readings),
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            response.raise_for_status()
            expected = (number + 1) * len(readings)
            deadline = started + 60
            while time.monotonic() < deadline:
                frame = read_raw(settings.lake_url, devices=["bench-lake"])
                if len(frame) >= expected:
                    latencies.append(time.monotonic() - started)
                    break
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
    return {
        "rounds": len(latencies),
        "median_s": round(statistics.median(latencies), 3) if latencies else None,
        "max_s": round(max(latencies), 3) if latencies else None,
    }


def _raw_produce_rate(settings: Settings, count: int) -> float:
    """Measure the readings per second that a plain Kafka producer sends to the broker."""
    from confluent_kafka import Producer

    from streaming.kafka import DeliveryTracker, ensure_topics, flush_or_raise, producer_config

    # A topic of its own, so the lake writer of the latency phase does not read these.
    topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [topic])
    producer = Producer(producer_config(settings, role="bench-raw"))
    tracker = DeliveryTracker()
    values = [orjson.dumps(reading) for reading in _readings("bench-raw", 0, count)]
    started = time.monotonic()
    for value in values:
        producer.produce(topic, value=value, key="bench-raw", on_delivery=tracker)
        producer.poll(0)
    flush_or_raise(producer, tracker)
    return round(count / (time.monotonic() - started), 1)


def _result(raw: dict[str, Any], mqtt_sent: int, lake_rounds: int, quick: bool) -> dict:
    """Arrange the measurements in the harness's figures, reference, ratios, goals and notes."""
    from saodf.bench import goal

    http, mqtt, lake = raw["http"], raw["mqtt"], raw["ingest_to_lake"]
    figures = {
        "router_decision_us": raw["router_decision_us"],
        "http_readings_per_s": http["per_second"],
        "http_readings": http["readings"],
        "mqtt_readings_per_s": mqtt["per_second"],
        "mqtt_readings": mqtt["readings"],
        "ingest_to_lake_median_s": lake["median_s"],
        "ingest_to_lake_max_s": lake["max_s"],
        "ingest_to_lake_rounds": lake["rounds"],
    }
    reference = {"raw_produce_readings_per_s": raw["raw_produce_per_second"]}
    ratios = {
        "http_over_raw_produce": round(
            http["per_second"] / reference["raw_produce_readings_per_s"], 4
        ),
        "mqtt_over_raw_produce": round(
            mqtt["per_second"] / reference["raw_produce_readings_per_s"], 4
        ),
    }
    goals = {
        "mqtt_readings_handled_share": goal(1.0, round(mqtt["readings"] / mqtt_sent, 4)),
        "ingest_to_lake_rounds_share": goal(1.0, round(lake["rounds"] / lake_rounds, 4)),
    }
    notes = [
        f"Input: {'quick' if quick else 'full'}; HTTP batches of 100 readings from one device "
        f"for {http['seconds']} s, {mqtt_sent} MQTT readings at QoS 1 from one device, "
        f"{lake_rounds} rounds of 20 readings from HTTP to the raw zone.",
        "Services: a private Tansu broker, moto_server and mosquitto on free 127.0.0.1 ports; "
        "the ingest gateway, MQTT bridge and lake writer run in the benchmark's process.",
        "Reference: a plain confluent-kafka producer sending the same readings to the same "
        "broker, without authentication, validation or routing.",
        "router_decision_us is the mean time of one Kafka-or-SQS routing decision.",
    ]
    return {
        "figures": figures,
        "reference": reference,
        "ratios": ratios,
        "goals": goals,
        "notes": notes,
    }


def run(settings: Settings, quick: bool) -> dict:
    """Measure the ingest path on private services and return the figures as a dict.

    ``settings`` gives the host and the AWS region; ports, home and lake are temporary.
    """
    from streaming.ingest_config import IngestConfig
    from streaming.ingest_gateway import IngestGateway
    from streaming.mqtt_bridge import MqttBridge
    from streaming.services import mosquitto_spec
    from streaming.tokens import create_device_token

    home = Path(tempfile.mkdtemp(prefix="saodf-bench-ingest-"))
    ports = {name: process.free_port() for name in settings.ports}
    bench = settings.with_overrides(
        home=home,
        ports=ports,
        kafka_bootstrap=f"{settings.host}:{ports['kafka']}",
        aws_endpoint_url=f"http://{settings.host}:{ports['moto']}",
        lake_url=(home / "lake").as_uri(),
    )
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    config = IngestConfig(http_port=process.free_port(), mqtt_port=process.free_port())
    http_token = create_device_token("bench-http", bench)
    lake_token = create_device_token("bench-lake", bench)
    mqtt_token = create_device_token("bench-mqtt", bench)
    # mosquitto_spec writes the password file, so it comes after the tokens.
    specs = [services.broker_spec(bench), services.moto_spec(bench), mosquitto_spec(bench, config)]
    result: dict[str, Any] = {}
    count = 500 if quick else 5000
    lake_rounds = 3 if quick else 10
    gateway = bridge = None
    try:
        for spec in specs:
            process.start(spec)
        gateway = IngestGateway(bench, config)
        gateway.start()
        result["raw_produce_per_second"] = _raw_produce_rate(bench, 20_000 if quick else 100_000)
        result["router_decision_us"] = round(_decision_overhead(gateway.router, 20_000), 3)
        result["http"] = _http_rate(gateway.url, http_token, 3.0 if quick else 15.0, 100)
        bridge = MqttBridge(bench, config)
        bridge.start()
        result["mqtt"] = _mqtt_rate(bridge, config.mqtt_port, mqtt_token, count, 60.0)
        result["ingest_to_lake"] = _lake_latency(bench, gateway.url, lake_token, lake_rounds)
    finally:
        if bridge is not None:
            bridge.stop()
        if gateway is not None:
            gateway.stop()
        for spec in reversed(specs):
            process.stop(spec)
    logger.info("ingest benchmark measurements: %s", result)
    return _result(result, count, lake_rounds, quick)
