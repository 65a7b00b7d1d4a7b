"""Benchmark of the real-time path: stream detector, gateway, cache-hit path, replay hit ratio.

Each measurement runs against a reference taken in the same run on the same machine:

1. Produce -> anomaly decision: a fleet's readings at ``STREAM_RATE`` msg/s through a real
   Tansu broker to ``streaming.anomaly_consumer`` in a child process, which scores them
   with detect_anomaly's code in process; against a bare produce -> consume round trip
   with the same producer, consumer configuration, poll loop and commits. Two more runs
   show the detector calling the gateway service over HTTP and the bare round trip with
   librdkafka's default ``fetch.wait.max.ms``.
2. ``forecast`` through the gateway on cache hits, p50/p99, against a bare HTTP round
   trip to a trivial ``http.server`` on 127.0.0.1 with the same client (figures only).
3. The cache-hit path of the ``forecast`` action (``actions.forecast.main`` in this process:
   pointer read, lookup script, JSON decode, reply) p50/p99 and requests per second,
   against a bare Redis GET of one forecast with the same client settings.
4. The hit ratio while replaying NAB and SKAB reading timestamps as forecast requests,
   with the cache monitor off and then on with its default options. Simulated time runs
   ``TIME_SCALE`` times faster than real time, and every TTL and monitor time is divided
   by the same factor.

redis-server, the broker and the gateway service are started on free ports and stopped
by pid. Measurement 2's gateway and the trivial server run in this process.
``python -m bench.realtime stream-child ...`` is the consumer child of measurement 1.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import requests

from actions.cache import (
    DYNAMIC,
    DYNAMIC_TTL_SECONDS,
    STABLE,
    STABLE_TTL_SECONDS,
    DevicePointer,
    ForecastCache,
    read_jsonl_line,
    redis_client,
    volatility_class,
)
from actions.detect_anomaly import BAND_REFRESH_SECONDS
from actions.redis_acl import FORECAST, MONITOR, READER, WRITER
from saodf import bench as harness
from saodf.config import Settings, reset_settings

HORIZON = 12
# Simulated seconds per real second in the replay. 300 s / 150 = 2 s keeps the dynamic
# TTL at whole seconds, which is Redis's TTL resolution for EXPIRE.
TIME_SCALE = 150.0
# SKAB reads once a second; one request per this many readings keeps the replay bounded.
SKAB_REQUEST_EVERY = 10
GOAL_HIT_RATIO = 0.99


STREAM_RATE = 2000.0
STREAM_DEVICES = 2000
SENT_HEADER = "bench-sent-ns"
WARMUP_END_HEADER = "bench-warmup-end"
# Messages produced before the measured ones, while the consumer joins its group.
STREAM_WARMUP_SECONDS = 3.0
# librdkafka's default fetch.wait.max.ms, which Tansu waits out on every fetch even when
# records are waiting. One reference run uses it to show what the shorter wait of
# streaming.kafka.latency_consumer_config gives.
LIBRDKAFKA_FETCH_WAIT_MS = 500
SKAB_COLUMNS = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


def fleet_readings(data_dir: Path, devices: int, count: int) -> list[tuple[bytes, bytes]]:
    """Return ``count`` (key, payload) telemetry messages of a fleet reading once a second.

    Device ``n`` replays SKAB valve1 file ``n mod 16`` from row ``7 * n`` on, with
    timestamps one second apart; the messages come in time order, one per device per second.
    """
    from saodf.telemetry import encode_message

    files = sorted((data_dir / "skab" / "data" / "valve1").glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no SKAB valve1 files under {data_dir}; set SAODF_DATA_DIR")
    tables = []
    for path in files:
        frame = pd.read_csv(path, sep=";")
        tables.append(frame[list(SKAB_COLUMNS)].to_numpy(dtype=float).tolist())
    names = [column.lower().replace(" ", "_") for column in SKAB_COLUMNS]
    start = pd.Timestamp("2025-04-20T00:00:00Z")
    messages = []
    for index in range(count):
        second, device = divmod(index, devices)
        table = tables[device % len(tables)]
        row = table[(7 * device + second) % len(table)]
        device_id = f"fleet-{device:05d}"
        reading = {
            "device_id": device_id,
            "timestamp": f"{start + pd.Timedelta(seconds=second):%Y-%m-%dT%H:%M:%SZ}",
        }
        reading.update(zip(names, row, strict=True))
        messages.append((device_id.encode(), encode_message(reading)))
    return messages


def fill_fleet_bands(settings: Settings, data_dir: Path, devices: int) -> int:
    """Cache a temperature forecast band for every fleet device; return the count.

    The detector then reads and checks a band for each reading, as it does for devices
    with a champion forecast. Each device's band runs from the 1st to the 99th percentile
    of its SKAB file's temperature, at 1-minute steps for two hours from the fleet's start.
    """
    files = sorted((data_dir / "skab" / "data" / "valve1").glob("*.csv"))
    bands = []
    for path in files:
        temperature = pd.read_csv(path, sep=";")["Temperature"]
        bands.append((float(temperature.quantile(0.01)), float(temperature.quantile(0.99))))
    cache = ForecastCache(redis_client(settings, role=WRITER))
    steps = 120
    for device in range(devices):
        low, high = bands[device % len(bands)]
        pointer = DevicePointer(
            device_id=f"fleet-{device:05d}",
            model_name="bench-band",
            model_version="1",
            forecast_start="2025-04-20T00:00:00+00:00",
            freq="1min",
            horizon=steps,
            group="bench",
            context_url="file:///unused.jsonl",
            context_line=device,
            volatility="stable",
            metric="temperature",
        )
        middle = (low + high) / 2
        quantiles = {"0.1": [low] * steps, "0.5": [middle] * steps, "0.9": [high] * steps}
        cache.put(pointer, {"mean": [middle] * steps, "quantiles": quantiles})
    return devices


def _produce_paced(
    settings: Settings,
    topic: str,
    messages: list[tuple[bytes, bytes]],
    rate: float,
    warmup: int,
    ready: Path,
    ready_timeout: float,
    consumer_alive: Callable[[], bool],
) -> float:
    """Produce ``messages`` at ``rate`` per second and return the rate of the measured ones.

    The first ``warmup`` messages carry no send time; the last of them carries
    ``WARMUP_END_HEADER``. The measured ones follow once ``ready`` exists, which the
    consumer writes when it reaches that message, so they never queue behind warm-up ones.
    """
    from confluent_kafka import Producer

    from streaming.kafka import flush_or_raise, producer_config

    producer = Producer(producer_config(settings, role="bench-producer"))
    index = 0
    base = 0
    phase_started = time.monotonic()
    measuring = False
    while index < len(messages):
        if index == warmup and not measuring:
            producer.flush(10)
            deadline = time.monotonic() + ready_timeout
            while not ready.exists():
                if not consumer_alive():
                    raise harness.BenchmarkError(f"the consumer of {topic} ended early")
                if time.monotonic() > deadline:
                    raise harness.BenchmarkError(
                        f"the consumer of {topic} did not reach the warm-up's end within "
                        f"{ready_timeout:.0f} s"
                    )
                time.sleep(0.05)
            measuring = True
            base = warmup
            phase_started = time.monotonic()
        limit = len(messages) if measuring else warmup
        due = min(limit, base + int((time.monotonic() - phase_started) * rate) + 1)
        while index < due:
            key, value = messages[index]
            if index >= warmup:
                headers = [(SENT_HEADER, b"%d" % time.monotonic_ns())]
            elif index == warmup - 1:
                headers = [(WARMUP_END_HEADER, b"1")]
            else:
                headers = None
            producer.produce(topic, value=value, key=key, headers=headers)
            index += 1
        producer.poll(0)
        time.sleep(0.001)
    elapsed = time.monotonic() - phase_started
    flush_or_raise(producer)
    return (len(messages) - warmup) / elapsed if elapsed > 0 else float("nan")


def _header(message: Any, name: str) -> bytes | None:
    for key, value in message.headers() or ():
        if key == name:
            return value
    return None


class _LatencyLog:
    """Latencies of measured messages; writes ``ready`` when the warm-up's end arrives."""

    def __init__(self, ready: Path, expected: int):
        self.ready = ready
        self.expected = expected
        self.samples_ns: list[int] = []
        self.done = threading.Event()

    def record(self, messages: list[Any]) -> None:
        now = time.monotonic_ns()
        for message in messages:
            sent = _header(message, SENT_HEADER)
            if sent is not None:
                self.samples_ns.append(now - int(sent))
            elif _header(message, WARMUP_END_HEADER) is not None:
                self.ready.touch()
        if len(self.samples_ns) >= self.expected:
            self.done.set()


