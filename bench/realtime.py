"""Benchmark of the real-time path: gateway latency, cache-hit path, hit ratio under a replay.

Three measurements, each against a reference taken in the same run on the same machine:

1. ``forecast`` through the gateway (HTTP, basic auth, audit log, runtime process, Redis)
   on cache hits, p50/p99, against a bare HTTP round trip to a trivial ``http.server`` on
   127.0.0.1 with the same client.
2. The cache-hit path of the ``forecast`` action (``actions.forecast.main`` in this process:
   pointer read, lookup script, JSON decode, reply) p50/p99 and requests per second,
   against a bare Redis GET of one forecast with the same client settings.
3. The hit ratio while replaying NAB and SKAB reading timestamps as forecast requests,
   with the cache monitor off and then on. Simulated time runs ``TIME_SCALE`` times faster
   than real time, and every TTL and monitor interval is divided by the same factor.

Only redis-server is started (on a free port); the gateway and the trivial server run in
this process on free ports.
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
from collections.abc import Iterator
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
from saodf import bench as harness
from saodf.config import Settings, reset_settings

HORIZON = 12
# Simulated seconds per real second in the replay. 300 s / 150 = 2 s keeps the dynamic
# TTL at whole seconds, which is Redis's TTL resolution for EXPIRE.
TIME_SCALE = 150.0
# SKAB reads once a second; one request per this many readings keeps the replay bounded.
SKAB_REQUEST_EVERY = 10
GOAL_HIT_RATIO = 0.99


@dataclass(frozen=True)
class Sizes:
    """Request counts and the replay's simulated length."""

    gateway_requests: int
    hit_path_requests: int
    replay_seconds: float


QUICK = Sizes(gateway_requests=300, hit_path_requests=3000, replay_seconds=1800.0)
FULL = Sizes(gateway_requests=2000, hit_path_requests=20000, replay_seconds=9000.0)


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
    client = redis_client(settings)
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
    threshold: float | None,
    folder: Path,
) -> dict[str, Any]:
    """Replay the reading timestamps as forecast lookups; recompute and cache on each miss.

    ``threshold`` is the hit monitor's threshold, or None to replay without the monitor.
    """
    from actions.monitor import HitMonitor, MonitorOptions

    client = redis_client(settings)
    scaled_dynamic = max(1, round(DYNAMIC_TTL_SECONDS / TIME_SCALE))
    scaled_stable = max(1, round(STABLE_TTL_SECONDS / TIME_SCALE))
    client.delete("saodf:cache:ttl", "saodf:cache:prefetch")
    cache = ForecastCache(client, dynamic_ttl=scaled_dynamic, stable_ttl=scaled_stable)
    classes = populate(cache, devices, folder)

    def recompute(target_cache: ForecastCache, pointer: DevicePointer) -> None:
        record = read_jsonl_line(pointer.context_url, pointer.context_line)
        target_cache.put(pointer, _naive_forecast(record))

    schedule = sorted(
        (offset, item.device_id) for item in devices for offset in item.offsets if offset < span
    )
    stop = threading.Event()
    monitor_thread = None
    if threshold is not None:
        options = MonitorOptions(
            threshold=threshold,
            window_seconds=300 / TIME_SCALE,
            repeat_window_seconds=3600 / TIME_SCALE,
            interval_seconds=15 / TIME_SCALE,
            refresh_margin_seconds=60 / TIME_SCALE,
            prefetch_hold_seconds=3600 / TIME_SCALE,
            max_stable_ttl=max(scaled_stable, round(24 * 3600 / TIME_SCALE)),
            min_requests=20,
        )
        monitor_cache = ForecastCache(
            redis_client(settings), dynamic_ttl=scaled_dynamic, stable_ttl=scaled_stable
        )
        monitor = HitMonitor(monitor_cache, options, recompute)
        monitor_thread = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
        monitor_thread.start()
    hits = misses = 0
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
            if forecast is None:
                misses += 1
                missed_by_device[device_id] = missed_by_device.get(device_id, 0) + 1
                if pointer is not None:
                    recompute(cache, pointer)
            else:
                hits += 1
    finally:
        stop.set()
        if monitor_thread is not None:
            monitor_thread.join(10)
    return {
        "requests": hits + misses,
        "hits": hits,
        "misses": misses,
        "hit_ratio": hits / (hits + misses) if hits + misses else float("nan"),
        "max_lag_s": round(max_lag, 3),
        "dynamic_devices": sum(1 for v in classes.values() if v == DYNAMIC),
        "stable_devices": sum(1 for v in classes.values() if v == STABLE),
        "stable_ttl_end_s": cache.ttl_policy(refresh=True)[STABLE],
        "most_missed": dict(sorted(missed_by_device.items(), key=lambda kv: -kv[1])[:5]),
    }


