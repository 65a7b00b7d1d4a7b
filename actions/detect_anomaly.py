"""OpenWhisk action ``detect_anomaly``: flag telemetry readings by streaming z-score and forecast band.

Per device and metric, Redis keeps an exponentially weighted moving average (EWMA) of the
mean and variance in ``saodf:anomaly:{device_id}:{metric}``. One Lua script call scores up
to ``MAX_UPDATES_PER_CALL`` metric values of a batch, each against the state before it, and
updates the state atomically, so concurrent activations of the action never lose an update.
A reading is anomalous when, after ``warmup`` values of a metric, ``|z|`` exceeds
``threshold`` for any metric. A flagged value updates the state with
``alpha * flagged_weight`` so that a spike barely shifts the baseline, while a lasting level
change is still absorbed over time.

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

import json
import logging
import math
import os
import random
import re
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from redis.exceptions import NoScriptError

from actions.cache import REDIS_UNAVAILABLE_ERRORS, CacheError, DevicePointer, ForecastCache
from actions.fallback import DegradedLog, EwmaState
from actions.redis_acl import DETECTOR
from saodf.config import Settings
from saodf.errors import InvalidTelemetryError, SaodfError
from saodf.telemetry import metric_names, parse_timestamp, validate_message
from saodf.tenants import Tenant, runtime_settings, settings_tenant

logger = logging.getLogger(__name__)

STATE_KEY_PREFIX = "saodf:anomaly:"
MAX_READINGS = 500
# Metric updates per call of the update script. Redis runs one script at a time, so a bound
# keeps other clients (forecast lookups) waiting for at most one chunk.
MAX_UPDATES_PER_CALL = 1000

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

# KEYS: one state hash per update, in reading order; a key may repeat. ARGV: alpha, warmup,
# threshold, flagged_weight, ttl seconds, then the values of the keys in one space-separated
# string, so redis-py encodes about half as many arguments per metric. Returns one string of
# space-separated "count z" pairs in key order, where count is the number of values before
# this one: one bulk reply parses far faster in redis-py than an array of thousands of
# elements. Each value is scored against the state before it, which includes the earlier
# updates of the same call when a key repeats. The weight is at least 1 / (n + 1), so the
# first values give their plain mean and variance instead of a bias towards the first one.
# The standard deviation has a floor of 1e-3 * |mean| + 1e-9, so a metric that was constant
# so far gives a finite z.
_BATCH_UPDATE_SCRIPT = """
local alpha = tonumber(ARGV[1])
local warmup = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local flagged_weight = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local values = {}
for token in string.gmatch(ARGV[6], '%S+') do
  values[#values + 1] = tonumber(token)
end
local replies = {}
for i, key in ipairs(KEYS) do
  local state = redis.call('HMGET', key, 'n', 'mean', 'var')
  local x = values[i]
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
  redis.call('HSET', key, 'n', n + 1, 'mean', string.format('%.17g', mean),
    'var', string.format('%.17g', var))
  redis.call('EXPIRE', key, ttl)
  replies[i] = string.format('%d %.17g', n, z)
end
return table.concat(replies, ' ')
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


BandEntry = tuple[DevicePointer, dict[str, Any]] | None

# Seconds a process reuses a device's forecast band before it reads the pointer again. A
# newly cached forecast (a new model version) is therefore used at most this late.
BAND_REFRESH_SECONDS = 30.0
# Each entry lives a random share of the refresh time, from this share up to all of it, so
# the bands of a fleet first read together are not read again in the same batches.
BAND_REFRESH_MIN_SHARE = 0.5


class BandStore:
    """Forecast bands read by earlier activations of this process, reused until they expire.

    Keys are the cache's key prefix and the device id, so tenants never share an entry. A
    device without a band is remembered too, as ``None``.
    """

    def __init__(self, refresh_seconds: float = BAND_REFRESH_SECONDS, max_entries: int = 100_000):
        self.refresh_seconds = refresh_seconds
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, BandEntry]] = {}

    def get(self, key_prefix: str, device_id: str) -> tuple[bool, BandEntry]:
        """Return ``(True, entry)`` for a fresh entry, else ``(False, None)``."""
        item = self._entries.get((key_prefix, device_id))
        if item is None or item[0] <= time.monotonic():
            return False, None
        return True, item[1]

    def put(self, key_prefix: str, device_id: str, entry: BandEntry) -> None:
        if len(self._entries) >= self.max_entries:
            # Dropping everything is rare (a fleet larger than max_entries) and costs one
            # pointer read per device on the next batches, so no LRU bookkeeping is kept.
            self._entries.clear()
        share = BAND_REFRESH_MIN_SHARE + (1 - BAND_REFRESH_MIN_SHARE) * random.random()
        expires = time.monotonic() + self.refresh_seconds * share
        self._entries[(key_prefix, device_id)] = (expires, entry)


