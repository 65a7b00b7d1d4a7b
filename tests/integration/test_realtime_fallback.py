"""The actions while Redis is down: a redis-server of the test's own, stopped mid-test by pid."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import requests

from actions import detect_anomaly
from actions import forecast as forecast_action
from actions.cache import STABLE, DevicePointer, ForecastCache, redis_client
from actions.gateway import DEFAULT_ACTIONS, serve
from actions.redis_acl import WRITER
from actions.services import cache_redis_spec
from saodf.config import get_settings, reset_settings
from saodf.secrets import gateway_keys
from saodf.stack import process
from saodf.telemetry import format_timestamp

pytestmark = pytest.mark.integration

FORECAST = {
    "mean": [1.0, 2.0, 3.0],
    "quantiles": {"0.1": [0.5, 1.5, 2.5], "0.5": [1.0, 2.0, 3.0], "0.9": [1.5, 2.5, 3.5]},
}
MODEL_FORECAST = {
    "mean": [7.0, 8.0, 9.0],
    "quantiles": {"0.1": [6.0, 7.0, 8.0], "0.5": [7.0, 8.0, 9.0], "0.9": [8.0, 9.0, 10.0]},
}
START = datetime(2025, 4, 20, 12, 0, tzinfo=timezone.utc)


@dataclass
class StubModel:
    name: str = "saodf-forecaster-5min"
    version: str = "2"
    prediction_length: int = 3


@pytest.fixture
def redis_spec(tmp_path, monkeypatch):
    """Settings of a fresh home and lake with a redis-server of its own, started."""
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAODF_LAKE_URL", (tmp_path / "lake").as_uri())
    monkeypatch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
    monkeypatch.delenv("SAODF_REDIS_HOST", raising=False)
    reset_settings()
    spec = cache_redis_spec(get_settings(), name="fallback-redis")
    process.start(spec)
    forecast_action.reset_cache()
    detect_anomaly.reset_cache()
    yield spec
    process.stop(spec)
    forecast_action.reset_cache()
    detect_anomaly.reset_cache()
    reset_settings()


@pytest.fixture
def model_calls(monkeypatch) -> list:
    """Replace the registry and the model with stubs, recording each forecast request."""
    import models.serving

    calls: list = []
    monkeypatch.setattr(models.serving, "load_model_version", lambda uri, n, a: StubModel())

    def predict(model, record, freq, horizon):
        calls.append((record["target"], freq, horizon))
        return MODEL_FORECAST

    monkeypatch.setattr(models.serving, "forecast_record", predict)
    return calls


def _context(tmp_path) -> str:
    path = tmp_path / "context.jsonl"
    path.write_text(json.dumps({"start": "2025-04-20 00:00:00", "target": [4.0, 5.0]}) + "\n")
    return path.as_uri()


def _pointer(device_id: str, context_url: str) -> DevicePointer:
    return DevicePointer(
        device_id=device_id,
        model_name="saodf-forecaster-5min",
        model_version="1",
        forecast_start="2025-04-20T12:00:00+00:00",
        freq="5min",
        horizon=3,
        group="5min",
        context_url=context_url,
        context_line=0,
        volatility=STABLE,
        metric="temperature",
    )


def _device() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}"


def test_forecast_served_from_model(redis_spec, model_calls, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("__OW_ACTIVATION_ID", "act-1")
    device_id = _device()
    ForecastCache(redis_client(get_settings(), role=WRITER)).put(
        _pointer(device_id, _context(tmp_path)), FORECAST
    )
    assert forecast_action.main({"device_id": device_id})["cache"] == "hit"
    process.stop(redis_spec)
    with caplog.at_level(logging.WARNING, logger="actions.fallback"):
        reply = forecast_action.main({"device_id": device_id, "horizon": 2})
    assert "error" not in reply
    assert reply["cache"] == "unavailable"
    assert reply["degraded"] is True
    assert reply["degraded_count"] == 1
    assert reply["mean"] == [7.0, 8.0]
    assert reply["model_version"] == "2"
    assert model_calls == [([4.0, 5.0], "5min", 3)]
    assert "forecast activation act-1 degraded: Redis unavailable" in caplog.text


def test_forecast_recovers_with_redis(redis_spec, model_calls, tmp_path):
    device_id = _device()
    ForecastCache(redis_client(get_settings(), role=WRITER)).put(
        _pointer(device_id, _context(tmp_path)), FORECAST
    )
    forecast_action.main({"device_id": device_id})
    process.stop(redis_spec)
    assert forecast_action.main({"device_id": device_id})["cache"] == "unavailable"
    process.start(redis_spec)
    # The restarted server is empty: the device needs its pointer again.
    ForecastCache(redis_client(get_settings(), role=WRITER)).put(
        _pointer(device_id, _context(tmp_path)), FORECAST
    )
    reply = forecast_action.main({"device_id": device_id})
    assert reply["cache"] == "hit"
    assert "degraded" not in reply


def _write_lake_batch(settings, device_id: str) -> None:
    """Write one run's prepared test channel and batch-transform manifest under the lake."""
    from pathlib import Path
    from urllib.parse import urlparse

    lake = Path(urlparse(settings.lake_url).path)
    prepared = lake / "prepared" / "run-1"
    (prepared / "groups" / "5min" / "test").mkdir(parents=True)
    (prepared / "groups" / "5min" / "test" / "data.jsonl").write_text(
        json.dumps({"start": "2025-04-20 00:00:00", "target": [3.0, 3.5]}) + "\n"
    )
    (prepared / "manifest.json").write_text(
        json.dumps(
            {
                "groups": [
                    {
                        "group": "5min",
                        "freq": "5min",
                        "test": "groups/5min/test/data.jsonl",
                        "series": [{"device_id": device_id, "target_metric": "temperature"}],
                    }
                ]
            }
        )
    )
    output = lake / "forecasts" / "run-1" / "5min"
    output.mkdir(parents=True)
    (output / "manifest.json").write_text(
        json.dumps(
            {
                "group": "5min",
                "freq": "5min",
                "model_name": "saodf-forecaster-5min",
                "model_version": "1",
                "prediction_length": 3,
                "series": [
                    {"device_id": device_id, "line": 0, "forecast_start": "2025-04-20T12:00:00Z"}
                ],
            }
        )
    )


