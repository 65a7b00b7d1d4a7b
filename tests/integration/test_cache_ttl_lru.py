"""TTL and LRU behaviour of the forecast cache against its own redis-server with a tiny maxmemory."""

from __future__ import annotations

import time
import uuid

import pytest

from actions import redis_acl
from actions.cache import DYNAMIC, STABLE, DevicePointer, ForecastCache, redis_client
from actions.services import cache_redis_spec
from saodf.config import get_settings, reset_settings
from saodf.stack import process
from saodf.tenants import admin_redis_client

pytestmark = pytest.mark.integration

HORIZON = 12
FORECAST = {
    "mean": [50.0 + step for step in range(HORIZON)],
    "quantiles": {
        level: [50.0 + step + offset for step in range(HORIZON)]
        for level, offset in (("0.1", -1.5), ("0.5", 0.0), ("0.9", 1.5))
    },
}


@pytest.fixture(scope="module")
def small_redis(tmp_path_factory):
    """A redis-server of its own with maxmemory 3mb (an empty one uses about 0.9 MB)."""
    home = tmp_path_factory.mktemp("small-redis")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        patch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
        patch.delenv("SAODF_REDIS_HOST", raising=False)
        reset_settings()
        settings = get_settings()
        spec = cache_redis_spec(settings, maxmemory="3mb")
        process.start(spec)
        try:
            yield settings
        finally:
            process.stop(spec)
            reset_settings()


@pytest.fixture
def cache(small_redis) -> ForecastCache:
    return ForecastCache(admin_redis_client(small_redis), dynamic_ttl=300, stable_ttl=3600)


def _pointer(device_id: str, volatility: str = DYNAMIC) -> DevicePointer:
    return DevicePointer(
        device_id=device_id,
        model_name="saodf-forecaster-5min",
        model_version="1",
        forecast_start="2025-04-20T12:00:00+00:00",
        freq="5min",
        horizon=HORIZON,
        group="5min",
        context_url="file:///unused.jsonl",
        context_line=0,
        volatility=volatility,
        metric="temperature",
    )


def _devices(prefix: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{index:05d}" for index in range(count)]


def _wait_gone(cache: ForecastCache, key: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cache.client.exists(key):
            return True
        time.sleep(0.1)
    return False


def test_dynamic_entry_ttl_300(cache):
    key = cache.put(_pointer(_devices("ttl", 1)[0], DYNAMIC), FORECAST)
    assert 295 <= cache.client.ttl(key) <= 300


def test_stable_entry_ttl_3600(cache):
    key = cache.put(_pointer(_devices("ttl", 1)[0], STABLE), FORECAST)
    assert 3595 <= cache.client.ttl(key) <= 3600


def test_pointer_has_no_ttl(cache):
    device_id = _devices("ttl", 1)[0]
    cache.put(_pointer(device_id), FORECAST)
    assert cache.client.ttl(f"saodf:device:{device_id}") == -1


def test_expired_entry_misses(small_redis):
    cache = ForecastCache(admin_redis_client(small_redis), dynamic_ttl=1, stable_ttl=3600)
    device_id = _devices("expire", 1)[0]
    key = cache.put(_pointer(device_id, DYNAMIC), FORECAST)
    hits_before, misses_before = cache.counters()
    assert _wait_gone(cache, key)
    pointer, forecast = cache.lookup(device_id)
    assert pointer is not None
    assert forecast is None
    assert cache.counters() == (hits_before, misses_before + 1)
    assert cache.missed_devices(60)[device_id] == 1


def test_stable_outlives_dynamic(small_redis):
    cache = ForecastCache(admin_redis_client(small_redis), dynamic_ttl=1, stable_ttl=60)
    dynamic_id, stable_id = _devices("mixed", 2)
    dynamic_key = cache.put(_pointer(dynamic_id, DYNAMIC), FORECAST)
    stable_key = cache.put(_pointer(stable_id, STABLE), FORECAST)
    assert _wait_gone(cache, dynamic_key)
    assert cache.client.exists(stable_key)


def test_ttl_policy_overrides_defaults(small_redis):
    # The monitor sets the policy, and the forecast action's puts follow it.
    monitor = ForecastCache(redis_client(small_redis, role=redis_acl.MONITOR))
    action = ForecastCache(redis_client(small_redis, role=redis_acl.FORECAST))
    try:
        monitor.set_ttl(STABLE, 7200)
        assert action.ttl_policy(refresh=True)[STABLE] == 7200
        key = action.put(_pointer(_devices("policy", 1)[0], STABLE), FORECAST)
        assert admin_redis_client(small_redis).ttl(key) > 3600
    finally:
        monitor.client.delete("saodf:cache:ttl")


def test_lru_evicts_cold_keeps_hot(cache):
    """Under maxmemory, allkeys-lru evicts the least recently used entries first.

    Redis's LRU clock has a resolution of one second, so the phases are a few seconds
    apart: cold set A, then the hot set is read again, then cold set B fills memory.
    """
    hot = _devices("hot", 30)
    cold_a = _devices("cold-a", 1400)
    cold_b = _devices("cold-b", 1000)
    for device_id in hot + cold_a:
        cache.put(_pointer(device_id), FORECAST)
    evicted_before = cache.stats()["evictions"]
    time.sleep(2.5)
    for device_id in hot:
        assert cache.lookup(device_id)[1] is not None
    time.sleep(1.2)
    for index, device_id in enumerate(cold_b):
        cache.put(_pointer(device_id), FORECAST)
        if index % 200 == 0:
            for hot_id in hot:
                cache.peek(_pointer(hot_id))
    stats = cache.stats()

    def surviving(devices: list[str]) -> float:
        pipe = cache.client.pipeline(transaction=False)
        for device_id in devices:
            pipe.exists(_pointer(device_id).forecast_key)
        return sum(pipe.execute()) / len(devices)

    assert stats["evictions"] > evicted_before
    assert stats["maxmemory"] == 3 * 1024 * 1024
    assert stats["used_memory"] <= stats["maxmemory"] * 1.05
    assert surviving(hot) == 1.0
    assert surviving(cold_b) > surviving(cold_a)
    assert surviving(cold_a) < 1.0


def test_writes_succeed_under_pressure(cache):
    # allkeys-lru makes room instead of rejecting writes with OOM errors.
    for device_id in _devices("pressure", 2500):
        cache.put(_pointer(device_id), FORECAST)
    assert cache.stats()["evictions"] > 0
