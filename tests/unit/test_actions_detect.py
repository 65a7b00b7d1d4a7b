"""Tests of the detect_anomaly action against a real redis-server."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from actions import detect_anomaly
from actions.cache import DYNAMIC, DevicePointer, ForecastCache, redis_client
from actions.detect_anomaly import MAX_READINGS, detect
from saodf.telemetry import format_timestamp

START = datetime(2025, 4, 20, 12, 0, tzinfo=timezone.utc)
PARAMS = dict(detect_anomaly.DEFAULTS, warmup=20)


@pytest.fixture
def cache(redis_server, saodf_env) -> ForecastCache:
    detect_anomaly.reset_cache()
    yield ForecastCache(redis_client(saodf_env))
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
    assert results[1]["reason"] == "timestamp is missing"
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
