"""Tests of the cache hit monitor against its own redis-server."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid

import pytest

from actions.cache import DYNAMIC, STABLE, DevicePointer, ForecastCache
from actions.monitor import (
    BELOW_THRESHOLD,
    HEALTHY,
    INSUFFICIENT_TRAFFIC,
    PREFETCH_KEY,
    HitMonitor,
    MonitorOptions,
    store_forecast,
)
from actions.services import cache_redis_spec, realtime_service_specs
from saodf.config import get_settings, reset_settings
from saodf.errors import ConfigError, SaodfError
from saodf.stack import process
from saodf.tenants import admin_redis_client

pytestmark = pytest.mark.integration

FORECAST = {
    "mean": [1.0, 2.0, 3.0],
    "quantiles": {"0.1": [0.5, 1.5, 2.5], "0.5": [1.0, 2.0, 3.0], "0.9": [1.5, 2.5, 3.5]},
}


@pytest.fixture(scope="module")
def monitor_redis(tmp_path_factory):
    home = tmp_path_factory.mktemp("monitor-redis")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        patch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
        patch.delenv("SAODF_REDIS_HOST", raising=False)
        reset_settings()
        settings = get_settings()
        spec = cache_redis_spec(settings, name="monitor-redis")
        process.start(spec)
        try:
            yield settings
        finally:
            process.stop(spec)
            reset_settings()


@pytest.fixture
def cache(monitor_redis) -> ForecastCache:
    # The admin user both makes the traffic and runs the monitor in these tests.
    cache = ForecastCache(admin_redis_client(monitor_redis))
    # Every test starts from the default TTL policy, no held devices, no recorded misses and
    # no devices of earlier tests, which refresh-ahead would otherwise find.
    cache.client.delete("saodf:cache:ttl", PREFETCH_KEY)
    for pattern in ("saodf:cache:missed:*", "saodf:device:*", "saodf:fc:*"):
        for key in cache.client.scan_iter(match=pattern):
            cache.client.delete(key)
    return cache


def _pointer(device_id: str, volatility: str) -> DevicePointer:
    return DevicePointer(
        device_id=device_id,
        model_name="saodf-forecaster-5min",
        model_version="1",
        forecast_start="2025-04-20T12:00:00+00:00",
        freq="5min",
        horizon=3,
        group="5min",
        context_url="file:///unused.jsonl",
        context_line=0,
        volatility=volatility,
    )


def _device(prefix: str = "dev") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class RecordingForecaster:
    """Caches FORECAST for the pointer, as the model miss path would, and records the device."""

    def __init__(self, fail_for: set[str] | None = None):
        self.devices: list[str] = []
        self.fail_for = fail_for or set()

    def __call__(self, cache: ForecastCache, pointer: DevicePointer) -> None:
        if pointer.device_id in self.fail_for:
            raise SaodfError(f"model unavailable for {pointer.device_id}")
        self.devices.append(pointer.device_id)
        cache.put(pointer, FORECAST)


def _hits(cache: ForecastCache, device_id: str, count: int) -> None:
    for _ in range(count):
        assert cache.lookup(device_id)[1] is not None


def _misses(cache: ForecastCache, pointer: DevicePointer, count: int) -> None:
    for _ in range(count):
        cache.client.delete(pointer.forecast_key)
        assert cache.lookup(pointer.device_id)[1] is None


def test_healthy_window_logs_healthy(cache, caplog):
    device_id = _device()
    cache.put(_pointer(device_id, STABLE), FORECAST)
    monitor = HitMonitor(cache, MonitorOptions(min_requests=10))
    _hits(cache, device_id, 50)
    with caplog.at_level(logging.INFO, logger="actions.monitor"):
        report = monitor.tick()
    assert report.state == HEALTHY
    assert report.hit_rate == 1.0
    assert report.requests == 50
    assert report.stable_ttl == 3600
    assert "cache healthy: hit rate 1.0000 over 50 requests" in caplog.text


def test_few_requests_not_judged(cache):
    device_id = _device()
    cache.put(_pointer(device_id, STABLE), FORECAST)
    monitor = HitMonitor(cache, MonitorOptions(min_requests=20))
    cache.client.delete(_pointer(device_id, STABLE).forecast_key)
    cache.lookup(device_id)
    report = monitor.tick()
    assert report.state == INSUFFICIENT_TRAFFIC
    assert report.stable_ttl == 3600


def test_low_rate_raises_stable_ttl(cache, caplog):
    stable_id, dynamic_id, missing_id = _device("stable"), _device("dynamic"), _device("miss")
    stable = _pointer(stable_id, STABLE)
    dynamic = _pointer(dynamic_id, DYNAMIC)
    stable_key = cache.put(stable, FORECAST)
    dynamic_key = cache.put(dynamic, FORECAST)
    cache.put(_pointer(missing_id, DYNAMIC), FORECAST)
    monitor = HitMonitor(cache, MonitorOptions(min_requests=10), RecordingForecaster())
    _hits(cache, stable_id, 10)
    _misses(cache, _pointer(missing_id, DYNAMIC), 10)
    with caplog.at_level(logging.WARNING, logger="actions.monitor"):
        report = monitor.tick()
    assert report.state == BELOW_THRESHOLD
    assert report.hit_rate == 0.5
    assert report.previous_stable_ttl == 3600
    assert report.stable_ttl == 7200
    assert cache.ttl_policy(refresh=True)[STABLE] == 7200
    assert cache.ttl_policy()[DYNAMIC] == 300
    assert cache.client.ttl(stable_key) > 3600
    assert cache.client.ttl(dynamic_key) <= 300
    assert report.ttl_extended >= 1
    assert "is below 0.94: stable TTL 3600 -> 7200 s" in caplog.text


def test_new_stable_entries_get_raised_ttl(cache):
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5), RecordingForecaster())
    missing = _pointer(_device(), DYNAMIC)
    cache.put(missing, FORECAST)
    _misses(cache, missing, 6)
    monitor.tick()
    other = ForecastCache(cache.client)
    key = other.put(_pointer(_device(), STABLE), FORECAST)
    assert cache.client.ttl(key) > 3600


def test_stable_ttl_capped(cache):
    options = MonitorOptions(min_requests=5, max_stable_ttl=5000)
    monitor = HitMonitor(cache, options, RecordingForecaster())
    missing = _pointer(_device(), DYNAMIC)
    cache.put(missing, FORECAST)
    _misses(cache, missing, 6)
    assert monitor.tick().stable_ttl == 5000
    _misses(cache, missing, 6)
    report = monitor.tick()
    assert report.previous_stable_ttl == 5000
    assert report.stable_ttl == 5000


def test_repeated_misses_prefetched(cache):
    forecaster = RecordingForecaster()
    options = MonitorOptions(min_requests=5, refresh_ahead=False)
    monitor = HitMonitor(cache, options, forecaster)
    repeated = _pointer(_device("repeat"), DYNAMIC)
    once = _pointer(_device("once"), DYNAMIC)
    cache.put(repeated, FORECAST)
    cache.put(once, FORECAST)
    _misses(cache, repeated, 5)
    _misses(cache, once, 1)
    report = monitor.tick()
    assert report.held == [repeated.device_id]
    assert report.refreshed == [repeated.device_id]
    assert forecaster.devices == [repeated.device_id]
    assert cache.peek(repeated) == FORECAST
    assert cache.peek(once) is None
    assert cache.lookup(repeated.device_id)[1] == FORECAST


def test_held_device_refreshed_later(cache):
    forecaster = RecordingForecaster()
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5), forecaster)
    repeated = _pointer(_device("held"), DYNAMIC)
    cache.put(repeated, FORECAST)
    _misses(cache, repeated, 5)
    monitor.tick()
    # The entry expires again; the next tick refreshes it although the window is healthy.
    cache.client.delete(repeated.forecast_key)
    _hits(cache, _device_with_entry(cache), 100)
    report = monitor.tick()
    assert report.state == HEALTHY
    assert repeated.device_id in report.refreshed
    assert forecaster.devices == [repeated.device_id, repeated.device_id]


def _device_with_entry(cache: ForecastCache) -> str:
    device_id = _device("busy")
    cache.put(_pointer(device_id, STABLE), FORECAST)
    return device_id


def test_fresh_held_entry_not_recomputed(cache):
    forecaster = RecordingForecaster()
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5), forecaster)
    repeated = _pointer(_device("fresh"), STABLE)
    cache.put(repeated, FORECAST)
    _misses(cache, repeated, 5)
    monitor.tick()
    report = monitor.tick()
    assert repeated.device_id not in report.refreshed
    assert forecaster.devices == [repeated.device_id]


def test_prefetch_failure_reported(cache, caplog):
    failing = _pointer(_device("fail"), DYNAMIC)
    forecaster = RecordingForecaster(fail_for={failing.device_id})
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5), forecaster)
    cache.put(failing, FORECAST)
    _misses(cache, failing, 5)
    with caplog.at_level(logging.WARNING, logger="actions.monitor"):
        report = monitor.tick()
    assert report.refresh_failed == {
        failing.device_id: f"model unavailable for {failing.device_id}"
    }
    assert f"prefetch of device {failing.device_id} failed" in caplog.text


def test_unknown_device_not_prefetched(cache):
    forecaster = RecordingForecaster()
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5), forecaster)
    unknown = _device("unknown")
    for _ in range(6):
        cache.lookup(unknown)
    report = monitor.tick()
    assert report.held == [unknown]
    assert "no device pointer" in report.refresh_failed[unknown]
    assert forecaster.devices == []


def test_prefetch_bounded(cache):
    forecaster = RecordingForecaster()
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5, max_prefetch=2), forecaster)
    pointers = [_pointer(_device("many"), DYNAMIC) for _ in range(4)]
    for count, pointer in enumerate(pointers, start=2):
        cache.put(pointer, FORECAST)
        _misses(cache, pointer, count)
    report = monitor.tick()
    assert report.held == [pointers[3].device_id, pointers[2].device_id]


def test_report_published_for_metrics(cache):
    device_id = _device()
    cache.put(_pointer(device_id, STABLE), FORECAST)
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5, threshold=0.9))
    _hits(cache, device_id, 10)
    monitor.tick()
    published = cache.stats()["monitor"]
    assert published["state"] == HEALTHY
    assert published["hit_rate"] == "1.000000"
    assert published["threshold"] == "0.9"


def test_counter_reset_restarts_window(cache):
    device_id = _device()
    cache.put(_pointer(device_id, STABLE), FORECAST)
    _hits(cache, device_id, 5)
    monitor = HitMonitor(cache, MonitorOptions(min_requests=5))
    cache.client.delete("saodf:cache:hits", "saodf:cache:misses")
    assert monitor.tick().state == "counters reset"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (MonitorOptions(threshold=0), "threshold=0 must be in"),
        (MonitorOptions(ttl_growth=1.0), "ttl_growth=1.0 must be above 1"),
        (MonitorOptions(window_seconds=0), "window_seconds=0 and interval_seconds"),
    ],
)
def test_invalid_options_rejected(cache, options, message):
    with pytest.raises(ConfigError, match=message):
        HitMonitor(cache, options)


def test_run_stops_after_max_ticks(cache):
    monitor = HitMonitor(cache, MonitorOptions(interval_seconds=0.05))
    assert monitor.run(threading.Event(), max_ticks=3) == 3


def test_monitor_service_starts_and_stops(monitor_redis):
    (spec,) = realtime_service_specs(monitor_redis)
    assert spec.argv[-2:] == ["-m", "actions.monitor"]
    assert process.start(spec) == "started"
    try:
        assert process.status(spec)["healthy"] is True
    finally:
        assert process.stop(spec) == "stopped"
    log = spec.log_file.read_text()
    assert "cache monitor started: threshold 0.94, window 300 s, interval 15 s" in log


class StoringForecaster(RecordingForecaster):
    """Caches FORECAST through store_forecast, leaving an unchanged pointer as it is."""

    def __call__(self, cache: ForecastCache, pointer: DevicePointer) -> bool:
        self.devices.append(pointer.device_id)
        return store_forecast(cache, pointer, pointer, FORECAST)


def test_requested_device_refreshed_ahead(cache, caplog):
    forecaster = StoringForecaster()
    monitor = HitMonitor(cache, MonitorOptions(), forecaster)
    pointer = _pointer(_device("ahead"), DYNAMIC)
    cache.put(pointer, FORECAST)
    _hits(cache, pointer.device_id, 3)
    cache.client.expire(pointer.forecast_key, 30)
    with caplog.at_level(logging.INFO, logger="actions.monitor"):
        report = monitor.tick()
    assert report.refreshed_ahead == [pointer.device_id]
    assert report.active == 1
    assert cache.client.ttl(pointer.forecast_key) > 250
    assert "refreshed ahead 1 of 1 requested devices" in caplog.text


def test_fresh_entry_not_refreshed_ahead(cache):
    forecaster = StoringForecaster()
    monitor = HitMonitor(cache, MonitorOptions(), forecaster)
    pointer = _pointer(_device("fresh"), DYNAMIC)
    cache.put(pointer, FORECAST)
    _hits(cache, pointer.device_id, 3)
    report = monitor.tick()
    assert report.active == 1
    assert forecaster.devices == []


def test_missing_entry_of_requested_device_refilled(cache):
    forecaster = StoringForecaster()
    monitor = HitMonitor(cache, MonitorOptions(), forecaster)
    pointer = _pointer(_device("gone"), STABLE)
    cache.put(pointer, FORECAST)
    _misses(cache, pointer, 1)
    report = monitor.tick()
    assert report.refreshed_ahead == [pointer.device_id]
    assert cache.lookup(pointer.device_id)[1] == FORECAST


def test_idle_device_not_refreshed_ahead(cache):
    short = ForecastCache(cache.client, dynamic_ttl=1, stable_ttl=1)
    forecaster = StoringForecaster()
    options = MonitorOptions(active_ttls=0.5, refresh_margin_seconds=1)
    monitor = HitMonitor(short, options, forecaster)
    pointer = _pointer(_device("idle"), DYNAMIC)
    short.put(pointer, FORECAST)
    # The pointer's idle time, in whole seconds, passes the active span of 0.5 s.
    time.sleep(2.2)
    report = monitor.tick()
    assert report.active == 0
    assert forecaster.devices == []


def test_refresh_ahead_keeps_pointer_idle(cache):
    forecaster = StoringForecaster()
    monitor = HitMonitor(cache, MonitorOptions(), forecaster)
    pointer = _pointer(_device("keep"), DYNAMIC)
    cache.put(pointer, FORECAST)
    cache.client.expire(pointer.forecast_key, 30)
    monitor.tick()
    time.sleep(1.1)
    cache.client.expire(pointer.forecast_key, 30)
    monitor.tick()
    assert forecaster.devices == [pointer.device_id, pointer.device_id]
    assert cache.client.object("idletime", f"saodf:device:{pointer.device_id}") >= 1


def test_refresh_ahead_bounded(cache, caplog):
    forecaster = StoringForecaster()
    monitor = HitMonitor(cache, MonitorOptions(max_refresh_ahead=2), forecaster)
    pointers = [_pointer(_device("bound"), DYNAMIC) for _ in range(3)]
    for seconds, pointer in zip((30, 10, 20), pointers, strict=True):
        cache.put(pointer, FORECAST)
        cache.client.expire(pointer.forecast_key, seconds)
    with caplog.at_level(logging.WARNING, logger="actions.monitor"):
        report = monitor.tick()
    assert report.refreshed_ahead == [pointers[1].device_id, pointers[2].device_id]
    assert "refreshing the 2 that expire first" in caplog.text


def test_refresh_ahead_off(cache):
    forecaster = StoringForecaster()
    monitor = HitMonitor(cache, MonitorOptions(refresh_ahead=False), forecaster)
    pointer = _pointer(_device("off"), DYNAMIC)
    cache.put(pointer, FORECAST)
    cache.client.expire(pointer.forecast_key, 30)
    assert monitor.tick().refreshed_ahead == []


def test_store_forecast_unchanged_pointer(cache):
    pointer = _pointer(_device("store"), DYNAMIC)
    cache.put(pointer, FORECAST)
    cache.client.expire(pointer.forecast_key, 5)
    assert store_forecast(cache, pointer, pointer, FORECAST) is False
    assert cache.client.ttl(pointer.forecast_key) > 250


def test_store_forecast_new_version(cache):
    pointer = _pointer(_device("version"), DYNAMIC)
    cache.put(pointer, FORECAST)
    updated = dataclasses.replace(pointer, model_version="2")
    assert store_forecast(cache, pointer, updated, FORECAST) is True
    assert cache.pointer(pointer.device_id).model_version == "2"
