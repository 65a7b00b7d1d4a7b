"""Redis forecast cache shared by the batch path (populate) and the real-time actions (read).

Keys, all under the ``saodf:`` prefix. Each service's Redis ACL user may touch only those
that its code uses (see :mod:`actions.redis_acl`):

- ``saodf:fc:{sha256}``: one forecast in the SageMaker DeepAR output format, as JSON. The
  hash covers device id, forecast window start, horizon, frequency, model name and model
  version, so a new model version never serves a forecast of an older one.
- ``saodf:device:{device_id}``: a hash pointing at the device's current forecast and at the
  context record (its line in the prepared test channel) that the cache-miss path feeds to
  the model.
- ``saodf:cache:hits`` and ``saodf:cache:misses``: counters for :meth:`ForecastCache.stats`.
- ``saodf:cache:missed:{bucket}``: a sorted set of the devices that missed during one
  ``MISS_BUCKET_SECONDS`` interval, scored by their miss count, for the hit monitor.
- ``saodf:cache:ttl``: the TTL policy (seconds per volatility class), written by the hit
  monitor. Its fields take precedence over the TTLs a :class:`ForecastCache` was built with.
- ``saodf:leftout:{device_id}``: a hash with the ``reason`` and ``run_key`` of the last
  pipeline run whose preprocessing left the device out, so a forecast request for a device
  without a pointer can return why. It is outside ``saodf:device:`` because the hit monitor
  reads every key there as a pointer.

A tenant's cache (:meth:`ForecastCache.from_settings` with settings from
:func:`saodf.tenants.tenant_settings`) keeps the same keys under the tenant's prefix instead
of ``saodf:``, such as ``saodf:t:acme:fc:{sha256}`` and ``saodf:t:acme:device:{device_id}``,
and connects as the tenant's Redis ACL user, which may touch no other key.

Forecast entries expire after a TTL chosen by device volatility. Under ``allkeys-lru`` Redis
may also evict any key, pointers included, when it reaches ``maxmemory``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import fsspec
import redis

from saodf.config import Settings, get_settings
from saodf.errors import SaodfError

logger = logging.getLogger(__name__)

# Prefix of every key of the default (tenant-less) deployment; tenants replace it with theirs.
DEFAULT_KEY_PREFIX = "saodf:"
FORECAST_KEY_PREFIX = "saodf:fc:"
DEVICE_KEY_PREFIX = "saodf:device:"
HITS_KEY = "saodf:cache:hits"
MISSES_KEY = "saodf:cache:misses"
MISSED_KEY_PREFIX = "saodf:cache:missed:"
TTL_POLICY_KEY = "saodf:cache:ttl"
# Hash of the hit monitor's last check (see actions.monitor).
MONITOR_KEY = "saodf:cache:monitor"
MISS_BUCKET_SECONDS = 10
# Miss buckets outlive the longest monitor window that reads them.
MISS_BUCKET_TTL_SECONDS = 3600
LEFT_OUT_KEY_PREFIX = "saodf:leftout:"
# A left-out entry outlives many hourly runs; a later run that prepares the device removes it.
LEFT_OUT_TTL_SECONDS = 30 * 24 * 3600
# Characters of a skip reason kept in a left-out entry.
MAX_LEFT_OUT_REASON_CHARS = 500
# How long a ForecastCache reuses the TTL policy it read from Redis.
TTL_POLICY_REFRESH_SECONDS = 5.0

DYNAMIC = "dynamic"
STABLE = "stable"
VOLATILITY_CLASSES = (DYNAMIC, STABLE)
DYNAMIC_TTL_SECONDS = 300
STABLE_TTL_SECONDS = 3600
# Coefficient of variation (std / |mean|) above which a device counts as dynamic.
DEFAULT_CV_THRESHOLD = 0.1
# Number of most recent finite targets that the coefficient of variation is computed on.
VOLATILITY_WINDOW = 60


# KEYS: forecast key, hits counter, misses counter, miss bucket; ARGV: device id, bucket TTL.
# Returns the forecast text, or nil on a miss. One round trip counts the outcome and, on a
# miss, records the device for the hit monitor.
_LOOKUP_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('INCR', KEYS[2])
else
  redis.call('INCR', KEYS[3])
  redis.call('ZINCRBY', KEYS[4], 1, ARGV[1])
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
return value
"""

