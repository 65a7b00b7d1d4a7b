"""Left-out entries: devices that preprocessing skipped, against a real redis-server."""

from __future__ import annotations

import json
import uuid

import pytest

from actions import forecast as forecast_action
from actions.cache import (
    LEFT_OUT_TTL_SECONDS,
    STABLE,
    CacheError,
    DevicePointer,
    ForecastCache,
    record_left_out,
    redis_client,
)
from actions.redis_acl import WRITER
from saodf import pipeline
from saodf.tenants import admin_redis_client

pytestmark = pytest.mark.integration

REASON = "57% of the target is still missing after imputation"
FORECAST = {"mean": [1.0, 2.0, 3.0], "quantiles": {"0.5": [1.0, 2.0, 3.0]}}


@pytest.fixture
def cache(redis_server, saodf_env) -> ForecastCache:
    forecast_action.reset_cache()
    # The admin user also reads TTLs; main() connects as the forecast role.
    yield ForecastCache(admin_redis_client(saodf_env))
    forecast_action.reset_cache()


def _device() -> str:
    return f"dev-{uuid.uuid4().hex[:12]}"


def _run_key() -> str:
    return f"window-{uuid.uuid4().hex[:16]}"


def _write_run(settings, run_key: str, skipped: dict[str, str], prepared: list[str] = ()) -> None:
    """Write a run's prepared report.json and an empty forecasts folder into the lake."""
    paths = pipeline.urls(settings, run_key)
    prepared_dir = _local(paths["prepared"])
    prepared_dir.mkdir(parents=True)
    devices = [{"device_id": device, "skipped": reason} for device, reason in skipped.items()]
    devices += [{"device_id": device, "skipped": None} for device in prepared]
    (prepared_dir / "report.json").write_text(json.dumps({"run_key": run_key, "devices": devices}))
    _local(paths["forecasts"]).mkdir(parents=True)


def _local(url: str):
    from pathlib import Path
    from urllib.parse import urlsplit

    return Path(urlsplit(url).path)


def _pointer(device_id: str) -> DevicePointer:
    return DevicePointer(
        device_id=device_id,
        model_name="saodf-forecaster-5min",
        model_version="1",
        forecast_start="2025-04-20T12:00:00+00:00",
        freq="5min",
        horizon=3,
        group="5min",
        context_url="file:///unused.jsonl",
        context_line=1,
        volatility=STABLE,
    )


def test_populate_records_left_out(cache, saodf_env):
    device_id, run_key = _device(), _run_key()
    _write_run(saodf_env, run_key, {device_id: REASON}, prepared=[_device()])
    result = pipeline.populate_cache({"run_key": run_key}, saodf_env)
    assert result["stats"]["left_out"] == 1
    assert cache.left_out(device_id)["reason"] == REASON
    assert cache.left_out(device_id)["run_key"] == run_key


def test_left_out_entry_long_ttl(cache, saodf_env):
    device_id = _device()
    cache.mark_left_out(device_id, REASON, _run_key())
    ttl = cache.client.ttl(f"saodf:leftout:{device_id}")
    assert LEFT_OUT_TTL_SECONDS - 60 < ttl <= LEFT_OUT_TTL_SECONDS


def test_forecast_miss_returns_reason(cache, saodf_env):
    device_id, run_key = _device(), _run_key()
    _write_run(saodf_env, run_key, {device_id: REASON})
    pipeline.populate_cache({"run_key": run_key}, saodf_env)
    reply = forecast_action.main({"device_id": device_id})
    assert REASON in reply["error"]
    assert f"pipeline run {run_key} left it out" in reply["error"]


def test_forecast_miss_unknown_device(cache):
    reply = forecast_action.main({"device_id": _device()})
    assert "has no forecast pointer in the cache" in reply["error"]


def test_put_clears_left_out(cache):
    device_id = _device()
    cache.mark_left_out(device_id, REASON, _run_key())
    cache.put(_pointer(device_id), FORECAST)
    assert cache.left_out(device_id) is None


def test_left_out_then_prepared_serves(cache):
    device_id = _device()
    cache.mark_left_out(device_id, REASON, _run_key())
    cache.put(_pointer(device_id), FORECAST)
    assert forecast_action.main({"device_id": device_id})["cache"] == "hit"


def test_left_out_tenant_prefix(cache, saodf_env):
    device_id, run_key = _device(), _run_key()
    _write_run(saodf_env, run_key, {device_id: REASON})
    pipeline.populate_cache({"run_key": run_key, "tenant": "acme"}, saodf_env)
    tenant_cache = ForecastCache(redis_client(saodf_env, role=WRITER), key_prefix="saodf:t:acme:")
    assert tenant_cache.left_out(device_id)["reason"] == REASON
    assert cache.left_out(device_id) is None


def test_left_out_missing_report(cache, saodf_env, tmp_path):
    assert record_left_out((tmp_path / "none" / "report.json").as_uri(), cache, "run-1") == 0


def test_left_out_invalid_report(cache, tmp_path):
    report = tmp_path / "report.json"
    report.write_text('{"devices": [{"skipped": "x"}]}')
    with pytest.raises(CacheError, match="preprocessing report .* is invalid"):
        record_left_out(report.as_uri(), cache, "run-1")


def test_left_out_reason_truncated(cache):
    device_id = _device()
    cache.mark_left_out(device_id, "x" * 5000, _run_key())
    assert len(cache.left_out(device_id)["reason"]) == 500
