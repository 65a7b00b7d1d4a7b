"""Tests of the forecast action: cache hits against a real redis-server, and the miss path."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest

from actions import forecast as forecast_action
from actions.cache import STABLE, DevicePointer, ForecastCache, redis_client
from actions.redis_acl import WRITER

FORECAST = {
    "mean": [1.0, 2.0, 3.0],
    "quantiles": {"0.1": [0.5, 1.5, 2.5], "0.5": [1.0, 2.0, 3.0], "0.9": [1.5, 2.5, 3.5]},
}


@pytest.fixture
def cache(redis_server, saodf_env) -> ForecastCache:
    forecast_action.reset_cache()
    # Forecasts are filled and deleted as the writer role; main() connects as the forecast role.
    yield ForecastCache(redis_client(saodf_env, role=WRITER))
    forecast_action.reset_cache()


def _pointer(device_id: str, context_url: str = "file:///unused.jsonl") -> DevicePointer:
    return DevicePointer(
        device_id=device_id,
        model_name="saodf-forecaster-5min",
        model_version="1",
        forecast_start="2025-04-20T12:00:00+00:00",
        freq="5min",
        horizon=3,
        group="5min",
        context_url=context_url,
        context_line=1,
        volatility=STABLE,
    )


def _device() -> str:
    return f"dev-{uuid.uuid4().hex[:12]}"


def test_hit_truncates_horizon(cache):
    device_id = _device()
    cache.put(_pointer(device_id), FORECAST)
    reply = forecast_action.main({"device_id": device_id, "horizon": 2})
    assert reply["cache"] == "hit"
    assert reply["mean"] == [1.0, 2.0]
    assert reply["quantiles"]["0.9"] == [1.5, 2.5]
    assert reply["model_version"] == "1"


def test_horizon_above_stored_rejected(cache):
    device_id = _device()
    cache.put(_pointer(device_id), FORECAST)
    reply = forecast_action.main({"device_id": device_id, "horizon": 4})
    assert "horizon 4 is out of range" in reply["error"]


def test_horizon_not_integer_rejected(cache):
    device_id = _device()
    cache.put(_pointer(device_id), FORECAST)
    reply = forecast_action.main({"device_id": device_id, "horizon": "2"})
    assert reply["error"] == "horizon '2' is not a whole number of steps"


def test_missing_device_id_rejected(cache):
    assert forecast_action.main({})["error"].startswith("device_id is missing")


def test_invalid_device_id_rejected(cache):
    assert "device_id '../x' is invalid" in forecast_action.main({"device_id": "../x"})["error"]


def test_unknown_device_rejected(cache):
    reply = forecast_action.main({"device_id": _device()})
    assert "has no forecast pointer" in reply["error"]


@dataclass
class StubModel:
    name: str = "saodf-forecaster-5min"
    version: str = "2"
    prediction_length: int = 3


def test_miss_uses_champion_and_caches(cache, tmp_path, monkeypatch):
    import models.serving

    context = tmp_path / "data.jsonl"
    records = [{"start": "2025-04-20 00:00:00", "target": [1.0]}, {"start": "x", "target": [7.0]}]
    context.write_text("".join(json.dumps(r) + "\n" for r in records))
    requests = []

    def load(tracking_uri, name, alias):
        requests.append((name, alias))
        return StubModel()

    def predict(model, record, freq, horizon):
        requests.append((record["target"], freq, horizon))
        return FORECAST

    monkeypatch.setattr(models.serving, "load_model_version", load)
    monkeypatch.setattr(models.serving, "forecast_record", predict)
    device_id = _device()
    cache.put(_pointer(device_id, context.as_uri()), FORECAST)
    cache.client.delete(_pointer(device_id).forecast_key)

    reply = forecast_action.main({"device_id": device_id})
    assert reply["cache"] == "miss"
    assert reply["model_version"] == "2"
    assert requests == [("saodf-forecaster-5min", "champion"), ([7.0], "5min", 3)]
    assert cache.pointer(device_id).model_version == "2"
    assert forecast_action.main({"device_id": device_id})["cache"] == "hit"


def _stub_serving(monkeypatch, loads: list, versions: list[str] | None = None):
    import models.serving

    versions = versions or ["2"]

    def load(tracking_uri, name, alias):
        loads.append((name, alias))
        return StubModel(version=versions[min(len(loads), len(versions)) - 1])

    monkeypatch.setattr(models.serving, "load_model_version", load)
    monkeypatch.setattr(models.serving, "forecast_record", lambda m, r, f, h: FORECAST)


def _expired_device(cache, tmp_path) -> str:
    context = tmp_path / "data.jsonl"
    context.write_text('{"start": "2025-04-20 00:00:00", "target": [1.0]}\n' * 2)
    device_id = _device()
    pointer = _pointer(device_id, context.as_uri())
    cache.put(pointer, FORECAST)
    cache.client.delete(pointer.forecast_key)
    return device_id


def test_champion_loaded_once(cache, tmp_path, monkeypatch):
    loads = []
    _stub_serving(monkeypatch, loads)
    first = forecast_action.main({"device_id": _expired_device(cache, tmp_path)})
    second = forecast_action.main({"device_id": _expired_device(cache, tmp_path)})
    assert first["cache"] == "miss"
    assert second["cache"] == "miss"
    assert loads == [("saodf-forecaster-5min", "champion")]


def test_champion_alias_resolved_again(cache, tmp_path, monkeypatch):
    loads = []
    _stub_serving(monkeypatch, loads, versions=["2", "3"])
    monkeypatch.setattr(forecast_action.CHAMPIONS, "refresh_seconds", 0.0)
    forecast_action.main({"device_id": _expired_device(cache, tmp_path)})
    reply = forecast_action.main({"device_id": _expired_device(cache, tmp_path)})
    assert len(loads) == 2
    assert reply["model_version"] == "3"


def test_champion_kept_when_registry_down(cache, tmp_path, monkeypatch):
    import models.serving
    from models.errors import RegistryError

    loads = []
    _stub_serving(monkeypatch, loads)
    monkeypatch.setattr(forecast_action.CHAMPIONS, "refresh_seconds", 0.0)
    forecast_action.main({"device_id": _expired_device(cache, tmp_path)})

    def unreachable(tracking_uri, name, alias):
        raise RegistryError("registry unreachable")

    monkeypatch.setattr(models.serving, "load_model_version", unreachable)
    reply = forecast_action.main({"device_id": _expired_device(cache, tmp_path)})
    assert reply["cache"] == "miss"
    assert reply["model_version"] == "2"
