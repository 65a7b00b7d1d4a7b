"""Tests of the Redis forecast cache against a real redis-server."""

from __future__ import annotations

import json
import uuid

import pytest

from actions.cache import (
    DYNAMIC,
    STABLE,
    CacheError,
    DevicePointer,
    ForecastCache,
    coefficient_of_variation,
    forecast_key,
    populate_from_forecasts,
    volatility_class,
)
from saodf.tenants import admin_redis_client


@pytest.fixture
def cache(redis_server, saodf_env) -> ForecastCache:
    # The admin user runs what several roles do (put, lookup, stats), for these cache tests.
    return ForecastCache(admin_redis_client(saodf_env))


def _device() -> str:
    return f"dev-{uuid.uuid4().hex[:12]}"


def _pointer(device_id: str, volatility: str = DYNAMIC, version: str = "1") -> DevicePointer:
    return DevicePointer(
        device_id=device_id,
        model_name="saodf-forecaster-5min",
        model_version=version,
        forecast_start="2025-04-20T12:00:00+00:00",
        freq="5min",
        horizon=3,
        group="5min",
        context_url="file:///nowhere/test/data.jsonl",
        context_line=0,
        volatility=volatility,
        metric="temperature",
    )


FORECAST = {
    "mean": [1.0, 2.0, 3.0],
    "quantiles": {"0.1": [0.5, 1.5, 2.5], "0.5": [1.0, 2.0, 3.0], "0.9": [1.5, 2.5, 3.5]},
}


def test_key_changes_with_model_version():
    first = forecast_key("d1", "2025-04-20T12:00:00Z", 12, "5min", "m", "1")
    second = forecast_key("d1", "2025-04-20T12:00:00Z", 12, "5min", "m", "2")
    assert first != second


def test_key_changes_with_window_start():
    first = forecast_key("d1", "2025-04-20T12:00:00Z", 12, "5min", "m", "1")
    second = forecast_key("d1", "2025-04-20T13:00:00Z", 12, "5min", "m", "1")
    assert first != second


def test_key_is_stable_and_prefixed():
    key = forecast_key("d1", "2025-04-20T12:00:00Z", 12, "5min", "m", 1)
    assert key == forecast_key("d1", "2025-04-20T12:00:00Z", 12, "5min", "m", "1")
    assert key.startswith("saodf:fc:")


def test_volatility_constant_series_stable():
    assert volatility_class([50.0] * 60) == STABLE


def test_volatility_noisy_series_dynamic():
    assert volatility_class([10.0, 90.0] * 30) == DYNAMIC


def test_volatility_gaps_only_dynamic():
    assert volatility_class(["NaN", "NaN", None]) == DYNAMIC


def test_cv_ignores_nan_strings():
    assert coefficient_of_variation([2.0, "NaN", 2.0, 2.0]) == 0.0


def test_ttl_dynamic_five_minutes(cache):
    pointer = _pointer(_device(), DYNAMIC)
    key = cache.put(pointer, FORECAST)
    ttl = cache.client.ttl(key)
    assert 0 < ttl <= 300


def test_ttl_stable_longer(cache):
    pointer = _pointer(_device(), STABLE)
    key = cache.put(pointer, FORECAST)
    assert cache.client.ttl(key) > 300


def test_ttl_unknown_class_rejected(cache):
    with pytest.raises(CacheError, match="volatility class 'wild' is unknown"):
        cache.put(_pointer(_device(), "wild"), FORECAST)


def test_put_short_forecast_rejected(cache):
    short = {"mean": [1.0], "quantiles": {"0.5": [1.0]}}
    with pytest.raises(CacheError, match="fewer than the horizon 3"):
        cache.put(_pointer(_device()), short)


def test_lookup_hit_and_miss_counted(cache):
    before = cache.stats()
    device_id = _device()
    cache.put(_pointer(device_id), FORECAST)
    pointer, forecast = cache.lookup(device_id)
    assert forecast == FORECAST
    assert pointer.model_version == "1"
    missing_pointer, missing = cache.lookup(_device())
    assert missing_pointer is None
    assert missing is None
    after = cache.stats()
    assert after["hits"] == before["hits"] + 1
    assert after["misses"] == before["misses"] + 1