# Errors that mean Redis cannot be reached, as opposed to a rejected command.
REDIS_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    OSError,
)


class CacheError(SaodfError):
    """A forecast cache entry, pointer or batch output that cannot be used."""


@dataclass(frozen=True)
class DevicePointer:
    """Where the current forecast and the model context of one device are."""

    device_id: str
    model_name: str
    model_version: str
    forecast_start: str
    freq: str
    horizon: int
    group: str
    context_url: str
    context_line: int
    volatility: str
    # Telemetry metric the forecast target was built from; empty when the manifest omits it.
    metric: str = ""
    # Key prefix of the cache the pointer was read from; not stored in Redis.
    key_prefix: str = field(default=DEFAULT_KEY_PREFIX, compare=False)

    @property
    def forecast_key(self) -> str:
        return scoped_key(
            forecast_key(
                self.device_id,
                self.forecast_start,
                self.horizon,
                self.freq,
                self.model_name,
                self.model_version,
            ),
            self.key_prefix,
        )

    def to_hash(self) -> dict[str, str]:
        fields = asdict(self)
        fields.pop("key_prefix")
        return {name: str(value) for name, value in fields.items()}

    @classmethod
    def from_hash(cls, fields: Mapping[str, str]) -> "DevicePointer":
        try:
            return cls(
                device_id=fields["device_id"],
                model_name=fields["model_name"],
                model_version=fields["model_version"],
                forecast_start=fields["forecast_start"],
                freq=fields["freq"],
                horizon=int(fields["horizon"]),
                group=fields["group"],
                context_url=fields["context_url"],
                context_line=int(fields["context_line"]),
                volatility=fields["volatility"],
                metric=fields.get("metric", ""),
            )
        except (KeyError, ValueError) as exc:
            raise CacheError(
                f"device pointer {dict(fields)!r} is incomplete or malformed ({exc}); "
                "refill the cache with populate_from_forecasts"
            ) from None


def forecast_key(
    device_id: str,
    forecast_start: str,
    horizon: int,
    freq: str,
    model_name: str,
    model_version: str,
) -> str:
    """Return the Redis key of one forecast: a sha256 over every field that changes it."""
    material = json.dumps(
        [device_id, forecast_start, int(horizon), freq, model_name, str(model_version)],
        separators=(",", ":"),
    )
    return FORECAST_KEY_PREFIX + hashlib.sha256(material.encode("utf-8")).hexdigest()


def device_key(device_id: str) -> str:
    return DEVICE_KEY_PREFIX + device_id


def left_out_key(device_id: str) -> str:
    return LEFT_OUT_KEY_PREFIX + device_id


def scoped_key(key: str, key_prefix: str) -> str:
    """Return a default-deployment key (``saodf:...``) moved under ``key_prefix``."""
    if not key.startswith(DEFAULT_KEY_PREFIX):
        raise CacheError(f"key {key!r} does not start with {DEFAULT_KEY_PREFIX!r}")
    return key_prefix + key[len(DEFAULT_KEY_PREFIX) :]