class ForecastBands:
    """Forecast quantile bands of the devices in one activation, each read from Redis once.

    With a ``store``, bands that an earlier activation read less than the store's refresh
    time ago are reused without a Redis read.
    """

    def __init__(
        self,
        cache: ForecastCache,
        metric_override: str | None,
        band_factor: float,
        store: BandStore | None = None,
    ):
        self.cache = cache
        self.metric_override = metric_override
        self.band_factor = band_factor
        self.store = store
        self._entries: dict[str, BandEntry] = {}

    def prefetch(self, device_ids: list[str]) -> None:
        """Read the pointers and forecasts of ``device_ids`` in two pipelined round trips.

        A malformed pointer leaves that device without a band and logs a warning.

        Raises:
            redis.RedisError: Redis failed or cannot be reached.
        """
        missing = self.unread(device_ids)
        if not missing:
            return
        pipe = self.cache.client.pipeline(transaction=False)
        self.queue_pointer_reads(pipe, missing)
        self.load(missing, pipe.execute())

    def unread(self, device_ids: list[str]) -> list[str]:
        """Return the distinct ``device_ids`` whose band was not read yet, in first-seen order.

        Fresh bands of the store are taken over first and count as read.
        """
        missing = []
        for device_id in dict.fromkeys(device_ids):
            if device_id in self._entries:
                continue
            if self.store is not None:
                fresh, entry = self.store.get(self.cache.key_prefix, device_id)
                if fresh:
                    self._entries[device_id] = entry
                    continue
            missing.append(device_id)
        return missing

    def queue_pointer_reads(self, pipe: Any, device_ids: list[str]) -> None:
        """Add one HGETALL per device pointer to ``pipe``, for :meth:`load` to parse."""
        for device_id in device_ids:
            pipe.hgetall(self.cache.device_key(device_id))

    def load(self, device_ids: list[str], pointer_replies: list[Any]) -> None:
        """Parse the pointers read for ``device_ids``, then read their forecasts in one round trip.

        Raises:
            redis.RedisError: Redis failed or cannot be reached.
        """
        pointers: dict[str, DevicePointer] = {}
        for device_id, fields in zip(device_ids, pointer_replies, strict=True):
            self._entries[device_id] = None
            if not fields:
                continue
            try:
                pointer = DevicePointer.from_hash(fields)
            except CacheError as exc:
                logger.warning("forecast band of device %s unavailable: %s", device_id, exc)
                continue
            pointers[device_id] = replace(pointer, key_prefix=self.cache.key_prefix)
        if pointers:
            pipe = self.cache.client.pipeline(transaction=False)
            for pointer in pointers.values():
                pipe.get(self.cache.forecast_key(pointer))
            for (device_id, pointer), raw in zip(pointers.items(), pipe.execute(), strict=True):
                if raw is not None:
                    self._entries[device_id] = (pointer, json.loads(raw))
        if self.store is not None:
            for device_id in device_ids:
                self.store.put(self.cache.key_prefix, device_id, self._entries[device_id])

    def _entry(self, device_id: str) -> tuple[DevicePointer, dict[str, Any]] | None:
        if device_id not in self._entries:
            self.prefetch([device_id])
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
    cache: ForecastCache,
    valid: Scored,
    params: dict[str, float],
    namespace: str,
    bands: ForecastBands | None = None,
) -> list[tuple[int, float]]:
    """Score ``valid`` in Redis; with ``bands``, read their pointers in the same round trip."""
    keys = [
        cache.key(state_key(message["device_id"], metric, namespace))
        for _, message, metrics in valid
        for metric in metrics
    ]
    values = [repr(message[metric]) for _, message, metrics in valid for metric in metrics]
    unread = bands.unread([message["device_id"] for _, message, _ in valid]) if bands else []
    settings_args = [
        params["alpha"],
        int(params["warmup"]),
        params["threshold"],
        params["flagged_weight"],
        int(params["state_ttl_seconds"]),
    ]
    chunks = range(0, len(keys), MAX_UPDATES_PER_CALL)
    # EVALSHA goes into the pipeline as a plain command: redis-py sends SCRIPT EXISTS before
    # any pipeline that runs a Script object, one round trip more per batch.
    sha = cache.client.register_script(_BATCH_UPDATE_SCRIPT).sha

    def execute() -> list[Any]:
        pipe = cache.client.pipeline(transaction=False)
        for first in chunks:
            chunk_keys = keys[first : first + MAX_UPDATES_PER_CALL]
            chunk_values = " ".join(values[first : first + MAX_UPDATES_PER_CALL])
            pipe.evalsha(sha, len(chunk_keys), *chunk_keys, *settings_args, chunk_values)
        if bands is not None:
            bands.queue_pointer_reads(pipe, unread)
        return pipe.execute()

    try:
        pipe_replies = execute()
    except NoScriptError:
        # Redis restarted or flushed its scripts, so no update of the batch ran: run it again.
        cache.client.script_load(_BATCH_UPDATE_SCRIPT)
        pipe_replies = execute()
    if bands is not None:
        bands.load(unread, pipe_replies[len(chunks) :])
    replies: list[tuple[int, float]] = []
    for reply in pipe_replies[: len(chunks)]:
        fields = (reply.decode() if isinstance(reply, bytes) else reply).split(" ")
        replies.extend(
            (int(count), float(z_text))
            for count, z_text in zip(fields[::2], fields[1::2], strict=True)
        )
    return replies


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
    band_store: BandStore | None = None,
) -> list[dict[str, Any]]:
    """Score each reading with state in Redis and return one result per reading, in input order.

    Invalid readings, and with ``tenant`` readings of devices outside it, return
    ``{"valid": False, "reason": ...}`` and leave the state as it is. ``band_store`` keeps
    forecast bands between calls (see :class:`BandStore`).

    Raises:
        redis.ConnectionError, redis.TimeoutError: Redis cannot be reached; nothing was
            scored, although Redis may have applied some of the updates.
    """
    params = params or dict(DEFAULTS)
    results, valid = _validate(readings, tenant)
    bands = ForecastBands(cache, forecast_metric, params["band_factor"], band_store)
    replies = _score_in_redis(cache, valid, params, namespace, bands)
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