def test_forecast_pointer_from_lake(redis_spec, model_calls):
    process.stop(redis_spec)
    device_id = _device()
    _write_lake_batch(get_settings(), device_id)
    reply = forecast_action.main({"device_id": device_id})
    assert reply["cache"] == "unavailable"
    assert reply["forecast_start"] == "2025-04-20T12:00:00Z"
    assert model_calls == [([3.0, 3.5], "5min", 3)]


def test_forecast_unknown_device_error(redis_spec, model_calls):
    process.stop(redis_spec)
    reply = forecast_action.main({"device_id": _device()})
    assert "Redis is unavailable" in reply["error"]
    assert "retry when Redis is back" in reply["error"]


def _readings(device_id: str, values: list[float]) -> list[dict]:
    return [
        {
            "device_id": device_id,
            "timestamp": format_timestamp(START + timedelta(minutes=5 * i)),
            "temperature": value,
        }
        for i, value in enumerate(values)
    ]


def _normal(count: int) -> list[float]:
    return [50.0 + (i % 5) * 0.5 for i in range(count)]


def test_detector_uses_process_state(redis_spec):
    process.stop(redis_spec)
    readings = _readings(_device(), [*_normal(40), 105.0])
    reply = detect_anomaly.main({"readings": readings, "warmup": 20})
    assert reply["degraded"] is True
    assert reply["cache"] == "unavailable"
    assert reply["anomalies"] == 1
    assert reply["results"][-1]["anomalous"] is True
    assert reply["results"][-1]["degraded"] is True


def test_detector_state_spans_activations(redis_spec):
    process.stop(redis_spec)
    device_id = _device()
    detect_anomaly.main({"readings": _readings(device_id, _normal(40)), "warmup": 20})
    spike = {"device_id": device_id, "timestamp": "2025-04-21T00:00:00Z", "temperature": 105.0}
    reply = detect_anomaly.main({"reading": spike, "warmup": 20})
    assert reply["anomalies"] == 1
    assert reply["degraded_count"] == 2


def test_gateway_counts_degraded(redis_spec):
    settings = get_settings()
    gateway_keys(settings)
    detector = [spec for spec in DEFAULT_ACTIONS if spec.name == "detect_anomaly"]
    server = serve(settings, actions=detector, port=0)
    try:
        user, key = gateway_keys(settings)[settings.gateway_namespace].split(":", 1)
        process.stop(redis_spec)
        url = f"{server.url}/api/v1/namespaces/_/actions/detect_anomaly"
        readings = _readings(_device(), [*_normal(40), 105.0])
        reply = requests.post(
            url,
            params={"blocking": "true", "result": "true"},
            json={"readings": readings, "warmup": 20},
            auth=(user, key),
            timeout=60,
        )
        metrics = requests.get(f"{server.url}/metrics", auth=(user, key), timeout=30).text
    finally:
        server.close()
    assert reply.status_code == 200
    assert reply.json()["degraded"] is True
    assert reply.json()["anomalies"] == 1
    labels = f'namespace="{settings.gateway_namespace}",action="detect_anomaly"'
    assert f"saodf_gateway_degraded_total{{{labels}}} 1" in metrics
    assert "saodf_cache_up 0" in metrics
