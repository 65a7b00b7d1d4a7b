"""Tests of the detect_anomaly action against a real redis-server."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from actions import detect_anomaly
from actions.cache import DYNAMIC, DevicePointer, ForecastCache
from actions.detect_anomaly import MAX_READINGS, detect
from saodf.telemetry import format_timestamp
from saodf.tenants import admin_redis_client

START = datetime(2025, 4, 20, 12, 0, tzinfo=timezone.utc)
PARAMS = dict(detect_anomaly.DEFAULTS, warmup=20)


@pytest.fixture
def cache(redis_server, saodf_env) -> ForecastCache:
    detect_anomaly.reset_cache()
    # The admin user writes pointers and reads state; main() connects as the detector role.
    yield ForecastCache(admin_redis_client(saodf_env))
    detect_anomaly.reset_cache()


def _readings(device_id: str, values: list[float], metric: str = "temperature") -> list[dict]:
    return [
        {
            "device_id": device_id,
            "timestamp": format_timestamp(START + timedelta(minutes=5 * i)),
            metric: value,
        }
        for i, value in enumerate(values)
    ]


def _normal(count: int) -> list[float]:
    return [50.0 + (i % 5) * 0.5 for i in range(count)]


def _device() -> str:
    return f"dev-{uuid.uuid4().hex[:12]}"


def test_spike_flagged_after_warmup(cache):
    results = detect(_readings(_device(), [*_normal(40), 105.0]), cache, PARAMS)
    spike = results[-1]
    assert spike["anomalous"] is True
    assert spike["metrics"] == ["temperature"]
    assert spike["score"] > PARAMS["threshold"]
    assert "temperature z=" in spike["reason"]


def test_normal_readings_not_flagged(cache):
    results = detect(_readings(_device(), _normal(60)), cache, PARAMS)
    assert not any(result["anomalous"] for result in results)


def test_spike_during_warmup_not_flagged(cache):
    results = detect(_readings(_device(), [*_normal(5), 105.0]), cache, PARAMS)
    assert results[-1]["anomalous"] is False


def test_state_persists_across_calls(cache):
    device_id = _device()
    detect(_readings(device_id, _normal(40)), cache, PARAMS)
    later = {"device_id": device_id, "timestamp": "2025-04-21T00:00:00Z", "temperature": 105.0}
    (result,) = detect([later], cache, PARAMS)
    assert result["anomalous"] is True


def test_invalid_reading_kept_with_reason(cache):
    readings = [*_readings(_device(), [50.0]), {"device_id": "d", "temperature": 1.0}]
    results = detect(readings, cache, PARAMS)
    assert len(results) == 2
    assert results[1]["valid"] is False
    assert results[1]["reason"].startswith("timestamp is missing; send ISO 8601 with a zone")
    assert results[1]["reading"] == {"device_id": "d", "temperature": 1.0}


def test_forecast_band_flags_value(cache):
    device_id = _device()
    pointer = DevicePointer(
        device_id=device_id,
        model_name="m",
        model_version="3",
        forecast_start=START.isoformat(),
        freq="5min",
        horizon=3,
        group="5min",
        context_url="file:///unused.jsonl",
        context_line=0,
        volatility=DYNAMIC,
        metric="temperature",
    )
    forecast = {
        "mean": [50.0, 50.0, 50.0],
        "quantiles": {"0.1": [49.0, 49.0, 49.0], "0.5": [50.0] * 3, "0.9": [51.0, 51.0, 51.0]},
    }
    cache.put(pointer, forecast)
    inside, outside = detect(_readings(device_id, [50.5, 55.0]), cache, PARAMS)
    assert inside["anomalous"] is False
    assert outside["anomalous"] is True
    assert "outside forecast band" in outside["reason"]


def test_main_batch_counts(cache):
    values = [*_normal(40), 105.0]
    reply = detect_anomaly.main({"readings": _readings(_device(), values), "warmup": 20})
    assert reply["count"] == 41
    assert reply["anomalies"] == 1
    assert reply["invalid"] == 0


def test_main_single_reading(cache):
    reply = detect_anomaly.main({"reading": _readings(_device(), [50.0])[0]})
    assert reply["count"] == 1


def test_main_too_many_readings(cache):
    readings = _readings(_device(), [1.0] * (MAX_READINGS + 1))
    reply = detect_anomaly.main({"readings": readings})
    assert "maximum per activation is 500" in reply["error"]


def test_main_missing_input(cache):
    assert "send 'reading'" in detect_anomaly.main({})["error"]


def test_main_bad_threshold(cache):
    reply = detect_anomaly.main({"reading": {}, "threshold": -1})
    assert reply["error"] == "threshold=-1.0 must be positive"


def test_namespaces_keep_separate_state(cache):
    device_id = _device()
    detect(_readings(device_id, _normal(40)), cache, PARAMS, namespace="tenant-a")
    spike = {"device_id": device_id, "timestamp": "2025-04-21T00:00:00Z", "temperature": 105.0}
    (in_a,) = detect([spike], cache, PARAMS, namespace="tenant-a")
    (in_b,) = detect([spike], cache, PARAMS, namespace="tenant-b")
    assert in_a["anomalous"] is True
    assert in_b["anomalous"] is False


def test_state_key_namespaced_format():
    assert detect_anomaly.state_key("d1", "temperature", "ns") == "saodf:anomaly@ns:d1:temperature"
    assert detect_anomaly.state_key("d1", "temperature") == "saodf:anomaly:d1:temperature"


def test_main_uses_ow_namespace(cache, monkeypatch):
    device_id = _device()
    monkeypatch.setenv("__OW_NAMESPACE", "tenant-c")
    detect_anomaly.main({"readings": _readings(device_id, _normal(3))})
    assert cache.client.exists(detect_anomaly.state_key(device_id, "temperature", "tenant-c"))


def test_in_process_matches_redis(cache):
    from actions.fallback import EwmaState

    values = [*_normal(40), 105.0, 50.0, 49.0]
    readings = _readings(_device(), values)
    in_redis = detect(readings, cache, PARAMS)
    in_process = detect_anomaly.detect_in_process(readings, EwmaState(), PARAMS)
    assert [r["z_scores"] for r in in_process] == [r["z_scores"] for r in in_redis]
    assert [r["anomalous"] for r in in_process] == [r["anomalous"] for r in in_redis]
    assert all(r["degraded"] for r in in_process)


def _fleet(devices: int, seconds: int) -> list[dict]:
    return [
        {
            "device_id": f"fleet-{device}",
            "timestamp": format_timestamp(START + timedelta(seconds=second)),
            "temperature": 50.0 + (second * 7 + device) % 5 + (40.0 if second == 25 else 0.0),
            "vibration": 0.5 + ((second + device) % 3) * 0.01,
        }
        for second in range(seconds)
        for device in range(devices)
    ]


def _one_at_a_time(readings: list[dict], cache: ForecastCache, namespace: str) -> list[dict]:
    results = []
    for index, reading in enumerate(readings):
        (result,) = detect([reading], cache, PARAMS, namespace=namespace)
        results.append({**result, "index": index})
    return results


def test_batch_matches_single_calls(cache):
    readings = _fleet(devices=3, seconds=30)
    namespace = uuid.uuid4().hex[:8]
    batched = detect(readings, cache, PARAMS, namespace=f"b{namespace}")
    single = _one_at_a_time(readings, cache, f"s{namespace}")
    assert batched == single
    assert sum(result["anomalous"] for result in batched) == 3


def test_batch_over_chunk_size_matches(cache):
    readings = _fleet(devices=2, seconds=300)
    assert 2 * len(readings) > detect_anomaly.MAX_UPDATES_PER_CALL
    namespace = uuid.uuid4().hex[:8]
    batched = []
    for first in range(0, len(readings), MAX_READINGS):
        part = detect(readings[first : first + MAX_READINGS], cache, PARAMS, f"b{namespace}")
        batched += [{**r, "index": r["index"] + first} for r in part]
    single = _one_at_a_time(readings, cache, f"s{namespace}")
    assert [r["z_scores"] for r in batched] == [r["z_scores"] for r in single]
    assert [r["anomalous"] for r in batched] == [r["anomalous"] for r in single]


def test_batch_state_keys_expire(cache):
    device_id = _device()
    detect(_readings(device_id, _normal(3)), cache, dict(PARAMS, state_ttl_seconds=600))
    ttl = cache.client.ttl(detect_anomaly.state_key(device_id, "temperature"))
    assert 0 < ttl <= 600


def test_batch_invalid_reading_keeps_order(cache):
    device_id = _device()
    readings = _readings(device_id, [50.0, 51.0])
    readings.insert(1, {"device_id": device_id, "temperature": 1.0})
    results = detect(readings, cache, PARAMS)
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["valid"] for r in results] == [True, False, True]
    # The state holds only 50.0, so the deviation floor is 1e-3 * 50 and z = 1 / 0.05.
    assert results[2]["z_scores"]["temperature"] == 20.0


def _band_pointer(device_id: str) -> DevicePointer:
    return DevicePointer(
        device_id=device_id,
        model_name="m",
        model_version="4",
        forecast_start=START.isoformat(),
        freq="5min",
        horizon=3,
        group="5min",
        context_url="file:///unused.jsonl",
        context_line=0,
        volatility=DYNAMIC,
        metric="temperature",
    )


def test_bands_prefetched_per_device(cache):
    forecast = {"mean": [50.0] * 3, "quantiles": {"0.1": [49.0] * 3, "0.9": [51.0] * 3}}
    covered, malformed, uncovered = _device(), _device(), _device()
    cache.put(_band_pointer(covered), forecast)
    cache.client.hset(cache.device_key(malformed), mapping={"device_id": malformed})
    readings = [_readings(device_id, [55.0])[0] for device_id in (covered, malformed, uncovered)]
    results = detect(readings, cache, PARAMS)
    assert results[0]["anomalous"] is True
    assert "of model version 4" in results[0]["reason"]
    assert results[1]["anomalous"] is False
    assert results[2]["anomalous"] is False


def test_bands_prefetch_reads_once(cache):
    bands = detect_anomaly.ForecastBands(cache, None, 1.5)
    device_id = _device()
    bands.prefetch([device_id, device_id])
    forecast = {"mean": [1.5] * 3, "quantiles": {"0.1": [1.0] * 3, "0.9": [2.0] * 3}}
    cache.put(_band_pointer(device_id), forecast)
    bands.prefetch([device_id])
    assert bands.check(_readings(device_id, [55.0])[0]) is None


def test_band_store_reuses_band(cache):
    store = detect_anomaly.BandStore(refresh_seconds=3600)
    device_id = _device()
    forecast = {"mean": [50.0] * 3, "quantiles": {"0.1": [49.0] * 3, "0.9": [51.0] * 3}}
    cache.put(_band_pointer(device_id), forecast)
    first = detect(_readings(device_id, [55.0]), cache, PARAMS, band_store=store)
    cache.client.delete(cache.device_key(device_id))
    second = detect(_readings(device_id, [55.0]), cache, PARAMS, band_store=store)
    without_store = detect(_readings(device_id, [55.0]), cache, PARAMS)
    assert first[0]["anomalous"] is True
    assert "outside forecast band" in second[0]["reason"]
    assert "outside forecast band" not in without_store[0]["reason"]


def test_band_store_rereads_expired(cache):
    store = detect_anomaly.BandStore(refresh_seconds=0)
    device_id = _device()
    assert detect(_readings(device_id, [55.0]), cache, PARAMS, band_store=store)[0]["metrics"] == []
    forecast = {"mean": [50.0] * 3, "quantiles": {"0.1": [49.0] * 3, "0.9": [51.0] * 3}}
    cache.put(_band_pointer(device_id), forecast)
    result = detect(_readings(device_id, [55.0]), cache, PARAMS, band_store=store)[0]
    assert "outside forecast band" in result["reason"]


def test_band_store_keeps_prefixes_apart():
    store = detect_anomaly.BandStore(refresh_seconds=3600)
    store.put("saodf:t:acme:", "dev-1", None)
    assert store.get("saodf:t:acme:", "dev-1") == (True, None)
    assert store.get("saodf:", "dev-1") == (False, None)


def test_band_store_clears_when_full():
    store = detect_anomaly.BandStore(refresh_seconds=3600, max_entries=2)
    for device_id in ("a", "b", "c"):
        store.put("saodf:", device_id, None)
    assert store.get("saodf:", "a") == (False, None)
    assert store.get("saodf:", "c") == (True, None)


def test_detector_run_reply(cache):
    detector = detect_anomaly.Detector()
    reply = detector.run({"readings": _readings(_device(), [*_normal(40), 105.0]), "warmup": 20})
    assert reply["count"] == 41
    assert reply["anomalies"] == 1
    assert "degraded" not in reply


def test_detector_run_rejects_bad_param(cache):
    with pytest.raises(detect_anomaly.DetectorConfigError, match="alpha=2.0 must be in"):
        detect_anomaly.Detector().run({"reading": {}, "alpha": 2})


def test_batch_reloads_flushed_script(cache, saodf_env):
    import redis

    from saodf.tenants import REDIS_ADMIN_USER, redis_admin_password

    readings = _fleet(devices=2, seconds=30)
    namespace = uuid.uuid4().hex[:8]
    first = detect(readings[:30], cache, PARAMS, namespace=f"b{namespace}")
    admin = redis.Redis(
        host=saodf_env.redis_host,
        port=saodf_env.redis_port,
        username=REDIS_ADMIN_USER,
        password=redis_admin_password(saodf_env),
    )
    admin.script_flush()
    admin.close()
    second = detect(readings[30:], cache, PARAMS, namespace=f"b{namespace}")
    single = _one_at_a_time(readings, cache, f"s{namespace}")
    batched = first + [{**r, "index": r["index"] + 30} for r in second]
    assert batched == single