def miss_bucket(moment: float) -> int:
    """Return the index of the miss bucket that a Unix time in seconds falls in."""
    return int(moment // MISS_BUCKET_SECONDS)


def missed_key(bucket: int) -> str:
    return f"{MISSED_KEY_PREFIX}{bucket}"


def coefficient_of_variation(values: Sequence[float | str | None]) -> float:
    """Return std / |mean| of the finite values; ``inf`` when the mean is zero or nothing is left.

    ``"NaN"`` strings, as DeepAR JSON Lines write gaps, count as missing.
    """
    finite = []
    for value in values:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            finite.append(number)
    if len(finite) < 2:
        return math.inf
    mean = sum(finite) / len(finite)
    if mean == 0:
        return math.inf
    variance = sum((x - mean) ** 2 for x in finite) / (len(finite) - 1)
    return math.sqrt(variance) / abs(mean)


def volatility_class(
    targets: Sequence[float | str | None],
    cv_threshold: float = DEFAULT_CV_THRESHOLD,
    window: int = VOLATILITY_WINDOW,
) -> str:
    """Classify a device as dynamic or stable from the coefficient of variation of its last targets.

    Too few finite targets to judge count as dynamic, so their forecasts expire soon.
    """
    recent = list(targets)[-window:]
    return DYNAMIC if coefficient_of_variation(recent) > cv_threshold else STABLE


def redis_tls_options(settings: Settings) -> dict[str, Any]:
    """Return the redis-py keyword arguments for TLS, or none when ``redis_tls`` is off.

    The server certificate is always verified, against ``redis_tls_ca_file`` when set and
    the system trust store otherwise.

    Raises:
        CacheError: a certificate or key file is set but missing, or only one of the pair.
    """
    if not settings.redis_tls:
        return {}
    from pathlib import Path

    files = {
        "SAODF_REDIS_TLS_CA_FILE": settings.redis_tls_ca_file,
        "SAODF_REDIS_TLS_CERT_FILE": settings.redis_tls_cert_file,
        "SAODF_REDIS_TLS_KEY_FILE": settings.redis_tls_key_file,
    }
    for variable, path in files.items():
        if path and not Path(path).is_file():
            raise CacheError(f"{variable}={path} does not exist; point it at a PEM file")
    if bool(settings.redis_tls_cert_file) != bool(settings.redis_tls_key_file):
        raise CacheError(
            "set both SAODF_REDIS_TLS_CERT_FILE and SAODF_REDIS_TLS_KEY_FILE for a client "
            "certificate, or neither"
        )
    options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_tls_cert_file:
        options["ssl_certfile"] = settings.redis_tls_cert_file
        options["ssl_keyfile"] = settings.redis_tls_key_file
    return options


class TenantCredentials(redis.CredentialProvider):
    """A tenant's Redis user with its current password, read from the registry per connection.

    A connection opened after ``saodf tenant rotate-keys`` uses the new password.
    """

    def __init__(self, settings: Settings, tenant_name: str):
        self.settings = settings
        self.tenant_name = tenant_name
        self.username = settings.redis_user

    def get_credentials(self) -> tuple[str, str]:
        from saodf.tenants import tenant_redis_password

        return self.username, tenant_redis_password(self.tenant_name, self.settings)


def redis_client(
    settings: Settings | None = None, timeout: float = 5.0, retries: int = 2, *, role: str
) -> redis.Redis:
    """Return a client authenticated as the ACL user of ``role``, decoding replies as text.

    ``role`` names an entry of :data:`actions.redis_acl.ROLES`, and
    :func:`actions.redis_acl.role_login` picks its user and password. Settings scoped to a
    tenant (:func:`saodf.tenants.tenant_settings`) authenticate as the tenant's ACL user
    instead, with its password from the tenant registry, whatever the role.

    ``timeout`` bounds, in seconds, both connecting and each reply. A failed connection is
    retried ``retries`` times, 100 ms and then 200 ms apart. redis-py 8 retries 10 times
    with up to 10 s between attempts by default, which would hold a request for a minute
    before the Redis-down fallback could serve it.
    """
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    from actions.redis_acl import get_role, role_login
    from saodf.tenants import settings_tenant

    settings = settings or get_settings()
    get_role(role)
    tenant = settings_tenant(settings)
    if tenant is not None:
        login: dict[str, Any] = {"credential_provider": TenantCredentials(settings, tenant.name)}
    else:
        username, password = role_login(settings, role)
        login = {"username": username, "password": password}
    return redis.Redis(
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        host=settings.redis_host,
        port=settings.redis_port,
        **login,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **redis_tls_options(settings),
    )


class ForecastCache:
    """Forecasts and device pointers in Redis, with hit and miss counters.

    Every key starts with ``key_prefix``: ``saodf:`` for the default deployment, a
    tenant's Redis key prefix (``saodf:t:acme:``) for a tenant's cache.
    """

    def __init__(
        self,
        client: redis.Redis,
        dynamic_ttl: int = DYNAMIC_TTL_SECONDS,
        stable_ttl: int = STABLE_TTL_SECONDS,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ):
        if dynamic_ttl <= 0 or stable_ttl <= 0:
            raise CacheError(
                f"TTLs must be positive seconds, got dynamic={dynamic_ttl} stable={stable_ttl}"
            )
        if not key_prefix.startswith(DEFAULT_KEY_PREFIX) or not key_prefix.endswith(":"):
            raise CacheError(
                f"key prefix {key_prefix!r} is invalid; use {DEFAULT_KEY_PREFIX!r} or a "
                "tenant's Redis key prefix such as 'saodf:t:acme:'"
            )
        self.client = client
        self.key_prefix = key_prefix
        self.ttls = {DYNAMIC: int(dynamic_ttl), STABLE: int(stable_ttl)}
        self._lookup_script = client.register_script(_LOOKUP_SCRIPT)
        self._policy: dict[str, int] = {}
        self._policy_read_at = -math.inf
        self._policy_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, timeout: float = 5.0, *, role: str
    ) -> "ForecastCache":
        """Return the cache of ``settings``, connected as ``role`` (see :func:`redis_client`).

        Settings scoped to a tenant give the tenant's keys and ACL user.
        """
        from saodf.tenants import settings_tenant

        settings = settings or get_settings()
        tenant = settings_tenant(settings)
        prefix = tenant.redis_key_prefix if tenant is not None else DEFAULT_KEY_PREFIX
        return cls(redis_client(settings, timeout=timeout, role=role), key_prefix=prefix)

    def key(self, default_key: str) -> str:
        """Return this cache's key for a default-deployment key such as ``HITS_KEY``."""
        return scoped_key(default_key, self.key_prefix)

    def forecast_key(self, pointer: DevicePointer) -> str:
        """Return this cache's key of the forecast that ``pointer`` names."""
        return replace(pointer, key_prefix=self.key_prefix).forecast_key

    def device_key(self, device_id: str) -> str:
        return self.key(device_key(device_id))

    def ttl_policy(self, refresh: bool = False) -> dict[str, int]:
        """Return the TTL in seconds of each volatility class: Redis's policy over the defaults.

        The policy read from Redis is reused for ``TTL_POLICY_REFRESH_SECONDS`` unless
        ``refresh`` is true.
        """
        with self._policy_lock:
            now = time.monotonic()
            if refresh or now - self._policy_read_at > TTL_POLICY_REFRESH_SECONDS:
                stored = self.client.hgetall(self.key(TTL_POLICY_KEY))
                policy: dict[str, int] = {}
                for volatility, text in stored.items():
                    try:
                        seconds = int(text)
                    except ValueError:
                        seconds = 0
                    if volatility in VOLATILITY_CLASSES and seconds > 0:
                        policy[volatility] = seconds
                    else:
                        logger.warning(
                            "ignoring TTL policy field %s=%r in %s; expected a positive "
                            "number of seconds for one of %s",
                            volatility,
                            text,
                            TTL_POLICY_KEY,
                            VOLATILITY_CLASSES,
                        )
                self._policy = policy
                self._policy_read_at = now
            return {**self.ttls, **self._policy}

    def set_ttl(self, volatility: str, seconds: int) -> None:
        """Store the TTL of a volatility class in Redis's policy, for every cache client."""
        self.ttl_for(volatility)
        if seconds <= 0:
            raise CacheError(f"TTL {seconds} of class {volatility!r} must be positive seconds")
        self.client.hset(self.key(TTL_POLICY_KEY), volatility, int(seconds))
        self.ttl_policy(refresh=True)

    def ttl_for(self, volatility: str) -> int:
        """Return the TTL in seconds of a volatility class."""
        if volatility not in VOLATILITY_CLASSES:
            raise CacheError(
                f"volatility class {volatility!r} is unknown; use one of {VOLATILITY_CLASSES}"
            )
        return self.ttl_policy()[volatility]

    def put(self, pointer: DevicePointer, forecast: Mapping[str, Any]) -> str:
        """Store a forecast under its key with the TTL of its class and point the device at it.

        Returns the forecast key.
        """
        _check_forecast(forecast, pointer)
        key = self.forecast_key(pointer)
        ttl = self.ttl_for(pointer.volatility)
        pipe = self.client.pipeline(transaction=True)
        text = json.dumps(json_safe(forecast), separators=(",", ":"), allow_nan=False)
        pipe.set(key, text, ex=ttl)
        pipe.delete(self.device_key(pointer.device_id))
        pipe.hset(self.device_key(pointer.device_id), mapping=pointer.to_hash())
        pipe.delete(self.key(left_out_key(pointer.device_id)))
        pipe.execute()
        return key

    def mark_left_out(self, device_id: str, reason: str, run_key: str) -> None:
        """Record that run ``run_key`` left the device out, and why, for forecast requests."""
        key = self.key(left_out_key(device_id))
        fields = {
            "reason": reason[:MAX_LEFT_OUT_REASON_CHARS],
            "run_key": run_key,
            "recorded_at": f"{time.time():.3f}",
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, LEFT_OUT_TTL_SECONDS)
        pipe.execute()

    def left_out(self, device_id: str) -> dict[str, str] | None:
        """Return ``{"reason", "run_key", "recorded_at"}`` of the device's left-out entry."""
        fields = self.client.hgetall(self.key(left_out_key(device_id)))
        return dict(fields) if fields else None

    def pointer(self, device_id: str) -> DevicePointer | None:
        """Return the device's pointer, or None when it was never filled or was evicted."""
        fields = self.client.hgetall(self.device_key(device_id))
        if not fields:
            return None
        return replace(DevicePointer.from_hash(fields), key_prefix=self.key_prefix)

    def peek(self, pointer: DevicePointer) -> dict[str, Any] | None:
        """Return the forecast the pointer names without touching the hit and miss counters."""
        raw = self.client.get(self.forecast_key(pointer))
        if raw is None:
            return None
        return json.loads(raw)

    def lookup(self, device_id: str) -> tuple[DevicePointer | None, dict[str, Any] | None]:
        """Return the device's pointer and cached forecast, counting a hit or a miss.

        The forecast is None on a miss; the pointer is None as well when the device has none.
        A miss also adds the device to the current miss bucket that the hit monitor reads.
        """
        pointer = self.pointer(device_id)
        bucket_key = self.key(missed_key(miss_bucket(time.time())))
        if pointer is None:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(self.key(MISSES_KEY))
            pipe.zincrby(bucket_key, 1, device_id)
            pipe.expire(bucket_key, MISS_BUCKET_TTL_SECONDS)
            pipe.execute()
            return None, None
        raw = self._lookup_script(
            keys=[
                self.forecast_key(pointer),
                self.key(HITS_KEY),
                self.key(MISSES_KEY),
                bucket_key,
            ],
            args=[device_id, MISS_BUCKET_TTL_SECONDS],
        )
        return pointer, (json.loads(raw) if raw is not None else None)

    def missed_devices(self, window_seconds: float, now: float | None = None) -> dict[str, int]:
        """Return ``{device_id: misses}`` over the miss buckets of the last ``window_seconds``.

        The window is rounded out to whole buckets of ``MISS_BUCKET_SECONDS``.
        """
        now = time.time() if now is None else now
        last = miss_bucket(now)
        first = miss_bucket(now - window_seconds)
        pipe = self.client.pipeline(transaction=False)
        for bucket in range(first, last + 1):
            pipe.zrange(self.key(missed_key(bucket)), 0, -1, withscores=True)
        counts: dict[str, int] = {}
        for members in pipe.execute():
            for device_id, score in members:
                counts[device_id] = counts.get(device_id, 0) + int(score)
        return counts

    def counters(self) -> tuple[int, int]:
        """Return the hit and miss counters."""
        hits, misses = self.client.mget(self.key(HITS_KEY), self.key(MISSES_KEY))
        return int(hits or 0), int(misses or 0)

    def stats(self) -> dict[str, Any]:
        """Return hits, misses, hit_ratio, evictions, memory in bytes, and the monitor's last check."""
        hits, misses = self.client.mget(self.key(HITS_KEY), self.key(MISSES_KEY))
        hits = int(hits or 0)
        misses = int(misses or 0)
        total = hits + misses
        stats_section = self.client.info("stats")
        memory_section = self.client.info("memory")
        return {
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits / total if total else None,
            "evictions": int(stats_section.get("evicted_keys", 0)),
            "expirations": int(stats_section.get("expired_keys", 0)),
            "used_memory": int(memory_section.get("used_memory", 0)),
            "maxmemory": int(memory_section.get("maxmemory", 0)),
            "monitor": self.client.hgetall(self.key(MONITOR_KEY)),
        }


