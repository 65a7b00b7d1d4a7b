"""OpenWhisk action ``detect_anomaly``: flag telemetry readings by streaming z-score and forecast band.

Per device and metric, Redis keeps an exponentially weighted moving average (EWMA) of the
mean and variance in ``saodf:anomaly:{device_id}:{metric}``. A Lua script scores each
value against the state before the value and then updates it, atomically, so concurrent
activations of the action never lose an update. A reading is anomalous when, after
``warmup`` values of a metric, ``|z|`` exceeds ``threshold`` for any metric. A flagged
value updates the state with ``alpha * flagged_weight`` so that a spike barely shifts the
baseline, while a lasting level change is still absorbed over time.

When the device's cached forecast covers the reading's timestamp, the value of the
forecast metric is also checked against the [0.1, 0.9] quantile band, widened around
its centre by ``band_factor``.

Activations through the gateway keep their state per namespace, in
``saodf:anomaly@{namespace}:{device_id}:{metric}``, so one namespace's readings never move
another's baseline. In a tenant's namespace (``SAODF_TENANT`` set by the gateway) these keys
and the forecast lookups move under the tenant's Redis key prefix, for example
``saodf:t:acme:anomaly@acme:acme.pump-1:temperature``, and the action connects as the
tenant's Redis user. Readings of devices outside the tenant are reported invalid and
change no state.

When Redis cannot be reached, the action scores with the same arithmetic on state held in
the runtime process, without the forecast band, and marks the reply and each result
``"degraded": true`` with ``"cache": "unavailable"``. That state starts empty, so the
first ``warmup`` values of each metric in the outage are not flagged.
"""

from __future__ import annotations

import logging
import math
import os
import re
from datetime import datetime, timezone
from typing import Any

from actions.cache import REDIS_UNAVAILABLE_ERRORS, CacheError, DevicePointer, ForecastCache
from actions.fallback import DegradedLog, EwmaState
from saodf.errors import InvalidTelemetryError, SaodfError
from saodf.telemetry import metric_names, parse_timestamp, validate_message
from saodf.tenants import Tenant, runtime_settings, settings_tenant

logger = logging.getLogger(__name__)

STATE_KEY_PREFIX = "saodf:anomaly:"
MAX_READINGS = 500

# Defaults from a grid search on SKAB valve1 (16 experiments, one device each, 1 s readings,
# labels from its ``anomaly`` column, tuned and scored on the same data): point precision
# 0.90, point recall 0.54, 15 of 16 anomaly segments hit. Callers override any of them per
# activation. A flagged value moves the baseline with weight alpha * flagged_weight, so a
# lasting level change stops being flagged only after about 1 / (alpha * flagged_weight)
# readings (20,000 with these defaults).
DEFAULTS: dict[str, float] = {
    "alpha": 0.005,
    "threshold": 3.5,
    "warmup": 300,
    "flagged_weight": 0.01,
    "band_factor": 1.5,
    "state_ttl_seconds": 7 * 24 * 3600,
}

# KEYS[1] state hash; ARGV: value, alpha, warmup, threshold, flagged_weight, ttl seconds.
# Returns {count before this value, z as a string}. The weight is at least 1 / (n + 1), so the
# first values give their plain mean and variance instead of a bias towards the first one. The
# standard deviation has a floor of 1e-3 * |mean| + 1e-9, so a metric that was constant so far
# gives a finite z.
_UPDATE_SCRIPT = """
local state = redis.call('HMGET', KEYS[1], 'n', 'mean', 'var')
local x = tonumber(ARGV[1])
local alpha = tonumber(ARGV[2])
local warmup = tonumber(ARGV[3])
local threshold = tonumber(ARGV[4])
local flagged_weight = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local n = tonumber(state[1]) or 0
local mean = tonumber(state[2])
local var = tonumber(state[3]) or 0
local z = 0
if mean == nil then
  mean = x
  var = 0
else
  local sd = math.sqrt(var)
  local floor = 1e-3 * math.abs(mean) + 1e-9
  if sd < floor then sd = floor end
  z = (x - mean) / sd
  local weight = math.max(alpha, 1 / (n + 1))
  if n >= warmup and math.abs(z) > threshold then weight = alpha * flagged_weight end
  local diff = x - mean
  local increment = weight * diff
  mean = mean + increment
  var = (1 - weight) * (var + diff * increment)
end
redis.call('HSET', KEYS[1], 'n', n + 1, 'mean', string.format('%.17g', mean),
  'var', string.format('%.17g', var))
redis.call('EXPIRE', KEYS[1], ttl)
return {n, string.format('%.17g', z)}
"""


