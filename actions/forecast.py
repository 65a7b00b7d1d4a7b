"""OpenWhisk action ``forecast``: a device's forecast from the Redis cache, or from the model.

Input: ``device_id`` and optional ``horizon`` (steps, at most the stored horizon; the
default is all of them). The device's pointer in Redis names its current forecast. On a
miss (the entry expired or was evicted) the action loads the registered model's
``champion`` version through :mod:`models.serving`, forecasts the one series from the
context record that the pointer names, and caches the full-length forecast under the key
of the version it used. The champion is loaded on the first miss and kept by the runtime
process: its alias is resolved again at most every ``ALIAS_REFRESH_SECONDS``, so a new
champion serves within that time, and the registry is not asked on every miss.

When Redis cannot be reached the action still answers: it takes the device's pointer from
what this process read before, or from the newest batch output in the lake, forecasts
with the champion and returns ``"cache": "unavailable"`` and ``"degraded": true``.

In a tenant's namespace (``SAODF_TENANT`` set by the gateway) the action reads and writes
only the tenant's cache keys as the tenant's Redis user and falls back only to the tenant's
lake. It returns the error of a device without a forecast for a device id of another
tenant or of the default deployment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from actions.cache import (
    REDIS_UNAVAILABLE_ERRORS,
    CacheError,
    DevicePointer,
    ForecastCache,
    json_safe,
    read_jsonl_line,
    truncate_forecast,
)
from actions.fallback import DegradedLog, LakePointerIndex, PointerMemo
from actions.redis_acl import FORECAST
from saodf.config import Settings, get_settings
from saodf.errors import SaodfError
from saodf.telemetry import DEVICE_ID_PATTERN
from saodf.tenants import runtime_settings, settings_tenant

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
ALIAS_REFRESH_SECONDS = 30.0
# Redis timeouts of the action's client: a hung Redis costs a request at most this long.
REDIS_TIMEOUT_SECONDS = 2.0


class ForecastRequestError(SaodfError):
    """A forecast request with a missing or invalid parameter."""


def _device_id(args: dict[str, Any]) -> str:
    device_id = args.get("device_id")
    if device_id is None:
        raise ForecastRequestError("device_id is missing; pass the device to forecast")
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
        raise ForecastRequestError(
            f"device_id {device_id!r} is invalid; use 1-128 characters from A-Z a-z 0-9 . _ -"
        )
    return device_id


def _not_found(device_id: str) -> CacheError:
    return CacheError(
        f"device {device_id!r} has no forecast pointer in the cache; run the "
        "pipeline's populate_cache task for the device's group"
    )


def _left_out(device_id: str, entry: dict[str, str]) -> CacheError:
    return CacheError(
        f"device {device_id!r} has no forecast because pipeline run "
        f"{entry.get('run_key', 'unknown')} left it out: {entry.get('reason', 'no reason recorded')}. "
        "Send complete readings for the device; a later run that prepares it restores its forecast"
    )


def _check_owner(device_id: str, settings: Settings) -> None:
    """Raise the no-pointer error for a device outside the tenant these settings serve.

    The error is the one of a device without a forecast, so a caller cannot tell another
    tenant's devices from devices that do not exist.
    """
    tenant = settings_tenant(settings)
    if tenant is not None and not tenant.owns_device(device_id):
        logger.warning("tenant %s requested device %s of another tenant", tenant.name, device_id)
        raise _not_found(device_id)


def _check_model(pointer: DevicePointer, settings: Settings) -> None:
    """Raise unless a tenant's pointer names one of the tenant's registered models.

    Raises:
        CacheError: the model name lacks the tenant's MLflow prefix.
    """
    tenant = settings_tenant(settings)
    if tenant is not None and not pointer.model_name.startswith(tenant.mlflow_prefix):
        logger.warning(
            "pointer of device %s names model %s outside tenant %s; not loading it",
            pointer.device_id,
            pointer.model_name,
            tenant.name,
        )
        raise CacheError(
            f"the pointer of device {pointer.device_id!r} names model {pointer.model_name!r}, "
            f"which is not a model of tenant {tenant.name!r} (names start with "
            f"{tenant.mlflow_prefix!r}); refill the cache from the tenant's pipeline"
        )


def _horizon(args: dict[str, Any], pointer: DevicePointer) -> int:
    horizon = args.get("horizon")
    if horizon is None:
        return pointer.horizon
    if isinstance(horizon, bool) or not isinstance(horizon, int):
        raise ForecastRequestError(f"horizon {horizon!r} is not a whole number of steps")
    if not 1 <= horizon <= pointer.horizon:
        raise ForecastRequestError(
            f"horizon {horizon} is out of range for device {pointer.device_id!r}; use 1 to "
            f"{pointer.horizon} steps of {pointer.freq}"
        )
    return horizon


class ChampionModels:
    """The loaded model of each registered name's alias, reused between activations.

    The alias is resolved again after ``refresh_seconds``. When that fails (the registry is
    down), the model loaded before keeps serving and the failure is logged.
    """

    def __init__(self, refresh_seconds: float = ALIAS_REFRESH_SECONDS):
        self.refresh_seconds = refresh_seconds
        self._models: dict[tuple[str, str, str], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, tracking_uri: str, name: str, alias: str = CHAMPION_ALIAS) -> Any:
        """Return the ``LoadedModel`` of ``name@alias``, loading it on first use."""
        from models.serving import load_model_version

        key = (tracking_uri, name, alias)
        with self._lock:
            cached = self._models.get(key)
            if cached is not None and time.monotonic() - cached[0] < self.refresh_seconds:
                return cached[1]
            try:
                model = load_model_version(tracking_uri, name, alias)
            except SaodfError as exc:
                if cached is None:
                    raise
                logger.warning(
                    "cannot resolve %s@%s again, serving version %s loaded before: %s",
                    name,
                    alias,
                    cached[1].version,
                    exc,
                )
                model = cached[1]
            self._models[key] = (time.monotonic(), model)
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


CHAMPIONS = ChampionModels()


def compute_forecast(
    pointer: DevicePointer, tracking_uri: str, alias: str = CHAMPION_ALIAS
) -> tuple[DevicePointer, dict[str, Any]]:
    """Forecast the device's stored context with the model's ``alias`` version.

    Returns the pointer updated to that model version and its full horizon, and the
    forecast. Nothing is cached.
    """
    from models.serving import forecast_record

    model = CHAMPIONS.get(tracking_uri, pointer.model_name, alias)
    record = read_jsonl_line(pointer.context_url, pointer.context_line)
    forecast = forecast_record(model, record, pointer.freq, model.prediction_length)
    updated = DevicePointer(
        device_id=pointer.device_id,
        model_name=model.name,
        model_version=str(model.version),
        forecast_start=pointer.forecast_start,
        freq=pointer.freq,
        horizon=int(model.prediction_length),
        group=pointer.group,
        context_url=pointer.context_url,
        context_line=pointer.context_line,
        volatility=pointer.volatility,
        metric=pointer.metric,
    )
    return updated, forecast


def forecast_on_miss(
    cache: ForecastCache, pointer: DevicePointer, tracking_uri: str, alias: str = CHAMPION_ALIAS
) -> tuple[DevicePointer, dict[str, Any]]:
    """Forecast the device's stored context with the model's current ``alias`` version and cache it.

    Returns the updated pointer (model version of the alias, its full horizon) and the
    forecast.
    """
    updated, forecast = compute_forecast(pointer, tracking_uri, alias)
    cache.put(updated, forecast)
    logger.info(
        "forecast of device %s recomputed with %s version %s and cached",
        pointer.device_id,
        updated.model_name,
        updated.model_version,
    )
    return updated, forecast


def _reply(
    device_id: str, pointer: DevicePointer, forecast: dict[str, Any], horizon: int, outcome: str
) -> dict[str, Any]:
    result = json_safe(truncate_forecast(forecast, horizon))
    return {
        "device_id": device_id,
        "model_name": pointer.model_name,
        "model_version": pointer.model_version,
        "forecast_start": pointer.forecast_start,
        "freq": pointer.freq,
        "horizon": horizon,
        "mean": result["mean"],
        "quantiles": result["quantiles"],
        "cache": outcome,
    }


def _serve(device_id: str, args: dict[str, Any]) -> dict[str, Any]:
    cache = _cache()
    pointer, forecast = cache.lookup(device_id)
    if pointer is None:
        entry = cache.left_out(device_id)
        if entry is not None:
            raise _left_out(device_id, entry)
        raise _not_found(device_id)
    _POINTERS.remember(pointer)
    horizon = _horizon(args, pointer)
    outcome = "hit"
    if forecast is None:
        outcome = "miss"
        _check_model(pointer, runtime_settings())
        pointer, forecast = forecast_on_miss(cache, pointer, get_settings().mlflow_tracking_uri)
        _POINTERS.remember(pointer)
        horizon = min(horizon, pointer.horizon)
    _DEGRADED.recovered()
    return _reply(device_id, pointer, forecast, horizon, outcome)


def _serve_without_cache(device_id: str, args: dict[str, Any], error: BaseException) -> dict:
    settings = runtime_settings()
    count = _DEGRADED.degraded(os.environ.get("__OW_ACTIVATION_ID", ""), error)
    pointer = _POINTERS.get(device_id)
    if pointer is None:
        pointer = _lake_index(settings).get(device_id)
    if pointer is None:
        raise CacheError(
            f"Redis is unavailable ({error}) and device {device_id!r} is in neither this "
            "runtime's memory nor a batch output under the lake's forecasts folder; retry "
            "when Redis is back"
        )
    horizon = _horizon(args, pointer)
    _check_model(pointer, settings)
    updated, forecast = compute_forecast(pointer, settings.mlflow_tracking_uri)
    reply = _reply(device_id, updated, forecast, min(horizon, updated.horizon), "unavailable")
    reply["degraded"] = True
    reply["degraded_count"] = count
    return reply


def main(args: dict[str, Any]) -> dict[str, Any]:
    """Run the OpenWhisk action: return the forecast of ``device_id`` for ``horizon`` steps."""
    try:
        device_id = _device_id(args)
        _check_owner(device_id, runtime_settings())
        try:
            return _serve(device_id, args)
        except REDIS_UNAVAILABLE_ERRORS as exc:
            return _serve_without_cache(device_id, args, exc)
    except SaodfError as exc:
        return {"error": str(exc)}


_CACHE: ForecastCache | None = None
_LAKE_INDEX: LakePointerIndex | None = None
_POINTERS = PointerMemo()
_DEGRADED = DegradedLog("forecast")


def _cache() -> ForecastCache:
    # One client per runtime process: the connection pool stays warm between activations.
    global _CACHE
    if _CACHE is None:
        _CACHE = ForecastCache.from_settings(
            runtime_settings(), timeout=REDIS_TIMEOUT_SECONDS, role=FORECAST
        )
    return _CACHE


def _lake_index(settings) -> LakePointerIndex:
    global _LAKE_INDEX
    if _LAKE_INDEX is None or _LAKE_INDEX.settings != settings:
        _LAKE_INDEX = LakePointerIndex(settings)
    return _LAKE_INDEX


def reset_cache() -> None:
    """Drop the process-wide Redis client, memo and models, so the next activation starts afresh."""
    global _CACHE, _LAKE_INDEX, _POINTERS, _DEGRADED
    _CACHE = None
    _LAKE_INDEX = None
    _POINTERS = PointerMemo()
    _DEGRADED = DegradedLog("forecast")
    CHAMPIONS.clear()