class Detector:
    """Scorer of activations that keeps one Redis client and the fallback state between them.

    The action's ``main`` uses one per runtime process. The stream consumer uses one in its
    own process, so both score with the same code and state keys.
    """

    def __init__(self, settings: Settings | None = None, role: str = DETECTOR):
        # None: the runtime's settings (scoped by SAODF_TENANT), read when first needed.
        self.settings = settings
        # Redis ACL role of the client (see actions.redis_acl). A tenant's settings ignore it.
        self.role = role
        self._cache: ForecastCache | None = None
        self.state = EwmaState()
        self.bands = BandStore()
        self.degraded_log = DegradedLog("detect_anomaly")

    def cache(self) -> ForecastCache:
        """Return the Redis cache client, built on first use so that its pool stays warm."""
        if self._cache is None:
            settings = self.settings or runtime_settings()
            self._cache = ForecastCache.from_settings(
                settings, timeout=REDIS_TIMEOUT_SECONDS, role=self.role
            )
        return self._cache

    def run(
        self,
        args: dict[str, Any],
        namespace: str = "",
        tenant: Tenant | None = None,
        activation_id: str = "",
    ) -> dict[str, Any]:
        """Score ``args["reading"]`` or ``args["readings"]`` and return the action's reply.

        When Redis cannot be reached, scores with the in-process state and marks the reply
        degraded.

        Raises:
            SaodfError: a parameter or the input is invalid.
        """
        params = _parameters(args)
        readings = _readings(args)
        forecast_metric = args.get("forecast_metric")
        if forecast_metric is not None and not isinstance(forecast_metric, str):
            raise DetectorConfigError(f"forecast_metric={forecast_metric!r} is not a string")
        degraded = False
        try:
            results = detect(
                readings, self.cache(), params, forecast_metric, namespace, tenant, self.bands
            )
            self.degraded_log.recovered()
        except REDIS_UNAVAILABLE_ERRORS as exc:
            self.degraded_log.degraded(activation_id, exc)
            results = detect_in_process(readings, self.state, params, namespace, tenant)
            degraded = True
        anomalies = sum(1 for result in results if result["anomalous"])
        invalid = sum(1 for result in results if not result["valid"])
        reply = {
            "results": results,
            "count": len(results),
            "anomalies": anomalies,
            "invalid": invalid,
        }
        if degraded:
            reply["degraded"] = True
            reply["cache"] = "unavailable"
            reply["degraded_count"] = self.degraded_log.count
        return reply


def main(args: dict[str, Any]) -> dict[str, Any]:
    """Run the OpenWhisk action: score ``reading`` or up to 500 ``readings``."""
    try:
        tenant = settings_tenant(runtime_settings())
        return _DETECTOR.run(
            args,
            namespace=os.environ.get("__OW_NAMESPACE", ""),
            tenant=tenant,
            activation_id=os.environ.get("__OW_ACTIVATION_ID", ""),
        )
    except SaodfError as exc:
        return {"error": str(exc)}


# Redis timeouts of the action's client: a hung Redis costs a batch at most this long.
REDIS_TIMEOUT_SECONDS = 2.0
_DETECTOR = Detector()


def reset_cache() -> None:
    """Drop the process-wide Redis client and in-process state, so the next activation starts afresh."""
    global _DETECTOR
    _DETECTOR = Detector()