class DetectorConfigError(SaodfError):
    """A detector parameter of an activation that is out of range."""


def state_key(device_id: str, metric: str, namespace: str = "") -> str:
    """Return the Redis key of one metric's detector state; ``@`` never occurs in device ids."""
    if namespace:
        return f"{STATE_KEY_PREFIX[:-1]}@{namespace}:{device_id}:{metric}"
    return f"{STATE_KEY_PREFIX}{device_id}:{metric}"


def _parameters(args: dict[str, Any]) -> dict[str, float]:
    params = dict(DEFAULTS)
    for name in DEFAULTS:
        if name not in args:
            continue
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DetectorConfigError(f"parameter {name}={value!r} is not a number")
        params[name] = float(value)
    if not 0 < params["alpha"] <= 1:
        raise DetectorConfigError(f"alpha={params['alpha']} must be in (0, 1]")
    if not 0 <= params["flagged_weight"] <= 1:
        raise DetectorConfigError(f"flagged_weight={params['flagged_weight']} must be in [0, 1]")
    for name in ("threshold", "band_factor", "state_ttl_seconds"):
        if params[name] <= 0:
            raise DetectorConfigError(f"{name}={params[name]} must be positive")
    if params["warmup"] < 0:
        raise DetectorConfigError(f"warmup={params['warmup']} must not be negative")
    return params


def _readings(args: dict[str, Any]) -> list[Any]:
    if "readings" in args:
        readings = args["readings"]
        if not isinstance(readings, list):
            raise DetectorConfigError(
                f"readings is a {type(readings).__name__}; send a JSON array of messages"
            )
        if len(readings) > MAX_READINGS:
            raise DetectorConfigError(
                f"readings has {len(readings)} messages; the maximum per activation is "
                f"{MAX_READINGS}, so split the batch"
            )
        return readings
    if "reading" in args:
        return [args["reading"]]
    raise DetectorConfigError("missing input: send 'reading' (one message) or 'readings' (a list)")