def test_new_version_misses_old_entry(cache):
    device_id = _device()
    cache.put(_pointer(device_id, version="1"), FORECAST)
    assert cache.peek(_pointer(device_id, version="2")) is None


def test_stats_report_memory(cache):
    stats = cache.stats()
    assert stats["used_memory"] > 0
    assert stats["evictions"] >= 0
    assert stats["maxmemory"] > 0


def test_put_writes_nan_as_null(cache):
    device_id = _device()
    forecast = {"mean": [1.0, float("nan"), 3.0], "quantiles": {"0.5": [1.0, 2.0, 3.0]}}
    key = cache.put(_pointer(device_id), forecast)
    assert json.loads(cache.client.get(key))["mean"][1] is None


def _write_batch_output(root, devices: list[str], targets: list[list[float]]) -> tuple[str, str]:
    prepared = root / "prepared"
    (prepared / "groups" / "5min" / "test").mkdir(parents=True)
    with (prepared / "groups" / "5min" / "test" / "data.jsonl").open("w") as handle:
        for target in targets:
            handle.write(json.dumps({"start": "2025-04-20 00:00:00", "target": target}) + "\n")
    manifest = {
        "groups": [
            {
                "group": "5min",
                "freq": "5min",
                "prediction_length": 3,
                "context_length": 6,
                "train": "groups/5min/train/data.jsonl",
                "test": "groups/5min/test/data.jsonl",
                "series": [{"device_id": d, "target_metric": "temperature"} for d in devices],
            }
        ]
    }
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    forecasts = root / "forecasts" / "5min"
    forecasts.mkdir(parents=True)
    with (forecasts / "output.jsonl.out").open("w") as handle:
        for _ in devices:
            handle.write(json.dumps(FORECAST) + "\n")
    output_manifest = {
        "group": "5min",
        "freq": "5min",
        "model_name": "saodf-forecaster-5min",
        "model_version": "4",
        "prediction_length": 3,
        "quantiles": ["0.1", "0.5", "0.9"],
        "series": [
            {"device_id": d, "line": i, "forecast_start": "2025-04-20T00:50:00+00:00"}
            for i, d in enumerate(devices)
        ],
    }
    (forecasts / "manifest.json").write_text(json.dumps(output_manifest))
    return (root / "forecasts").as_uri(), prepared.as_uri()


def test_populate_fills_pointers(cache, saodf_env, tmp_path):
    devices = [_device(), _device()]
    forecasts_url, prepared_url = _write_batch_output(
        tmp_path, devices, [[50.0] * 10, [10.0, 90.0] * 5]
    )
    summary = populate_from_forecasts(forecasts_url, prepared_url, saodf_env, cache=cache)
    assert summary["entries"] == 2
    assert summary["groups"] == 1
    stable = cache.pointer(devices[0])
    dynamic = cache.pointer(devices[1])
    assert stable.volatility == STABLE
    assert dynamic.volatility == DYNAMIC
    assert dynamic.context_line == 1
    assert dynamic.context_url.endswith("groups/5min/test/data.jsonl")
    assert dynamic.metric == "temperature"
    assert dynamic.model_version == "4"
    assert cache.peek(dynamic) == FORECAST


def test_populate_override_class(cache, saodf_env, tmp_path):
    device_id = _device()
    forecasts_url, prepared_url = _write_batch_output(tmp_path, [device_id], [[50.0] * 10])
    populate_from_forecasts(
        forecasts_url,
        prepared_url,
        saodf_env,
        volatility_overrides={device_id: DYNAMIC},
        cache=cache,
    )
    assert cache.pointer(device_id).volatility == DYNAMIC


def test_populate_missing_folder_rejected(cache, saodf_env, tmp_path):
    with pytest.raises(CacheError, match="does not exist; run batch_transform"):
        populate_from_forecasts(
            (tmp_path / "none").as_uri(), tmp_path.as_uri(), saodf_env, cache=cache
        )
