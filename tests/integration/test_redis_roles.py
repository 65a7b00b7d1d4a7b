"""Each service's Redis ACL role on a real redis-server: its code runs, other commands fail.

Every test of a code path also checks Redis's ACL LOG, because some callers ignore a
rejected command (the monitor reads OBJECT IDLETIME with ``raise_on_error=False``).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from actions import detect_anomaly
from actions import forecast as forecast_action
from actions.cache import DevicePointer, ForecastCache, redis_client
from actions.monitor import BELOW_THRESHOLD, HitMonitor, MonitorOptions, model_forecaster
from actions.redis_acl import (
    CONSUMER,
    DETECTOR,
    EVALUATION,
    FORECAST,
    GATEWAY,
    HEALTH,
    MONITOR,
    READER,
    WRITER,
    role_user,
)
from saodf import pipeline
from saodf.cli import app
from saodf.config import get_settings, reset_settings
from saodf.stack import process, services
from saodf.tenants import admin_redis_client, create_tenant, tenant_settings
from streaming.anomaly_consumer import IN_PROCESS, ConsumerOptions, InProcessDetector
from tests.integration.test_cli_cache import FORECAST as BATCH_FORECAST
from tests.integration.test_cli_cache import _write_run

pytestmark = pytest.mark.integration

TENANT = "acme"
TENANT_KEY = f"saodf:t:{TENANT}:fc:0123"


@dataclass
class StubModel:
    """The registry's champion as models.serving returns it, without MLflow."""

    name: str
    version: str = "2"
    prediction_length: int = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A redis-server of its own, configured as `saodf stack up` does, with tenant acme."""
    home = tmp_path_factory.mktemp("redis-roles")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_HOME", str(home))
        patch.setenv("SAODF_LAKE_URL", (home / "lake").as_uri())
        patch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
        patch.delenv("SAODF_REDIS_HOST", raising=False)
        patch.delenv("SAODF_TENANT", raising=False)
        for name in [name for name in os.environ if name.startswith("SAODF_REDIS_USER")]:
            patch.delenv(name)
        reset_settings()
        settings = get_settings()
        create_tenant(TENANT, settings=settings)
        spec = services.redis_spec(settings)
        process.start(spec)
        try:
            yield settings
        finally:
            process.stop(spec)
            reset_settings()


@pytest.fixture
def admin(stack):
    """The admin client, with the scripts flushed (so that roles run SCRIPT LOAD) and no ACL LOG."""
    client = admin_redis_client(stack)
    client.script_flush()
    client.acl_log_reset()
    return client


@pytest.fixture
def stub_models(monkeypatch):
    """Serve every champion as a StubModel whose forecast is the batch forecast."""
    import models.serving

    monkeypatch.setattr(
        models.serving, "load_model_version", lambda uri, name, alias: StubModel(name)
    )
    monkeypatch.setattr(
        models.serving, "forecast_record", lambda model, record, freq, horizon: BATCH_FORECAST
    )
    forecast_action.reset_cache()
    detect_anomaly.reset_cache()
    yield
    forecast_action.reset_cache()
    detect_anomaly.reset_cache()


def _denials(admin, settings, role: str) -> list[dict]:
    user = role_user(settings, role)
    return [entry for entry in admin.acl_log() if entry["username"] == user]


def _lake(settings) -> Path:
    return Path(settings.lake_url.removeprefix("file://"))


def _populate(settings, devices: list[str]) -> str:
    """Run `saodf cache populate` for a new finished run of ``devices``; return its run key."""
    run_key = f"run-{uuid.uuid4().hex[:8]}"
    _write_run(_lake(settings), run_key, "2026-01-01T00:00:00Z", "5min", "1", devices)
    result = CliRunner().invoke(app, ["cache", "populate", "--run-key", run_key])
    assert result.exit_code == 0, result.output
    return run_key


def _devices(count: int = 1) -> list[str]:
    return [f"dev-{uuid.uuid4().hex[:10]}" for _ in range(count)]


def _role_cache(settings, role: str) -> ForecastCache:
    return ForecastCache(redis_client(settings, role=role))


def test_writer_populates_cache(stack, admin):
    devices = _devices(2)
    _populate(stack, devices)
    pointer = _role_cache(stack, READER).pointer(devices[1])
    assert pointer.model_version == "1"
    assert _denials(admin, stack, WRITER) == []


def test_writer_populates_tenant(stack, admin):
    device = f"{TENANT}.{_devices()[0]}"
    scope = pipeline.with_tenant({"run_key": f"r-{uuid.uuid4().hex[:8]}"}, TENANT)
    tenant = tenant_settings(TENANT, stack)
    _write_run(_lake(tenant), scope["run_key"], "2026-01-01T00:00:00Z", "5min", "1", [device])
    stats = pipeline.populate_cache(scope)["stats"]
    # The tenant's own user reads what the writer stored under the tenant's prefix.
    tenant_cache = ForecastCache.from_settings(tenant, role=FORECAST)
    assert stats["entries"] == 1
    assert tenant_cache.pointer(device) is not None
    assert _role_cache(stack, READER).pointer(device) is None
    assert _denials(admin, stack, WRITER) == []


def test_writer_marks_left_out(stack, admin, stub_models):
    device = _devices()[0]
    _role_cache(stack, WRITER).mark_left_out(device, "too few readings", "run-1")
    reply = forecast_action.main({"device_id": device})
    assert "left it out: too few readings" in reply["error"]
    assert _denials(admin, stack, WRITER) == []
    assert _denials(admin, stack, FORECAST) == []


def test_forecast_hit_miss_hit(stack, admin, stub_models):
    device = _devices()[0]
    _populate(stack, [device])
    assert forecast_action.main({"device_id": device})["cache"] == "hit"
    # As the demo does: delete the forecast so that the next call takes the miss path.
    writer = _role_cache(stack, WRITER)
    writer.client.delete(writer.pointer(device).forecast_key)
    miss = forecast_action.main({"device_id": device})
    assert miss["cache"] == "miss"
    assert miss["model_version"] == "2"
    assert forecast_action.main({"device_id": device})["cache"] == "hit"
    assert _denials(admin, stack, FORECAST) == []


def test_forecast_unknown_device(stack, admin, stub_models):
    reply = forecast_action.main({"device_id": _devices()[0]})
    assert "has no forecast pointer" in reply["error"]
    assert _denials(admin, stack, FORECAST) == []


def _readings(device: str, count: int) -> list[dict]:
    return [
        {
            "device_id": device,
            "timestamp": f"2025-04-20T00:{50 + minute % 10:02d}:00Z",
            "temperature": 50.0 + minute % 3,
        }
        for minute in range(count)
    ]


def test_detector_scores_with_band(stack, admin):
    device = _devices()[0]
    _populate(stack, [device])
    detect_anomaly.reset_cache()
    reply = detect_anomaly.main({"readings": _readings(device, 20)})
    detect_anomaly.reset_cache()
    assert reply["count"] == 20
    assert "degraded" not in reply
    assert _denials(admin, stack, DETECTOR) == []


def test_consumer_scores_in_process(stack, admin):
    device = _devices()[0]
    _populate(stack, [device])
    detector = InProcessDetector(stack, ConsumerOptions(detector=IN_PROCESS))
    _, results = detector.call(_readings(device, 20))
    state_key = f"saodf:anomaly@{stack.gateway_namespace}:{device}:temperature"
    assert len(results) == 20
    assert admin.exists(state_key) == 1
    assert _denials(admin, stack, CONSUMER) == []


def test_monitor_tick_refreshes(stack, admin, stub_models):
    admin.delete("saodf:cache:ttl", "saodf:cache:prefetch")
    devices = _devices(2)
    _populate(stack, devices)
    monitor_cache = _role_cache(stack, MONITOR)
    options = MonitorOptions(min_requests=2, repeat_misses=2, interval_seconds=1.0)
    monitor = HitMonitor(monitor_cache, options, model_forecaster(stack))
    writer = _role_cache(stack, WRITER)
    action = _role_cache(stack, FORECAST)
    for _ in range(2):
        writer.client.delete(writer.pointer(devices[0]).forecast_key)
        assert action.lookup(devices[0])[1] is None
    assert action.lookup(devices[1])[1] is not None
    report = monitor.tick()
    stats = _role_cache(stack, GATEWAY).stats()
    assert report.state == BELOW_THRESHOLD
    assert report.held == [devices[0]]
    assert report.refreshed == [devices[0]]
    assert writer.pointer(devices[0]).model_version == "2"
    assert stats["monitor"]["state"] == BELOW_THRESHOLD
    assert _denials(admin, stack, MONITOR) == []
    assert _denials(admin, stack, GATEWAY) == []


def test_reader_reads_stats_and_entries(stack, admin):
    device = _devices()[0]
    _populate(stack, [device])
    reader = _role_cache(stack, READER)
    pointer = reader.pointer(device)
    assert reader.peek(pointer) == json.loads(json.dumps(BATCH_FORECAST))
    assert reader.left_out(device) is None
    assert reader.stats()["maxmemory"] > 0
    assert _denials(admin, stack, READER) == []


def test_evaluation_cleans_its_state(stack, admin):
    from saodf.evaluation.anomalies import platform_detector

    cache = _role_cache(stack, EVALUATION)
    _, cleanup, params = platform_detector(cache, run_id="roles")
    # Scored as the evaluation's detector scores the rows of one series.
    results = detect_anomaly.detect(_readings("eval-roles-pump", 20), cache, params)
    assert len(results) == 20
    assert cleanup() == 1
    assert admin.exists("saodf:anomaly:eval-roles-pump:temperature") == 0
    assert _denials(admin, stack, EVALUATION) == []


def test_health_pings(stack, admin):
    assert services.redis_ping(stack)
    assert redis_client(stack, role=HEALTH).ping()
    assert _denials(admin, stack, HEALTH) == []


# Commands and keys that each role's code never needs: all must fail with NOPERM.
FORBIDDEN = [
    (READER, "del", ("saodf:fc:0123",)),
    (READER, "set", ("saodf:fc:0123", "x")),
    (READER, "flushall", ()),
    (READER, "config", ("get", "maxmemory")),
    (READER, "get", (TENANT_KEY,)),
    (WRITER, "incr", ("saodf:cache:hits",)),
    (WRITER, "hset", ("saodf:cache:ttl", "stable", "1")),
    (WRITER, "hset", ("saodf:anomaly:pump:temperature", "n", "1")),
    (WRITER, "keys", ("*",)),
    (WRITER, "flushdb", ()),
    (FORECAST, "get", (TENANT_KEY,)),
    (FORECAST, "hset", ("saodf:cache:ttl", "stable", "1")),
    (FORECAST, "hgetall", ("saodf:anomaly:pump:temperature",)),
    (FORECAST, "scan", ("0",)),
    (FORECAST, "eval", ("return 1", "0")),
    (DETECTOR, "set", ("saodf:fc:0123", "x")),
    (DETECTOR, "hset", ("saodf:device:pump", "group", "x")),
    (DETECTOR, "del", ("saodf:anomaly:pump:temperature",)),
    (DETECTOR, "get", (TENANT_KEY,)),
    (CONSUMER, "incr", ("saodf:cache:hits",)),
    (CONSUMER, "info", ()),
    (MONITOR, "incr", ("saodf:cache:hits",)),
    (MONITOR, "del", ("saodf:cache:missed:1",)),
    (MONITOR, "hset", ("saodf:anomaly:pump:temperature", "n", "1")),
    (MONITOR, "get", (TENANT_KEY,)),
    (MONITOR, "flushall", ()),
    (GATEWAY, "get", ("saodf:fc:0123",)),
    (GATEWAY, "hgetall", ("saodf:device:pump",)),
    (GATEWAY, "set", ("saodf:cache:hits", "0")),
    (EVALUATION, "hset", ("saodf:anomaly:pump:temperature", "n", "1")),
    (EVALUATION, "del", ("saodf:fc:0123",)),
    (HEALTH, "get", ("saodf:fc:0123",)),
    (HEALTH, "info", ()),
]


@pytest.mark.parametrize(("role", "command", "args"), FORBIDDEN)
def test_role_forbidden(stack, role, command, args):
    client = redis_client(stack, role=role)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.execute_command(command, *args)


def test_single_user_override(tmp_path, monkeypatch):
    """SAODF_REDIS_USER: every role logs in as one user, as with an external Redis."""
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAODF_REDIS_PORT", str(process.free_port()))
    monkeypatch.setenv("SAODF_REDIS_USER", "app")
    monkeypatch.delenv("SAODF_REDIS_HOST", raising=False)
    for name in [name for name in os.environ if name.startswith("SAODF_REDIS_USER_")]:
        monkeypatch.delenv(name)
    reset_settings()
    settings = get_settings()
    spec = services.redis_spec(settings)
    process.start(spec)
    try:
        writer = _role_cache(settings, WRITER)
        action = _role_cache(settings, FORECAST)
        pointer = DevicePointer(
            device_id="pump-1",
            model_name="m",
            model_version="1",
            forecast_start="2025-04-20T00:50:00+00:00",
            freq="5min",
            horizon=3,
            group="5min",
            context_url="file:///unused.jsonl",
            context_line=0,
            volatility="stable",
        )
        writer.put(pointer, BATCH_FORECAST)
        users = admin_redis_client(settings).acl_users()
        assert action.lookup("pump-1")[1] is not None
        assert "app" in users
        assert "saodf-forecast" not in users
        with pytest.raises(redis.exceptions.NoPermissionError):
            writer.client.flushall()
    finally:
        process.stop(spec)
        reset_settings()