class ForecastBands:
    """Forecast quantile bands of the devices in one activation, each read from Redis once."""

    def __init__(self, cache: ForecastCache, metric_override: str | None, band_factor: float):
        self.cache = cache
        self.metric_override = metric_override
        self.band_factor = band_factor
        self._entries: dict[str, tuple[DevicePointer, dict[str, Any]] | None] = {}

    def _entry(self, device_id: str) -> tuple[DevicePointer, dict[str, Any]] | None:
        if device_id not in self._entries:
            entry = None
            try:
                pointer = self.cache.pointer(device_id)
                forecast = self.cache.peek(pointer) if pointer is not None else None
                if pointer is not None and forecast is not None:
                    entry = (pointer, forecast)
            except CacheError as exc:
                logger.warning("forecast band of device %s unavailable: %s", device_id, exc)
            self._entries[device_id] = entry
        return self._entries[device_id]

    def check(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Return the band violation of a message, or None when inside or not covered."""
        entry = self._entry(message["device_id"])
        if entry is None:
            return None
        pointer, forecast = entry
        metric = self.metric_override or pointer.metric
        if not metric or metric not in message:
            return None
        step = _step_index(pointer, parse_timestamp(message["timestamp"]))
        quantiles = forecast.get("quantiles", {})
        low_values, high_values = quantiles.get("0.1"), quantiles.get("0.9")
        if step is None or low_values is None or high_values is None:
            return None
        if step >= min(len(low_values), len(high_values), pointer.horizon):
            return None
        low, high = float(low_values[step]), float(high_values[step])
        centre = (low + high) / 2
        half_width = (high - low) / 2 * self.band_factor
        value = message[metric]
        if centre - half_width <= value <= centre + half_width:
            return None
        return {
            "metric": metric,
            "value": value,
            "low": centre - half_width,
            "high": centre + half_width,
            "step": step,
            "model_version": pointer.model_version,
        }


# Fixed-width pandas offset aliases in seconds; calendar frequencies (M, W) cover no fixed step.
_FREQ_UNITS = {"s": 1, "S": 1, "min": 60, "T": 60, "h": 3600, "H": 3600, "D": 86400}
_FREQ_PATTERN = re.compile(r"^(\d*)(min|[sSTHhD])$")


def step_seconds(freq: str) -> float | None:
    """Return the width in seconds of a fixed-width frequency such as ``5min`` or ``1H``."""
    match = _FREQ_PATTERN.match(freq.strip())
    if match is None:
        return None
    return int(match.group(1) or 1) * _FREQ_UNITS[match.group(2)]


def _step_index(pointer: DevicePointer, moment: datetime) -> int | None:
    width = step_seconds(pointer.freq)
    if width is None:
        return None
    start = datetime.fromisoformat(pointer.forecast_start.replace("Z", "+00:00"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    offset = (moment - start).total_seconds()
    if offset < 0:
        return None
    return int(offset // width)


Scored = list[tuple[int, dict[str, Any], list[str]]]


def _validate(
    readings: list[Any], tenant: Tenant | None = None
) -> tuple[list[dict[str, Any] | None], Scored]:
    results: list[dict[str, Any] | None] = [None] * len(readings)
    valid: Scored = []
    for index, reading in enumerate(readings):
        try:
            message = validate_message(reading)
            if tenant is not None and not tenant.owns_device(message["device_id"]):
                raise InvalidTelemetryError(
                    f"device_id {message['device_id']!r} is not a device of this namespace; "
                    f"send readings of devices {tenant.name}.*",
                    payload=reading,
                )
        except InvalidTelemetryError as exc:
            results[index] = {
                "index": index,
                "valid": False,
                "anomalous": False,
                "score": None,
                "metrics": [],
                "reason": exc.reason,
                "reading": reading,
            }
            continue
        valid.append((index, message, metric_names(message)))
    return results, valid


def _score_in_redis(
    cache: ForecastCache, valid: Scored, params: dict[str, float], namespace: str
) -> list[tuple[int, float]]:
    script = cache.client.register_script(_UPDATE_SCRIPT)
    pipe = cache.client.pipeline(transaction=False)
    for _, message, metrics in valid:
        for metric in metrics:
            script(
                keys=[cache.key(state_key(message["device_id"], metric, namespace))],
                args=[
                    repr(message[metric]),
                    params["alpha"],
                    int(params["warmup"]),
                    params["threshold"],
                    params["flagged_weight"],
                    int(params["state_ttl_seconds"]),
                ],
                client=pipe,
            )
    return [(int(count), float(z_text)) for count, z_text in pipe.execute()]


def _score_in_process(
    state: EwmaState, valid: Scored, params: dict[str, float], namespace: str
) -> list[tuple[int, float]]:
    replies = []
    for _, message, metrics in valid:
        for metric in metrics:
            replies.append(
                state.update(
                    state_key(message["device_id"], metric, namespace),
                    float(message[metric]),
                    params["alpha"],
                    params["warmup"],
                    params["threshold"],
                    params["flagged_weight"],
                )
            )
    return replies


def _assemble(
    results: list[dict[str, Any] | None],
    valid: Scored,
    replies: list[tuple[int, float]],
    params: dict[str, float],
    bands: ForecastBands | None,
) -> list[dict[str, Any]]:
    scores = iter(replies)
    for index, message, metrics in valid:
        z_scores: dict[str, float] = {}
        triggered: list[str] = []
        for metric in metrics:
            count, z = next(scores)
            z_scores[metric] = round(z, 4)
            if count >= params["warmup"] and abs(z) > params["threshold"]:
                triggered.append(metric)
        score = max((abs(z) for z in z_scores.values()), default=0.0)
        reasons = [
            f"{metric} z={z_scores[metric]:+.2f} beyond ±{params['threshold']:g}"
            for metric in triggered
        ]
        band = bands.check(message) if bands is not None else None
        if band is not None:
            if band["metric"] not in triggered:
                triggered.append(band["metric"])
            reasons.append(
                f"{band['metric']}={band['value']:g} outside forecast band "
                f"[{band['low']:.4g}, {band['high']:.4g}] of model version "
                f"{band['model_version']}"
            )
        results[index] = {
            "index": index,
            "valid": True,
            "device_id": message["device_id"],
            "timestamp": message["timestamp"],
            "anomalous": bool(triggered),
            "score": round(score, 4) if math.isfinite(score) else None,
            "metrics": triggered,
            "z_scores": z_scores,
            "reason": "; ".join(reasons) if reasons else "within normal range",
        }
        if bands is None:
            results[index]["degraded"] = True
    return [result for result in results if result is not None]


def detect(
    readings: list[Any],
    cache: ForecastCache,
    params: dict[str, float] | None = None,
    forecast_metric: str | None = None,
    namespace: str = "",
    tenant: Tenant | None = None,
) -> list[dict[str, Any]]:
    """Score each reading with state in Redis and return one result per reading, in input order.

    Invalid readings, and with ``tenant`` readings of devices outside it, return
    ``{"valid": False, "reason": ...}`` and leave the state as it is.

    Raises:
        redis.ConnectionError, redis.TimeoutError: Redis cannot be reached; nothing was
            scored, although Redis may have applied some of the updates.
    """
    params = params or dict(DEFAULTS)
    results, valid = _validate(readings, tenant)
    replies = _score_in_redis(cache, valid, params, namespace)
    bands = ForecastBands(cache, forecast_metric, params["band_factor"])
    return _assemble(results, valid, replies, params, bands)


def detect_in_process(
    readings: list[Any],
    state: EwmaState,
    params: dict[str, float] | None = None,
    namespace: str = "",
    tenant: Tenant | None = None,
) -> list[dict[str, Any]]:
    """Score each reading with in-process state, without forecast bands; mark each degraded."""
    params = params or dict(DEFAULTS)
    results, valid = _validate(readings, tenant)
    replies = _score_in_process(state, valid, params, namespace)
    return _assemble(results, valid, replies, params, None)


def main(args: dict[str, Any]) -> dict[str, Any]:
    """Run the OpenWhisk action: score ``reading`` or up to 500 ``readings``."""
    namespace = os.environ.get("__OW_NAMESPACE", "")
    degraded = False
    try:
        tenant = settings_tenant(runtime_settings())
        params = _parameters(args)
        readings = _readings(args)
        forecast_metric = args.get("forecast_metric")
        if forecast_metric is not None and not isinstance(forecast_metric, str):
            raise DetectorConfigError(f"forecast_metric={forecast_metric!r} is not a string")
        try:
            results = detect(readings, _cache(), params, forecast_metric, namespace, tenant)
            _DEGRADED.recovered()
        except REDIS_UNAVAILABLE_ERRORS as exc:
            _DEGRADED.degraded(os.environ.get("__OW_ACTIVATION_ID", ""), exc)
            results = detect_in_process(readings, _STATE, params, namespace, tenant)
            degraded = True
    except SaodfError as exc:
        return {"error": str(exc)}
    anomalies = sum(1 for result in results if result["anomalous"])
    invalid = sum(1 for result in results if not result["valid"])
    reply = {"results": results, "count": len(results), "anomalies": anomalies, "invalid": invalid}
    if degraded:
        reply["degraded"] = True
        reply["cache"] = "unavailable"
        reply["degraded_count"] = _DEGRADED.count
    return reply


# Redis timeouts of the action's client: a hung Redis costs a batch at most this long.
REDIS_TIMEOUT_SECONDS = 2.0
_CACHE: ForecastCache | None = None
_STATE = EwmaState()
_DEGRADED = DegradedLog("detect_anomaly")


def _cache() -> ForecastCache:
    # One client per runtime process: the connection pool stays warm between activations.
    global _CACHE
    if _CACHE is None:
        _CACHE = ForecastCache.from_settings(runtime_settings(), timeout=REDIS_TIMEOUT_SECONDS)
    return _CACHE


def reset_cache() -> None:
    """Drop the process-wide Redis client and in-process state, so the next activation starts afresh."""
    global _CACHE, _STATE, _DEGRADED
    _CACHE = None
    _STATE = EwmaState()
    _DEGRADED = DegradedLog("detect_anomaly")