def run(settings: Settings, quick: bool) -> dict:
    """Measure gateway latency, the cache-hit path and the replay hit ratio on 127.0.0.1."""
    sizes = QUICK if quick else FULL
    load = os.getloadavg()[0]
    devices = load_series(settings.data_dir, sizes.replay_seconds)
    if not devices:
        raise FileNotFoundError(
            f"no NAB or SKAB files under {settings.data_dir}; set SAODF_DATA_DIR"
        )
    with harness.local_services(["redis"], settings) as stack:
        cache = ForecastCache(redis_client(stack))
        populate(cache, devices, stack.home / "bench-context")
        device_ids = [item.device_id for item in devices]
        gateway = measure_gateway(stack, device_ids, sizes.gateway_requests)
        hit_path = measure_hit_path(stack, device_ids, sizes.hit_path_requests)
        span = sizes.replay_seconds
        without_monitor = replay(stack, devices, span, None, stack.home / "r0")
        default_monitor = replay(stack, devices, span, 0.94, stack.home / "r1")
        with_monitor = replay(stack, devices, span, GOAL_HIT_RATIO, stack.home / "r2")

    gateway_p99 = gateway["gateway"]["p99_ms"]
    hit_p99 = hit_path["hit_path"]["p99_ms"]
    figures = {
        "gateway_forecast_p50_ms": gateway["gateway"]["p50_ms"],
        "gateway_forecast_p99_ms": gateway_p99,
        "gateway_forecast_req_per_s": gateway["gateway_req_per_s"],
        "hit_path_p50_ms": hit_path["hit_path"]["p50_ms"],
        "hit_path_p99_ms": hit_p99,
        "hit_path_req_per_s": hit_path["hit_path_req_per_s"],
        "replay_requests": with_monitor["requests"],
        "replay_hit_ratio_with_monitor": round(with_monitor["hit_ratio"], 5),
        "replay_hit_ratio_monitor_default_threshold": round(default_monitor["hit_ratio"], 5),
        "replay_hit_ratio_without_monitor": round(without_monitor["hit_ratio"], 5),
        "replay_max_lag_with_monitor_s": with_monitor["max_lag_s"],
        "devices": len(devices),
    }
    reference = {
        "bare_http_p50_ms": gateway["bare"]["p50_ms"],
        "bare_http_p99_ms": gateway["bare"]["p99_ms"],
        "bare_get_p50_ms": hit_path["bare_get"]["p50_ms"],
        "bare_get_p99_ms": hit_path["bare_get"]["p99_ms"],
    }
    ratios = {
        "gateway_p99_over_bare_http_p99": round(gateway_p99 / gateway["bare"]["p99_ms"], 2),
        "hit_path_p99_over_bare_get_p99": round(hit_p99 / hit_path["bare_get"]["p99_ms"], 2),
    }
    goals = {
        "gateway_p99_over_bare_http_p99": harness.goal(
            2.0, ratios["gateway_p99_over_bare_http_p99"], "min"
        ),
        "gateway_forecast_p99_ms": harness.goal(50.0, gateway_p99, "min"),
        "hit_path_p99_over_bare_get_p99": harness.goal(
            10.0, ratios["hit_path_p99_over_bare_get_p99"], "min"
        ),
        "hit_path_req_per_s": harness.goal(1000.0, hit_path["hit_path_req_per_s"], "max"),
        "replay_hit_ratio_with_monitor": harness.goal(
            GOAL_HIT_RATIO, figures["replay_hit_ratio_with_monitor"], "max"
        ),
    }
    notes = [
        f"{len(devices)} devices: NAB series (5 min and hourly readings) and SKAB files "
        f"(1 s readings, one request per {SKAB_REQUEST_EVERY}); "
        f"{without_monitor['dynamic_devices']} dynamic, {without_monitor['stable_devices']} "
        "stable by the coefficient of variation of their first 120 values",
        f"(1) {sizes.gateway_requests} sequential blocking forecast calls (result=true) on cache "
        "hits through an in-process gateway with one runtime process, keep-alive requests "
        "session; reference: the same client POSTing to a trivial http.server on 127.0.0.1",
        f"(2) {sizes.hit_path_requests} sequential actions.forecast.main calls on hits in this "
        "process (two Redis round trips: pointer HGETALL, lookup script), outcomes "
        f"{hit_path['outcomes']}; reference: a bare GET of one forecast with the same client",
        f"(3) replay of {sizes.replay_seconds:.0f} simulated seconds at {TIME_SCALE:g}x: TTLs "
        "dynamic 300 s and stable 3600 s and the monitor's window 300 s, interval 15 s are "
        "divided by that factor. A miss recomputes a last-value forecast from the stored "
        "context and caches it, standing in for the champion model, so model latency is "
        f"excluded. Runs: without the monitor {without_monitor}; monitor at its default "
        f"threshold 0.94 {default_monitor}; monitor at threshold {GOAL_HIT_RATIO} (the goal, "
        f"reported as replay_hit_ratio_with_monitor) {with_monitor}",
        f"all services on 127.0.0.1; 1-minute load average {load:.1f} at the start on "
        f"{os.cpu_count()} CPUs",
    ]
    return {
        "figures": figures,
        "reference": reference,
        "ratios": ratios,
        "goals": goals,
        "notes": notes,
    }