def json_safe(value: Any) -> Any:
    """Return ``value`` with every NaN float replaced by None, which JSON writes as null."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _check_forecast(forecast: Mapping[str, Any], pointer: DevicePointer) -> None:
    mean = forecast.get("mean")
    quantiles = forecast.get("quantiles")
    if not isinstance(mean, list) or not isinstance(quantiles, dict):
        raise CacheError(
            f"forecast for device {pointer.device_id!r} lacks a 'mean' list or a 'quantiles' "
            "object; pass a SageMaker DeepAR output object"
        )
    if len(mean) < pointer.horizon:
        raise CacheError(
            f"forecast for device {pointer.device_id!r} has {len(mean)} mean values, fewer "
            f"than the horizon {pointer.horizon}"
        )


def truncate_forecast(forecast: Mapping[str, Any], horizon: int) -> dict[str, Any]:
    """Return the first ``horizon`` steps of a DeepAR output object (mean, quantiles, samples)."""
    result: dict[str, Any] = {"mean": list(forecast["mean"])[:horizon]}
    result["quantiles"] = {
        level: list(values)[:horizon] for level, values in forecast["quantiles"].items()
    }
    if "samples" in forecast:
        result["samples"] = [list(sample)[:horizon] for sample in forecast["samples"]]
    return result


def read_jsonl_line(url: str, line: int) -> dict[str, Any]:
    """Return the JSON object on 0-based ``line`` of a JSON Lines file, skipping blank lines."""
    index = 0
    with fsspec.open(url, "rt", encoding="utf-8") as handle:
        for text in handle:
            if not text.strip():
                continue
            if index == line:
                return json.loads(text)
            index += 1
    raise CacheError(f"{url} has no line {line}; refill the cache from the current batch output")


@dataclass(frozen=True)
class ContextChannel:
    """The prepared test channel of one group and the target metric of each of its devices."""

    url: str
    metrics: dict[str, str]


def context_channel(prepared_url: str, group: str) -> ContextChannel:
    """Locate the prepared test channel whose lines were the batch-transform inputs of ``group``.

    ``prepared_url`` is either the prepared dataset folder, whose ``manifest.json`` names
    each group's ``test`` channel and each series' ``target_metric``, or the channel file
    itself (``.jsonl``), in which case the metrics are unknown.
    """
    from models.errors import ModelInputError
    from models.prepared import join_url, read_manifest

    if prepared_url.endswith((".jsonl", ".json")):
        return ContextChannel(prepared_url, {})
    try:
        manifest = read_manifest(prepared_url)
    except ModelInputError as exc:
        raise CacheError(str(exc)) from None
    for entry in manifest["groups"]:
        if entry.get("group") == group and "test" in entry:
            metrics = {
                str(series["device_id"]): str(series.get("target_metric") or "")
                for series in entry.get("series", [])
                if "device_id" in series
            }
            return ContextChannel(join_url(prepared_url, entry["test"]), metrics)
    raise CacheError(
        f"group {group!r} is not in the prepared manifest under {prepared_url}; pass the "
        "prepared dataset that batch_transform read"
    )


def _group_urls(forecasts_url: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(forecasts_url)
    protocol = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    if fs.exists(posixpath.join(root, "manifest.json")):
        folders = [root]
    else:
        if not fs.exists(root):
            raise CacheError(f"forecast folder {forecasts_url} does not exist; run batch_transform")
        folders = sorted(
            path
            for path in fs.ls(root, detail=False)
            if fs.isdir(path) and fs.exists(posixpath.join(path, "manifest.json"))
        )
    if protocol in ("file", "local"):
        return [fs.unstrip_protocol(folder) for folder in folders]
    return [f"{protocol}://{folder}" for folder in folders]


def populate_from_forecasts(
    forecasts_url: str,
    prepared_url: str,
    settings: Settings | None = None,
    volatility_overrides: Mapping[str, str] | None = None,
    cache: ForecastCache | None = None,
) -> dict[str, Any]:
    """Fill forecast entries and device pointers from a batch-transform output.

    Args:
        forecasts_url: a group folder holding ``manifest.json`` and ``output.jsonl.out``, or
            the forecasts root whose sub-folders are such group folders.
        prepared_url: the prepared dataset folder, or its test channel file (see
            :func:`context_channel`); the channel lines are the batch-transform inputs.
        settings: where Redis is; defaults to :func:`get_settings`.
        volatility_overrides: ``{device_id: "dynamic" | "stable"}`` replacing the class
            computed from the coefficient of variation.
        cache: the cache to fill; defaults to one built from ``settings`` that connects
            as the writer role.

    Returns:
        ``{"groups", "entries", "devices", "volatility": {class: count}}``.

    Raises:
        CacheError: a manifest or output file that is missing or does not match.
    """
    from actions.redis_acl import WRITER

    settings = settings or get_settings()
    cache = cache or ForecastCache.from_settings(settings, role=WRITER)
    overrides = dict(volatility_overrides or {})
    for device_id, klass in overrides.items():
        if klass not in VOLATILITY_CLASSES:
            raise CacheError(
                f"volatility override {klass!r} for device {device_id!r} is invalid; "
                f"use one of {VOLATILITY_CLASSES}"
            )
    summary: dict[str, Any] = {
        "groups": 0,
        "entries": 0,
        "devices": [],
        "volatility": {DYNAMIC: 0, STABLE: 0},
    }
    for group_url in _group_urls(forecasts_url):
        count = _populate_group(group_url, prepared_url, cache, overrides, summary)
        summary["groups"] += 1
        logger.info("cache filled with %d forecasts of group folder %s", count, group_url)
    return summary


def record_left_out(report_url: str, cache: ForecastCache, run_key: str | None = None) -> int:
    """Store a left-out entry for each device that a prepared report lists as skipped.

    Args:
        report_url: the ``report.json`` of a prepared dataset; a missing file records nothing.
        cache: the cache to write to; its key prefix selects the tenant.
        run_key: the run named in the entries; defaults to the report's ``run_key``.

    Returns:
        The number of entries stored.

    Raises:
        CacheError: a report that is not JSON or lists devices without an id.
    """
    fs, path = fsspec.core.url_to_fs(report_url)
    if not fs.exists(path):
        logger.warning("no preprocessing report at %s; left-out devices not recorded", report_url)
        return 0
    try:
        with fs.open(path, "rt", encoding="utf-8") as handle:
            report = json.load(handle)
        devices = report.get("devices", [])
        skipped = [(entry["device_id"], entry["skipped"]) for entry in devices if entry["skipped"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CacheError(
            f"preprocessing report {report_url} is invalid ({exc!r}); rerun the preprocess task"
        ) from None
    run_key = run_key or str(report.get("run_key", "unknown"))
    for device_id, reason in skipped:
        cache.mark_left_out(device_id, str(reason), run_key)
    if skipped:
        logger.info("recorded %d left-out devices of run %s", len(skipped), run_key)
    return len(skipped)


def _populate_group(
    group_url: str,
    prepared_url: str,
    cache: ForecastCache,
    overrides: Mapping[str, str],
    summary: dict[str, Any],
) -> int:
    from models.output import read_forecast_lines

    with fsspec.open(posixpath.join(group_url, "manifest.json"), "rt", encoding="utf-8") as f:
        manifest = json.load(f)
    missing = [
        name
        for name in ("group", "freq", "model_name", "model_version", "prediction_length", "series")
        if name not in manifest
    ]
    if missing:
        raise CacheError(f"manifest of {group_url} lacks {missing}; rerun batch_transform")
    forecasts = read_forecast_lines(posixpath.join(group_url, "output.jsonl.out"))
    channel = context_channel(prepared_url, manifest["group"])
    context_url = channel.url
    contexts = _read_context_lines(context_url)
    count = 0
    for series in manifest["series"]:
        line = int(series["line"])
        if line >= len(forecasts):
            raise CacheError(
                f"manifest of {group_url} names output line {line} but the output has "
                f"{len(forecasts)} lines; rerun batch_transform"
            )
        if line >= len(contexts):
            raise CacheError(
                f"manifest of {group_url} names context line {line} but {context_url} has "
                f"{len(contexts)} lines; pass the test channel that batch_transform read"
            )
        device_id = series["device_id"]
        volatility = overrides.get(device_id) or volatility_class(contexts[line].get("target", []))
        pointer = DevicePointer(
            device_id=device_id,
            model_name=manifest["model_name"],
            model_version=str(manifest["model_version"]),
            forecast_start=series["forecast_start"],
            freq=manifest["freq"],
            horizon=int(manifest["prediction_length"]),
            group=manifest["group"],
            context_url=context_url,
            context_line=line,
            volatility=volatility,
            metric=channel.metrics.get(device_id, ""),
        )
        cache.put(pointer, forecasts[line])
        summary["devices"].append(device_id)
        summary["volatility"][volatility] += 1
        count += 1
    summary["entries"] += count
    return count


def _read_context_lines(url: str) -> list[dict[str, Any]]:
    try:
        with fsspec.open(url, "rt", encoding="utf-8") as handle:
            return [json.loads(text) for text in handle if text.strip()]
    except FileNotFoundError:
        raise CacheError(
            f"prepared test channel {url} does not exist; pass the channel file that "
            "batch_transform read as prepared_url"
        ) from None
