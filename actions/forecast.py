"""OpenWhisk action ``forecast``: a device's forecast from the Redis cache, or from the model.

Input: ``device_id`` and optional ``horizon`` (steps, at most the stored horizon; the
default is all of them). The device's pointer in Redis names its current forecast. On a
miss (the entry expired or was evicted) the action loads the registered model's
``champion`` version through :mod:`models.serving`, forecasts the one series from the
context record that the pointer names, and caches the full-length forecast under the key
of the version it used. The model is loaded on the first miss and kept by the runtime
process for later activations.
"""

from __future__ import annotations

import logging
from typing import Any

from actions.cache import (
    CacheError,
    DevicePointer,
    ForecastCache,
    json_safe,
    read_jsonl_line,
    truncate_forecast,
)
from saodf.config import get_settings
from saodf.errors import SaodfError
from saodf.telemetry import DEVICE_ID_PATTERN

logger = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


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


def forecast_on_miss(
    cache: ForecastCache, pointer: DevicePointer, tracking_uri: str, alias: str = CHAMPION_ALIAS
) -> tuple[DevicePointer, dict[str, Any]]:
    """Forecast the device's stored context with the model's current ``alias`` version and cache it.

    Returns the updated pointer (model version of the alias, its full horizon) and the
    forecast.
    """
    from models.serving import forecast_record, load_model_version

    model = load_model_version(tracking_uri, pointer.model_name, alias)
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
    cache.put(updated, forecast)
    logger.info(
        "forecast of device %s recomputed with %s version %s and cached",
        pointer.device_id,
        model.name,
        model.version,
    )
    return updated, forecast


def main(args: dict[str, Any]) -> dict[str, Any]:
    """Run the OpenWhisk action: return the forecast of ``device_id`` for ``horizon`` steps."""
    try:
        device_id = _device_id(args)
        cache = _cache()
        pointer, forecast = cache.lookup(device_id)
        if pointer is None:
            raise CacheError(
                f"device {device_id!r} has no forecast pointer in the cache; run the "
                "pipeline's populate_cache task for the device's group"
            )
        horizon = _horizon(args, pointer)
        outcome = "hit"
        if forecast is None:
            outcome = "miss"
            pointer, forecast = forecast_on_miss(cache, pointer, get_settings().mlflow_tracking_uri)
            horizon = min(horizon, pointer.horizon)
    except SaodfError as exc:
        return {"error": str(exc)}
    result = json_safe(truncate_forecast(forecast, horizon))
    result.pop("samples", None)
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


_CACHE: ForecastCache | None = None


def _cache() -> ForecastCache:
    # One client per runtime process: the connection pool stays warm between activations.
    global _CACHE
    if _CACHE is None:
        _CACHE = ForecastCache.from_settings()
    return _CACHE


def reset_cache() -> None:
    """Drop the process-wide Redis client, so that the next activation reads the settings again."""
    global _CACHE
    _CACHE = None