def _stream_child(argv: list[str]) -> int:
    """Consume one measured stream in this process and write its latencies as JSON.

    ``argv``: mode (``detector`` or ``bare``), result path, ready path, expected count,
    time limit in seconds, consumer group id, ``fetch.wait.max.ms`` (0: the shipped
    configuration), topic, detector (``in_process`` or ``gateway``).
    """
    from confluent_kafka import Consumer, KafkaError

    from saodf.config import get_settings
    from saodf.log import configure_logging
    from streaming.anomaly_consumer import ConsumerOptions, OffsetCommitter
    from streaming.anomaly_consumer import run as run_detector
    from streaming.kafka import latency_consumer_config, poll_batch

    mode, result_path, ready, expected, limit, group, fetch_wait_ms, topic, detector = argv
    configure_logging(os.environ.get("SAODF_LOG_LEVEL", "WARNING"))
    settings = get_settings().with_overrides(topic_raw=topic)
    overrides = {"fetch.wait.max.ms": int(fetch_wait_ms)} if int(fetch_wait_ms) else {}
    log = _LatencyLog(Path(ready), int(expected))
    options = ConsumerOptions(group_id=group, detector=detector, kafka_overrides=overrides)
    started = time.monotonic()
    if mode == "detector":
        options.on_decisions = lambda messages, _results: log.record(messages)
        stats = run_detector(settings, options, stop=log.done, max_seconds=float(limit))
        counts = {
            "consumed": stats.consumed,
            "anomalies": stats.anomalies,
            "dead_lettered": stats.dead_lettered,
            "batches": stats.batches,
        }
    else:
        # The detector's loop without the detection: same consumer configuration, batch
        # size, poll and offset commits.
        consumer = Consumer(latency_consumer_config(settings, group, **overrides))
        consumer.subscribe([topic])
        committer = OffsetCommitter(consumer, options.commit_interval)
        batches = consumed = 0
        try:
            while not log.done.is_set() and time.monotonic() - started < float(limit):
                batch = [
                    message
                    for message in poll_batch(consumer, options.batch_size, options.poll_timeout)
                    if message.error() is None
                    or message.error().code() != KafkaError._PARTITION_EOF
                ]
                if not batch:
                    continue
                log.record(batch)
                committer.add(batch)
                batches += 1
                consumed += len(batch)
            committer.commit(asynchronous=False)
        finally:
            consumer.close()
        counts = {"consumed": consumed, "batches": batches}
    Path(result_path).write_text(
        json.dumps({"samples_ns": log.samples_ns, **counts}), encoding="utf-8"
    )
    return 0


def _stream_phase(
    settings: Settings,
    mode: str,
    messages: list[tuple[bytes, bytes]],
    warmup: int,
    work: Path,
    fetch_wait_ms: int = 0,
    detector: str = "in_process",
) -> dict[str, Any]:
    """Run one consumer child (detector or bare) while producing ``messages`` at the rate."""
    import subprocess
    import sys
    import uuid

    from saodf.config import PROJECT_ROOT
    from saodf.stack.services import saodf_env
    from streaming.kafka import ensure_topics

    work.mkdir(parents=True, exist_ok=True)
    name = f"{mode}-{detector}-{fetch_wait_ms}"
    result_path, ready = work / f"{name}.json", work / f"{name}.ready"
    expected = len(messages) - warmup
    limit = expected / STREAM_RATE + 90
    run_id = uuid.uuid4().hex[:8]
    group = f"saodf-bench-{name}-{run_id}"
    # A topic of its own per phase: a new group reads from the start of its topic.
    topic = f"saodf.bench.{name}.{run_id}"
    ensure_topics(settings, [topic])
    argv = [sys.executable, "-m", "bench.realtime", "stream-child", mode, str(result_path)]
    argv += [str(ready), str(expected), f"{limit:.0f}", group, str(fetch_wait_ms), topic]
    argv.append(detector)
    child = subprocess.Popen(  # noqa: S603
        argv, cwd=PROJECT_ROOT, env={**os.environ, **saodf_env(settings)}
    )
    try:
        produce_rate = _produce_paced(
            settings,
            topic,
            messages,
            STREAM_RATE,
            warmup,
            ready,
            ready_timeout=120,
            consumer_alive=lambda: child.poll() is None,
        )
        code = child.wait(timeout=limit + 30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    if code != 0 or not result_path.is_file():
        raise harness.BenchmarkError(f"the {mode} consumer failed with exit code {code}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    samples = [value / 1e9 for value in result.pop("samples_ns")]
    if not samples:
        raise harness.BenchmarkError(f"the {mode} consumer timed no measured message")
    return {
        **_latency_figures(samples),
        "received": len(samples),
        "expected": expected,
        "produce_rate": round(produce_rate, 1),
        **result,
    }


# Stream runs: (label, mode, detector, fetch.wait.max.ms with 0 for the shipped configuration).
# The first two are the measurement and its reference; the others show what the in-process
# detector and the short fetch wait each give.
STREAM_RUNS = (
    ("bare", "bare", "in_process", 0),
    ("detector", "detector", "in_process", 0),
    ("gateway_detector", "detector", "gateway", 0),
    ("bare_fetch_wait_500", "bare", "in_process", LIBRDKAFKA_FETCH_WAIT_MS),
)


def measure_stream(settings: Settings, seconds: float, devices: int = 2000) -> dict[str, Any]:
    """Time produce -> detector decision and a bare produce -> consume at ``STREAM_RATE``.

    Runs each entry of ``STREAM_RUNS`` in turn on a topic of its own.
    """
    from streaming.kafka import ensure_topics

    ensure_topics(settings, [settings.topic_anomalies, settings.topic_dlq])
    fill_fleet_bands(settings, settings.data_dir, devices)
    warmup = int(STREAM_WARMUP_SECONDS * STREAM_RATE)
    messages = fleet_readings(settings.data_dir, devices, warmup + int(seconds * STREAM_RATE))
    work = settings.home / "bench-stream"
    runs: dict[str, Any] = {"devices": devices}
    for label, mode, detector, fetch_wait_ms in STREAM_RUNS:
        runs[label] = _stream_phase(settings, mode, messages, warmup, work, fetch_wait_ms, detector)
    return runs


@dataclass(frozen=True)
class Sizes:
    """Request counts and the replay's simulated length."""

    gateway_requests: int
    hit_path_requests: int
    replay_seconds: float
    stream_seconds: float


QUICK = Sizes(
    gateway_requests=300, hit_path_requests=3000, replay_seconds=1800.0, stream_seconds=5.0
)
FULL = Sizes(
    gateway_requests=2000, hit_path_requests=20000, replay_seconds=9000.0, stream_seconds=60.0
)


@dataclass(frozen=True)
class Series:
    """One replayed device: its id, its values and its reading times in seconds from its start."""

    device_id: str
    values: list[float]
    offsets: list[float]


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def _latency_figures(samples_s: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(samples_s, 50) * 1000, 4),
        "p99_ms": round(_percentile(samples_s, 99) * 1000, 4),
        "mean_ms": round(statistics.fmean(samples_s) * 1000, 4),
    }


def load_series(data_dir: Path, span_seconds: float) -> list[Series]:
    """Read NAB and SKAB series as devices, keeping the readings in the first ``span_seconds``."""
    series: list[Series] = []
    for path in sorted((data_dir / "nab" / "data").glob("*/*.csv")):
        frame = pd.read_csv(path, parse_dates=["timestamp"])
        series.append(
            _series(f"nab-{path.stem}", frame["timestamp"], frame["value"], span_seconds, 1)
        )
    for path in sorted((data_dir / "skab" / "data").glob("*/*.csv")):
        frame = pd.read_csv(path, sep=";", parse_dates=["datetime"])
        device_id = f"skab-{path.parent.name}-{path.stem}"
        series.append(
            _series(
                device_id,
                frame["datetime"],
                frame["Accelerometer1RMS"],
                span_seconds,
                SKAB_REQUEST_EVERY,
            )
        )
    return [item for item in series if item.offsets]


def _series(device_id: str, times: pd.Series, values: pd.Series, span: float, every: int) -> Series:
    offsets = (times - times.iloc[0]).dt.total_seconds()
    keep = offsets < span
    return Series(
        device_id=device_id.replace("_", "-")[:128],
        values=[float(v) for v in values[keep]],
        offsets=[float(o) for o in offsets[keep]][::every],
    )


def _naive_forecast(record: dict[str, Any]) -> dict[str, Any]:
    """Return a last-value forecast with a ±5% band: a stand-in for the model on a miss."""
    last = next((float(v) for v in reversed(record["target"]) if v is not None), 0.0)
    spread = abs(last) * 0.05 + 1e-6
    return {
        "mean": [last] * HORIZON,
        "quantiles": {
            "0.1": [last - spread] * HORIZON,
            "0.5": [last] * HORIZON,
            "0.9": [last + spread] * HORIZON,
        },
    }


def populate(cache: ForecastCache, devices: list[Series], folder: Path) -> dict[str, str]:
    """Write a context channel and fill pointer and forecast of every device; return classes."""
    folder.mkdir(parents=True, exist_ok=True)
    channel = folder / "context.jsonl"
    with channel.open("w", encoding="utf-8") as handle:
        for item in devices:
            record = {"start": "2025-04-20 00:00:00", "target": item.values[:120]}
            handle.write(json.dumps(record) + "\n")
    classes = {}
    for line, item in enumerate(devices):
        volatility = volatility_class(item.values[:120])
        classes[item.device_id] = volatility
        pointer = DevicePointer(
            device_id=item.device_id,
            model_name="bench-naive",
            model_version="1",
            forecast_start="2025-04-20T00:00:00+00:00",
            freq="5min",
            horizon=HORIZON,
            group="bench",
            context_url=channel.as_uri(),
            context_line=line,
            volatility=volatility,
        )
        cache.put(pointer, _naive_forecast({"target": item.values[:120]}))
    return classes


@contextlib.contextmanager
def _action_environment(settings: Settings) -> Iterator[None]:
    """Point this process's settings, as the actions read them, at the benchmark's services."""
    from saodf.stack.services import saodf_env

    saved = dict(os.environ)
    os.environ.update(saodf_env(settings))
    reset_settings()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_settings()


class _TrivialHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: headers and body go out in separate writes, and Nagle's algorithm
    # with the client's delayed ACK would hold the body for about 40 ms on keep-alive.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"ok": true}'
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _time_requests(
    session: requests.Session, url: str, bodies: list[dict], **kwargs
) -> list[float]:
    samples = []
    for body in bodies:
        started = time.perf_counter()
        reply = session.post(url, json=body, timeout=30, **kwargs)
        samples.append(time.perf_counter() - started)
        if reply.status_code != 200:
            raise harness.BenchmarkError(
                f"{url} returned HTTP {reply.status_code}: {reply.text[:200]}"
            )
    return samples


def measure_gateway(settings: Settings, device_ids: list[str], count: int) -> dict[str, Any]:
    """Time blocking forecast calls through the gateway and POSTs to a trivial server."""
    from actions.gateway import DEFAULT_ACTIONS, serve
    from saodf.secrets import gateway_keys

    rng = random.Random(1)
    bodies = [{"device_id": rng.choice(device_ids)} for _ in range(count)]
    trivial = ThreadingHTTPServer((settings.host, 0), _TrivialHandler)
    trivial.daemon_threads = True
    thread = threading.Thread(target=trivial.serve_forever, daemon=True)
    thread.start()
    forecast_spec = [spec for spec in DEFAULT_ACTIONS if spec.name == "forecast"]
    gateway = serve(settings, actions=forecast_spec, port=0)
    try:
        user, key = gateway_keys(settings)[settings.gateway_namespace].split(":", 1)
        url = f"{gateway.url}/api/v1/namespaces/_/actions/forecast"
        params = {"blocking": "true", "result": "true"}
        bare_url = f"http://{settings.host}:{trivial.server_address[1]}/"
        with requests.Session() as session:
            session.auth = (user, key)
            _time_requests(session, url, bodies[:20], params=params)
            started = time.perf_counter()
            gateway_samples = _time_requests(session, url, bodies, params=params)
            gateway_seconds = time.perf_counter() - started
        with requests.Session() as session:
            _time_requests(session, bare_url, bodies[:20])
            bare_samples = _time_requests(session, bare_url, bodies)
    finally:
        gateway.close()
        trivial.shutdown()
        trivial.server_close()
    return {
        "gateway": _latency_figures(gateway_samples),
        "gateway_req_per_s": round(count / gateway_seconds, 1),
        "bare": _latency_figures(bare_samples),
    }


def measure_hit_path(settings: Settings, device_ids: list[str], count: int) -> dict[str, Any]:
    """Time ``actions.forecast.main`` on hits and a bare GET, both sequential in this thread."""
    from actions import forecast as forecast_action

    rng = random.Random(2)
    requests_mix = [rng.choice(device_ids) for _ in range(count)]
    client = redis_client(settings, role=READER)
    cache = ForecastCache(client)
    keys = {device_id: cache.pointer(device_id).forecast_key for device_id in device_ids}
    bare = []
    for device_id in requests_mix[:200]:
        client.get(keys[device_id])
    for device_id in requests_mix:
        started = time.perf_counter()
        client.get(keys[device_id])
        bare.append(time.perf_counter() - started)

    with _action_environment(settings):
        forecast_action.reset_cache()
        for device_id in requests_mix[:200]:
            forecast_action.main({"device_id": device_id})
        hit_path = []
        outcomes: dict[str, int] = {}
        started_all = time.perf_counter()
        for device_id in requests_mix:
            started = time.perf_counter()
            reply = forecast_action.main({"device_id": device_id})
            hit_path.append(time.perf_counter() - started)
            outcome = reply.get("cache", "error")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        elapsed = time.perf_counter() - started_all
        forecast_action.reset_cache()
    return {
        "hit_path": _latency_figures(hit_path),
        "hit_path_req_per_s": round(count / elapsed, 1),
        "bare_get": _latency_figures(bare),
        "outcomes": outcomes,
    }


def replay(
    settings: Settings,
    devices: list[Series],
    span: float,
    monitor_on: bool,
    folder: Path,
) -> dict[str, Any]:
    """Replay the reading timestamps as forecast lookups; recompute and cache on each miss.

    With ``monitor_on`` the hit monitor runs beside the replay with its default options,
    every time in them divided by ``TIME_SCALE``.
    """
    from actions.monitor import HitMonitor, MonitorOptions, store_forecast
    from saodf.tenants import admin_redis_client

    scaled_dynamic = max(1, round(DYNAMIC_TTL_SECONDS / TIME_SCALE))
    scaled_stable = max(1, round(STABLE_TTL_SECONDS / TIME_SCALE))
    # The bench resets the monitor's state in its own Redis as the admin user, because the
    # reset is no service's work.
    admin_redis_client(settings).delete("saodf:cache:ttl", "saodf:cache:prefetch")
    writer = ForecastCache(
        redis_client(settings, role=WRITER), dynamic_ttl=scaled_dynamic, stable_ttl=scaled_stable
    )
    classes = populate(writer, devices, folder)
    # Lookups and recomputes on a miss run as the forecast action does.
    cache = ForecastCache(
        redis_client(settings, role=FORECAST), dynamic_ttl=scaled_dynamic, stable_ttl=scaled_stable
    )

    def recompute(target_cache: ForecastCache, pointer: DevicePointer) -> None:
        record = read_jsonl_line(pointer.context_url, pointer.context_line)
        target_cache.put(pointer, _naive_forecast(record))

    def monitor_recompute(target_cache: ForecastCache, pointer: DevicePointer) -> bool:
        # As model_forecaster: an unchanged pointer is left as it is.
        record = read_jsonl_line(pointer.context_url, pointer.context_line)
        return store_forecast(target_cache, pointer, pointer, _naive_forecast(record))

    schedule = sorted(
        (offset, item.device_id) for item in devices for offset in item.offsets if offset < span
    )
    stop = threading.Event()
    monitor_thread = None
    totals = dict.fromkeys(
        ("ticks", "below_threshold_ticks", "refreshed_ahead", "refreshed_held", "refresh_failed"),
        0,
    )
    if monitor_on:
        defaults = MonitorOptions()
        options = MonitorOptions(
            window_seconds=defaults.window_seconds / TIME_SCALE,
            repeat_window_seconds=defaults.repeat_window_seconds / TIME_SCALE,
            interval_seconds=defaults.interval_seconds / TIME_SCALE,
            refresh_margin_seconds=defaults.refresh_margin_seconds / TIME_SCALE,
            prefetch_hold_seconds=defaults.prefetch_hold_seconds / TIME_SCALE,
            pointer_refresh_seconds=defaults.pointer_refresh_seconds / TIME_SCALE,
            max_stable_ttl=max(scaled_stable, round(defaults.max_stable_ttl / TIME_SCALE)),
        )
        monitor_cache = ForecastCache(
            redis_client(settings, role=MONITOR),
            dynamic_ttl=scaled_dynamic,
            stable_ttl=scaled_stable,
        )
        monitor = HitMonitor(monitor_cache, options, monitor_recompute)
        monitor_thread = threading.Thread(
            target=_run_monitor, args=(monitor, stop, totals), daemon=True
        )
        monitor_thread.start()
    hits = misses = first_misses = 0
    requested: set[str] = set()
    missed_by_device: dict[str, int] = {}
    max_lag = 0.0
    started = time.monotonic()
    try:
        for offset, device_id in schedule:
            due = started + offset / TIME_SCALE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                max_lag = max(max_lag, -delay)
            pointer, forecast = cache.lookup(device_id)
            first = device_id not in requested
            requested.add(device_id)
            if forecast is None:
                misses += 1
                first_misses += first
                missed_by_device[device_id] = missed_by_device.get(device_id, 0) + 1
                if pointer is not None:
                    recompute(cache, pointer)
            else:
                hits += 1
    finally:
        stop.set()
        if monitor_thread is not None:
            monitor_thread.join(10)
    later = hits + misses - len(requested)
    return {
        "requests": hits + misses,
        "hits": hits,
        "misses": misses,
        "hit_ratio": hits / (hits + misses) if hits + misses else float("nan"),
        # A device's first request misses only if its entry expired before it: a cold start.
        "first_request_misses": first_misses,
        "hit_ratio_after_first_request": (
            (later - (misses - first_misses)) / later if later else float("nan")
        ),
        "max_lag_s": round(max_lag, 3),
        "dynamic_devices": sum(1 for v in classes.values() if v == DYNAMIC),
        "stable_devices": sum(1 for v in classes.values() if v == STABLE),
        "stable_ttl_end_s": cache.ttl_policy(refresh=True)[STABLE],
        "monitor": totals,
        "most_missed": dict(sorted(missed_by_device.items(), key=lambda kv: -kv[1])[:5]),
    }


def _run_monitor(monitor: Any, stop: threading.Event, totals: dict[str, int]) -> None:
    """Tick like ``HitMonitor.run`` until ``stop`` is set, adding up what the ticks did."""
    from actions.monitor import BELOW_THRESHOLD

    while not stop.wait(monitor.options.interval_seconds):
        report = monitor.tick()
        totals["ticks"] += 1
        totals["below_threshold_ticks"] += report.state == BELOW_THRESHOLD
        totals["refreshed_ahead"] += len(report.refreshed_ahead)
        totals["refreshed_held"] += len(report.refreshed)
        totals["refresh_failed"] += len(report.refresh_failed)


def _stream_figures(runs: dict[str, Any]) -> tuple[dict, dict, dict, dict]:
    bare, detector, gateway = runs["bare"], runs["detector"], runs["gateway_detector"]
    slow_fetch = runs["bare_fetch_wait_500"]
    figures = {
        "stream_decision_p50_ms": detector["p50_ms"],
        "stream_decision_p99_ms": detector["p99_ms"],
        "stream_gateway_decision_p50_ms": gateway["p50_ms"],
        "stream_gateway_decision_p99_ms": gateway["p99_ms"],
    }
    reference = {
        "stream_bare_roundtrip_p50_ms": bare["p50_ms"],
        "stream_bare_roundtrip_p99_ms": bare["p99_ms"],
        "stream_fetch_wait_500_bare_roundtrip_p50_ms": slow_fetch["p50_ms"],
        "stream_fetch_wait_500_bare_roundtrip_p99_ms": slow_fetch["p99_ms"],
    }
    ratio = round(detector["p99_ms"] / bare["p99_ms"], 2)
    ratios = {
        "stream_decision_p99_over_bare_p99": ratio,
        "stream_gateway_decision_p99_over_bare_p99": round(gateway["p99_ms"] / bare["p99_ms"], 2),
    }
    goals = {
        "stream_decision_p99_over_bare_p99": harness.goal(2.0, ratio, "min"),
        "stream_decision_p99_ms": harness.goal(50.0, detector["p99_ms"], "min"),
    }
    return figures, reference, ratios, goals


def run(settings: Settings, quick: bool) -> dict:
    """Measure the stream detector, gateway, cache-hit path and replay hit ratio on 127.0.0.1."""
    sizes = QUICK if quick else FULL
    load = os.getloadavg()[0]
    devices = load_series(settings.data_dir, sizes.replay_seconds)
    if not devices:
        raise FileNotFoundError(
            f"no NAB or SKAB files under {settings.data_dir}; set SAODF_DATA_DIR"
        )
    with harness.local_services(["redis", "broker", "gateway"], settings) as stack:
        stream = measure_stream(stack, sizes.stream_seconds, STREAM_DEVICES)
    load_after_stream = os.getloadavg()[0]
    with harness.local_services(["redis"], settings) as stack:
        cache = ForecastCache(redis_client(stack, role=WRITER))
        populate(cache, devices, stack.home / "bench-context")
        device_ids = [item.device_id for item in devices]
        gateway = measure_gateway(stack, device_ids, sizes.gateway_requests)
        hit_path = measure_hit_path(stack, device_ids, sizes.hit_path_requests)
        span = sizes.replay_seconds
        without_monitor = replay(stack, devices, span, False, stack.home / "r0")
        with_monitor = replay(stack, devices, span, True, stack.home / "r1")

    hit_p99 = hit_path["hit_path"]["p99_ms"]
    figures, reference, ratios, goals = _stream_figures(stream)
    figures.update(
        {
            "gateway_forecast_p50_ms": gateway["gateway"]["p50_ms"],
            "gateway_forecast_p99_ms": gateway["gateway"]["p99_ms"],
            "gateway_forecast_req_per_s": gateway["gateway_req_per_s"],
            "hit_path_p50_ms": hit_path["hit_path"]["p50_ms"],
            "hit_path_p99_ms": hit_p99,
            "hit_path_req_per_s": hit_path["hit_path_req_per_s"],
            "replay_requests": with_monitor["requests"],
            "replay_hit_ratio_with_monitor": round(with_monitor["hit_ratio"], 5),
            "replay_hit_ratio_with_monitor_after_first_request": round(
                with_monitor["hit_ratio_after_first_request"], 5
            ),
            "replay_first_request_misses_with_monitor": with_monitor["first_request_misses"],
            "replay_hit_ratio_without_monitor": round(without_monitor["hit_ratio"], 5),
            "replay_refreshed_ahead": with_monitor["monitor"]["refreshed_ahead"],
            "replay_max_lag_with_monitor_s": with_monitor["max_lag_s"],
            "devices": len(devices),
        }
    )
    reference.update(
        {
            "bare_http_p50_ms": gateway["bare"]["p50_ms"],
            "bare_http_p99_ms": gateway["bare"]["p99_ms"],
            "bare_get_p50_ms": hit_path["bare_get"]["p50_ms"],
            "bare_get_p99_ms": hit_path["bare_get"]["p99_ms"],
        }
    )
    ratios["gateway_p99_over_bare_http_p99"] = round(
        gateway["gateway"]["p99_ms"] / gateway["bare"]["p99_ms"], 2
    )
    ratios["hit_path_p99_over_bare_get_p99"] = round(hit_p99 / hit_path["bare_get"]["p99_ms"], 2)
    goals.update(
        {
            "hit_path_p99_over_bare_get_p99": harness.goal(
                10.0, ratios["hit_path_p99_over_bare_get_p99"], "min"
            ),
            "hit_path_req_per_s": harness.goal(1000.0, hit_path["hit_path_req_per_s"], "max"),
            "replay_hit_ratio_with_monitor": harness.goal(
                GOAL_HIT_RATIO, figures["replay_hit_ratio_with_monitor"], "max"
            ),
        }
    )
    from streaming.anomaly_consumer import ConsumerOptions

    runs_text = "; ".join(f"{label} {stream[label]}" for label, *_ in STREAM_RUNS)
    notes = [
        f"(1) stream: a fleet of {STREAM_DEVICES} devices reading once a second (SKAB valve1 "
        f"rows, 8 metrics each) produced at {STREAM_RATE:g} msg/s for {sizes.stream_seconds:g} s "
        f"after {STREAM_WARMUP_SECONDS:g} s of warm-up, with streaming.kafka.producer_config "
        "(acks=all, idempotence, linger.ms=5), one topic of one partition per run on one "
        "Tansu broker. Every device has a cached temperature forecast band (fill_fleet_bands), "
        "so the detector also checks each reading against its band, reusing bands for "
        f"{BAND_REFRESH_SECONDS:g} s. Latency: from just before the producer's produce() call (a "
        "monotonic-clock header) to the moment the detector process has detect_anomaly's "
        "result for the reading, before anomalies are produced and offsets are committed "
        "(streaming.anomaly_consumer.run in a child process with the service command's "
        "defaults: the in-process detector scoring in redis-server, "
        "streaming.kafka.latency_consumer_config, poll_batch with batch size 500, "
        f"asynchronous commits every {ConsumerOptions().commit_interval:g} s). Reference: "
        "the same messages, producer, consumer configuration, poll loop and commits in a "
        "child process that only consumes; latency to the return of poll_batch",
        "(1) gateway_detector: the detector calling the gateway service's detect_anomaly over "
        "HTTP (one runtime process) instead of in process. bare_fetch_wait_500: the "
        f"reference with librdkafka's default fetch.wait.max.ms={LIBRDKAFKA_FETCH_WAIT_MS}, "
        "which Tansu waits out on every fetch. Runs: " + runs_text,
        "(gateway) "
        f"{sizes.gateway_requests} sequential blocking forecast calls (result=true) on cache "
        "hits through an in-process gateway with one runtime process, keep-alive requests "
        "session; reference: the same client POSTing to a trivial http.server on 127.0.0.1",
        f"(2) {sizes.hit_path_requests} sequential actions.forecast.main calls on hits in this "
        "process (two Redis round trips: pointer HGETALL, lookup script), outcomes "
        f"{hit_path['outcomes']}; reference: a bare GET of one forecast with the same client",
        f"(3) {len(devices)} devices: NAB series (5 min and hourly readings) and SKAB files "
        f"(1 s readings, one request per {SKAB_REQUEST_EVERY}); "
        f"{without_monitor['dynamic_devices']} dynamic, {without_monitor['stable_devices']} "
        "stable by the coefficient of variation of their first 120 values. Replay of "
        f"{sizes.replay_seconds:.0f} simulated seconds at {TIME_SCALE:g}x: the TTLs (dynamic "
        "300 s, stable 3600 s) and every time of the monitor's default options (threshold "
        "0.94) are divided by that factor. All devices are filled before the replay. A miss "
        "recomputes a last-value forecast from the stored context and caches it, standing "
        "in for the champion model, so model latency is excluded; the monitor refreshes "
        "with the same stand-in. Without the monitor most misses are devices read about "
        "once per TTL (NAB every 300 s against a 300 s dynamic TTL, the hourly series "
        "against 3600 s), whose entry expires just before each read; the monitor's "
        "refresh-ahead of requested devices removes them. Runs: without the monitor "
        f"{without_monitor}; with the monitor {with_monitor}",
        f"all services on 127.0.0.1; 1-minute load average {load:.1f} at the start and "
        f"{load_after_stream:.1f} after the stream runs, on {os.cpu_count()} CPUs",
    ]
    return {
        "figures": figures,
        "reference": reference,
        "ratios": ratios,
        "goals": goals,
        "notes": notes,
    }


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["stream-child"]:
        raise SystemExit(
            "usage: python -m bench.realtime stream-child MODE RESULT READY N LIMIT GROUP "
            "FETCH_WAIT_MS TOPIC DETECTOR"
        )
    raise SystemExit(_stream_child(sys.argv[2:]))
