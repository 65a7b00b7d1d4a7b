"""Hit monitor of the forecast cache: the hit rate over a sliding window, and what it does about it.

Every ``interval_seconds`` the monitor samples the cache's hit and miss counters and
computes the hit rate over the last ``window_seconds``. Below ``threshold`` (0.94 by
default) it acts, and logs what it did:

- It raises the TTL of stable devices by ``ttl_growth`` (up to ``max_stable_ttl``) in the
  TTL policy that every cache client reads, and extends the TTL of the stable forecasts
  already cached. Dynamic devices keep their short TTL, because their forecasts go stale.
- It adds the devices that missed at least ``repeat_misses`` times in the last
  ``repeat_window_seconds`` (at least the window) to the prefetch set
  ``saodf:cache:prefetch``, where they stay for ``prefetch_hold_seconds``. On every tick
  the monitor recomputes the forecasts of the held devices that are missing or expire
  within ``refresh_margin_seconds``, so their next request hits.

Whatever the hit rate, every tick also refreshes ahead: it recomputes the forecasts that
expire within ``refresh_margin_seconds`` (or are gone) of the devices that are being
requested, so that a device read about once per TTL does not miss on every read. A device
counts as requested while the last read of its pointer ``saodf:device:{id}`` (every
forecast lookup and every stream-detector band check reads it) lies within
``active_ttls`` TTLs of its class. The monitor learns that time from ``OBJECT IDLETIME``,
which neither it nor ``PTTL`` resets; its own pointer reads are remembered and not taken
for requests. A refresh whose model version is unchanged writes only the forecast entry,
so the pointer's idle time keeps showing the last request.

At or above the threshold it logs that the cache is healthy. Each tick's result is also
stored in the hash ``saodf:cache:monitor``, which the gateway exports at ``/metrics``.

Usage: ``python -m actions.monitor`` (settings from the SAODF_* variables).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from actions.cache import (
    DEVICE_KEY_PREFIX,
    MONITOR_KEY,
    REDIS_UNAVAILABLE_ERRORS,
    STABLE,
    DevicePointer,
    ForecastCache,
    json_safe,
)
from actions.redis_acl import MONITOR
from saodf.config import Settings, get_settings
from saodf.errors import ConfigError, SaodfError

logger = logging.getLogger(__name__)

PREFETCH_KEY = "saodf:cache:prefetch"

HEALTHY = "healthy"
BELOW_THRESHOLD = "below threshold"
INSUFFICIENT_TRAFFIC = "insufficient traffic"
COUNTERS_RESET = "counters reset"

# OBJECT IDLETIME counts whole seconds of Redis's LRU clock, so a pointer read less than this
# long after the monitor's own read may be that read rather than a request.
IDLE_RESOLUTION_SECONDS = 2.0

# Recomputes and caches the forecast of one device, and raises SaodfError when it cannot.
# It returns False when it wrote only the forecast entry and left the device pointer as it
# was (see store_forecast). Any other return value means the pointer may have been rewritten.
Forecaster = Callable[[ForecastCache, DevicePointer], Any]


@dataclass(frozen=True)
class MonitorOptions:
    """Thresholds and limits of the hit monitor; times are in seconds."""

    threshold: float = 0.94
    window_seconds: float = 300.0
    interval_seconds: float = 15.0
    # Fewer requests than this in the window give no verdict: a few misses would dominate.
    min_requests: int = 20
    repeat_misses: int = 2
    # A device requested about once per TTL misses about once per TTL, so repeated misses are
    # counted over a longer span than the hit-rate window. Miss buckets live 3600 s.
    repeat_window_seconds: float = 3600.0
    ttl_growth: float = 2.0
    max_stable_ttl: int = 24 * 3600
    max_prefetch: int = 50
    prefetch_hold_seconds: float = 3600.0
    refresh_margin_seconds: float = 60.0
    # Upper bound on the device pointers one tick scans to extend TTLs or to refresh ahead.
    max_scan: int = 100_000
    refresh_ahead: bool = True
    # A device is being requested while its pointer was read within this many TTLs of its
    # class: a device read once per TTL stays active between two reads.
    active_ttls: float = 2.0
    max_refresh_ahead: int = 200
    # A remembered pointer is read again after this long, to follow new model versions.
    pointer_refresh_seconds: float = 3600.0

    def validate(self) -> None:
        """Raise ConfigError naming the first option out of range."""
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold={self.threshold} must be in (0, 1]")
        if self.window_seconds <= 0 or self.interval_seconds <= 0:
            raise ConfigError(
                f"window_seconds={self.window_seconds} and interval_seconds="
                f"{self.interval_seconds} must be positive"
            )
        if self.ttl_growth <= 1:
            raise ConfigError(f"ttl_growth={self.ttl_growth} must be above 1 to raise TTLs")
        if self.active_ttls <= 0 or self.max_refresh_ahead < 0:
            raise ConfigError(
                f"active_ttls={self.active_ttls} must be positive and max_refresh_ahead="
                f"{self.max_refresh_ahead} >= 0"
            )
        if self.repeat_misses < 1 or self.max_prefetch < 0 or self.min_requests < 1:
            raise ConfigError(
                f"repeat_misses={self.repeat_misses} and min_requests={self.min_requests} "
                f"must be >= 1, max_prefetch={self.max_prefetch} >= 0"
            )


@dataclass
class MonitorReport:
    """Measurements and actions of one tick."""

    state: str
    hit_rate: float | None
    hits: int
    misses: int
    window_seconds: float
    stable_ttl: int
    previous_stable_ttl: int
    ttl_extended: int = 0
    held: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    refresh_failed: dict[str, str] = field(default_factory=dict)
    # Devices read within their active span, and those whose forecasts were refreshed ahead.
    active: int = 0
    refreshed_ahead: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.hits + self.misses


class HitMonitor:
    """Sliding-window hit rate of one forecast cache, with TTL raising and prefetching."""

    def __init__(
        self,
        cache: ForecastCache,
        options: MonitorOptions | None = None,
        forecaster: Forecaster | None = None,
    ):
        self.cache = cache
        self.options = options or MonitorOptions()
        self.options.validate()
        self.forecaster = forecaster
        # (monotonic time, hits, misses), oldest first; the first sample is the baseline.
        self.samples: deque[tuple[float, int, int]] = deque()
        # Device id -> (pointer, Unix time it was read); each read resets the pointer's idle time.
        self._pointers: dict[str, tuple[DevicePointer, float]] = {}
        # Device id -> Unix time of the last pointer read that was not the monitor's own.
        self._last_request: dict[str, float] = {}
        self.sample()

    def sample(self) -> tuple[float, int, int]:
        """Read the counters, append them to the window and drop samples older than it."""
        hits, misses = self.cache.counters()
        now = time.monotonic()
        if self.samples and (hits < self.samples[-1][1] or misses < self.samples[-1][2]):
            # Redis restarted or the counters were deleted: the old samples are meaningless.
            self.samples.clear()
        self.samples.append((now, hits, misses))
        start = now - self.options.window_seconds
        # Keep the newest sample at or before the window start as the baseline.
        while len(self.samples) >= 2 and self.samples[1][0] <= start:
            self.samples.popleft()
        return self.samples[-1]

    def window(self) -> tuple[int, int]:
        """Return the hits and misses between the baseline sample and the newest one."""
        _, first_hits, first_misses = self.samples[0]
        _, last_hits, last_misses = self.samples[-1]
        return last_hits - first_hits, last_misses - first_misses

    def tick(self) -> MonitorReport:
        """Sample the counters, judge the window's hit rate and act on it; return the report."""
        reset_before = len(self.samples)
        self.sample()
        hits, misses = self.window()
        stable_ttl = self.cache.ttl_policy(refresh=True)[STABLE]
        report = MonitorReport(
            state=HEALTHY,
            hit_rate=hits / (hits + misses) if hits + misses else None,
            hits=hits,
            misses=misses,
            window_seconds=self.options.window_seconds,
            stable_ttl=stable_ttl,
            previous_stable_ttl=stable_ttl,
        )
        if len(self.samples) == 1 and reset_before:
            report.state = COUNTERS_RESET
            logger.warning("cache counters went down (Redis restarted?); restarting the window")
        elif report.requests < self.options.min_requests:
            report.state = INSUFFICIENT_TRAFFIC
            logger.info(
                "cache hit rate not judged: %d requests in the window, fewer than %d",
                report.requests,
                self.options.min_requests,
            )
        elif report.hit_rate is not None and report.hit_rate < self.options.threshold:
            report.state = BELOW_THRESHOLD
            self._raise_stable_ttl(report)
            self._hold_repeated_misses(report)
        else:
            logger.info(
                "cache healthy: hit rate %.4f over %d requests in the last %.0f s (threshold %.2f)",
                report.hit_rate,
                report.requests,
                self.options.window_seconds,
                self.options.threshold,
            )
        self._refresh_held(report)
        if self.options.refresh_ahead:
            self._refresh_ahead(report)
        if report.state == BELOW_THRESHOLD:
            logger.warning(
                "cache hit rate %.4f over %d requests in the last %.0f s is below %.2f: stable "
                "TTL %d -> %d s (%d cached forecasts extended); holding %d devices with "
                "repeated misses %s; refreshed %d forecasts, %d refresh failures",
                report.hit_rate,
                report.requests,
                self.options.window_seconds,
                self.options.threshold,
                report.previous_stable_ttl,
                report.stable_ttl,
                report.ttl_extended,
                len(report.held),
                report.held[:10],
                len(report.refreshed),
                len(report.refresh_failed),
            )
        self._publish(report)
        return report

    def _raise_stable_ttl(self, report: MonitorReport) -> None:
        current = report.previous_stable_ttl
        raised = min(self.options.max_stable_ttl, int(current * self.options.ttl_growth))
        if raised > current:
            self.cache.set_ttl(STABLE, raised)
            report.stable_ttl = raised
        else:
            logger.info("stable TTL already at its maximum of %d s", self.options.max_stable_ttl)
        report.ttl_extended = self._extend_stable_entries(report.stable_ttl)

    def _extend_stable_entries(self, ttl: int) -> int:
        # EXPIRE ... GT only lengthens a TTL, so entries refreshed with a longer one keep it.
        client = self.cache.client
        extended = 0
        scanned = 0
        batch: list[str] = []
        for key in client.scan_iter(match=f"{DEVICE_KEY_PREFIX}*", count=500):
            batch.append(key)
            scanned += 1
            if len(batch) >= 500 or scanned >= self.options.max_scan:
                extended += self._extend_batch(batch, ttl)
                batch = []
            if scanned >= self.options.max_scan:
                logger.warning(
                    "stopped extending stable TTLs after %d device pointers (max_scan)", scanned
                )
                break
        if batch:
            extended += self._extend_batch(batch, ttl)
        return extended

    def _extend_batch(self, device_keys: list[str], ttl: int) -> int:
        pipe = self.cache.client.pipeline(transaction=False)
        for key in device_keys:
            pipe.hgetall(key)
        pointers = []
        for fields in pipe.execute():
            if fields.get("volatility") != STABLE:
                continue
            try:
                pointers.append(DevicePointer.from_hash(fields))
            except SaodfError as exc:
                logger.warning("skipping a device pointer while extending TTLs: %s", exc)
        if not pointers:
            return 0
        pipe = self.cache.client.pipeline(transaction=False)
        for pointer in pointers:
            pipe.expire(pointer.forecast_key, ttl, gt=True)
        return sum(1 for changed in pipe.execute() if changed)

    def _hold_repeated_misses(self, report: MonitorReport) -> None:
        lookback = max(self.options.window_seconds, self.options.repeat_window_seconds)
        missed = self.cache.missed_devices(lookback)
        repeated = sorted(
            (device for device, count in missed.items() if count >= self.options.repeat_misses),
            key=lambda device: (-missed[device], device),
        )
        report.held = repeated[: self.options.max_prefetch]
        if len(repeated) > len(report.held):
            logger.warning(
                "%d devices missed repeatedly; holding the %d most missed (max_prefetch)",
                len(repeated),
                len(report.held),
            )
        if report.held:
            until = time.time() + self.options.prefetch_hold_seconds
            self.cache.client.zadd(PREFETCH_KEY, {device: until for device in report.held})

    def held_devices(self) -> list[str]:
        """Return the devices whose hold in the prefetch set has not ended, dropping the others."""
        now = time.time()
        pipe = self.cache.client.pipeline(transaction=False)
        pipe.zremrangebyscore(PREFETCH_KEY, "-inf", now)
        pipe.zrange(PREFETCH_KEY, 0, -1)
        return list(pipe.execute()[1])

    def _refresh_held(self, report: MonitorReport) -> None:
        held = self.held_devices()
        if not held:
            return
        client = self.cache.client
        for device_id in held:
            pointer = self._read_pointer(device_id)
            if pointer is None:
                report.refresh_failed[device_id] = (
                    "no device pointer (never filled or evicted); run populate_cache"
                )
                continue
            remaining_ms = client.pttl(pointer.forecast_key)
            # -2: the entry is gone; -1: it never expires.
            if remaining_ms == -1 or remaining_ms > self.options.refresh_margin_seconds * 1000:
                continue
            if self.forecaster is None:
                report.refresh_failed[device_id] = "no forecaster configured"
                continue
            try:
                self._recompute(pointer)
            except SaodfError as exc:
                report.refresh_failed[device_id] = str(exc)
                continue
            report.refreshed.append(device_id)
        for device_id, reason in report.refresh_failed.items():
            logger.warning("prefetch of device %s failed: %s", device_id, reason)
        if report.refreshed:
            logger.info(
                "prefetched %d forecasts of held devices: %s",
                len(report.refreshed),
                report.refreshed[:10],
            )

    def _read_pointer(self, device_id: str) -> DevicePointer | None:
        """Read a device's pointer (this resets its idle time) and remember it and when."""
        pointer = self.cache.pointer(device_id)
        if pointer is None:
            self._pointers.pop(device_id, None)
        else:
            self._pointers[device_id] = (pointer, time.time())
        return pointer

    def _recompute(self, pointer: DevicePointer) -> None:
        if self.forecaster is None:
            raise SaodfError("no forecaster configured")
        if self.forecaster(self.cache, pointer) is not False:
            # The pointer may have been rewritten: its idle time now shows this write.
            self._pointers[pointer.device_id] = (pointer, time.time())

    def _last_reads(self, now: float) -> dict[str, float]:
        """Return the time of the last pointer read of each device that was a request."""
        keys: list[str] = []
        for key in self.cache.client.scan_iter(match=f"{DEVICE_KEY_PREFIX}*", count=500):
            keys.append(key)
            if len(keys) >= self.options.max_scan:
                logger.warning("refresh-ahead scans only the first %d device pointers", len(keys))
                break
        pipe = self.cache.client.pipeline(transaction=False)
        for key in keys:
            pipe.object("idletime", key)
        last_reads: dict[str, float] = {}
        for key, idle in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(idle, int):
                continue
            device_id = key[len(DEVICE_KEY_PREFIX) :]
            read_at = now - idle
            remembered = self._pointers.get(device_id)
            if remembered is None or read_at > remembered[1] + IDLE_RESOLUTION_SECONDS:
                self._last_request[device_id] = read_at
            if device_id in self._last_request:
                last_reads[device_id] = self._last_request[device_id]
        # Forget devices whose pointer is gone.
        for device_id in set(self._last_request) - set(last_reads):
            self._last_request.pop(device_id, None)
            self._pointers.pop(device_id, None)
        return last_reads

    def _refresh_ahead(self, report: MonitorReport) -> None:
        """Recompute the expiring or missing forecasts of the devices being requested."""
        now = time.time()
        policy = self.cache.ttl_policy()
        longest = max(policy.values())
        active: list[DevicePointer] = []
        for device_id, read_at in self._last_reads(now).items():
            age = now - read_at
            if age > self.options.active_ttls * longest:
                continue
            remembered = self._pointers.get(device_id)
            if remembered is None or now - remembered[1] > self.options.pointer_refresh_seconds:
                pointer = self._read_pointer(device_id)
            else:
                pointer = remembered[0]
            if pointer is None:
                continue
            if age <= self.options.active_ttls * policy.get(pointer.volatility, longest):
                active.append(pointer)
        report.active = len(active)
        if not active:
            return
        pipe = self.cache.client.pipeline(transaction=False)
        for pointer in active:
            pipe.pttl(pointer.forecast_key)
        due: list[tuple[int, DevicePointer]] = []
        margin_ms = self.options.refresh_margin_seconds * 1000
        for pointer, remaining_ms in zip(active, pipe.execute(), strict=True):
            # -2: the entry is gone; -1: it never expires.
            if remaining_ms == -2 or 0 <= remaining_ms <= margin_ms:
                due.append((remaining_ms, pointer))
        due.sort(key=lambda item: (item[0], item[1].device_id))
        if len(due) > self.options.max_refresh_ahead:
            logger.warning(
                "%d forecasts of requested devices expire soon; refreshing the %d that expire "
                "first (max_refresh_ahead)",
                len(due),
                self.options.max_refresh_ahead,
            )
        skipped = set(report.refreshed)
        for remaining_ms, pointer in due[: self.options.max_refresh_ahead]:
            if pointer.device_id in skipped:
                continue
            if remaining_ms == -2:
                # A missing entry may mean a new pointer (model version): read it again.
                pointer = self._read_pointer(pointer.device_id) or pointer
            try:
                self._recompute(pointer)
            except SaodfError as exc:
                report.refresh_failed[pointer.device_id] = str(exc)
                logger.warning("refresh ahead of device %s failed: %s", pointer.device_id, exc)
                continue
            report.refreshed_ahead.append(pointer.device_id)
        if report.refreshed_ahead:
            logger.info(
                "refreshed ahead %d of %d requested devices whose forecasts expire within "
                "%.0f s or are gone: %s",
                len(report.refreshed_ahead),
                report.active,
                self.options.refresh_margin_seconds,
                report.refreshed_ahead[:10],
            )

    def _publish(self, report: MonitorReport) -> None:
        self.cache.client.hset(
            MONITOR_KEY,
            mapping={
                "state": report.state,
                "hit_rate": "" if report.hit_rate is None else f"{report.hit_rate:.6f}",
                "requests": report.requests,
                "window_seconds": f"{report.window_seconds:g}",
                "threshold": f"{self.options.threshold:g}",
                "stable_ttl": report.stable_ttl,
                "held": self.cache.client.zcard(PREFETCH_KEY),
                "refreshed": len(report.refreshed),
                "active": report.active,
                "refreshed_ahead": len(report.refreshed_ahead),
                "time": f"{time.time():.3f}",
            },
        )

    def run(self, stop: threading.Event, max_ticks: int | None = None) -> int:
        """Tick every ``interval_seconds`` until ``stop`` is set; return the number of ticks.

        While Redis is unreachable the monitor logs the first failure of each outage and
        keeps trying on every interval.
        """
        ticks = 0
        down_since: float | None = None
        while not stop.wait(self.options.interval_seconds):
            try:
                self.tick()
            except REDIS_UNAVAILABLE_ERRORS as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    logger.error(
                        "cache monitor cannot reach Redis, retrying every interval: %s", exc
                    )
            except Exception:  # noqa: BLE001 - the service keeps running; the next tick retries
                logger.exception("cache monitor tick %d failed", ticks + 1)
            else:
                if down_since is not None:
                    logger.info(
                        "cache monitor reached Redis again after %.0f s",
                        time.monotonic() - down_since,
                    )
                    down_since = None
            ticks += 1
            if max_ticks is not None and ticks >= max_ticks:
                break
        return ticks


def store_forecast(
    cache: ForecastCache,
    previous: DevicePointer,
    updated: DevicePointer,
    forecast: dict[str, Any],
) -> bool:
    """Cache a recomputed forecast; return whether the device pointer was rewritten.

    When ``updated`` equals ``previous`` only the forecast entry is written, with the TTL of
    the device's class, so the pointer's idle time still shows the last request. Otherwise
    :meth:`ForecastCache.put` writes both.
    """
    if updated != previous:
        cache.put(updated, forecast)
        return True
    mean = forecast.get("mean")
    if not isinstance(mean, list) or len(mean) < updated.horizon:
        # put() reports the shape error in full.
        cache.put(updated, forecast)
        return True
    text = json.dumps(json_safe(forecast), separators=(",", ":"), allow_nan=False)
    cache.client.set(updated.forecast_key, text, ex=cache.ttl_for(updated.volatility))
    return False


def model_forecaster(settings: Settings) -> Forecaster:
    """Return a forecaster that runs the champion model, as the forecast action's miss path."""
    from actions.forecast import compute_forecast

    def forecast(cache: ForecastCache, pointer: DevicePointer) -> bool:
        updated, result = compute_forecast(pointer, settings.mlflow_tracking_uri)
        rewritten = store_forecast(cache, pointer, updated, result)
        logger.info(
            "forecast of device %s recomputed with %s version %s and cached",
            pointer.device_id,
            updated.model_name,
            updated.model_version,
        )
        return rewritten

    return forecast


def main(argv: list[str] | None = None) -> int:
    from saodf.log import configure_logging

    defaults = MonitorOptions()
    parser = argparse.ArgumentParser(description="Watch the forecast cache's hit rate and act")
    parser.add_argument(
        "--threshold", type=float, default=defaults.threshold, help="minimum healthy hit rate"
    )
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=defaults.window_seconds,
        help="length of the sliding window, in seconds",
    )
    parser.add_argument(
        "--interval-seconds",
        type=float,
        default=defaults.interval_seconds,
        help="time between two checks, in seconds",
    )
    options = parser.parse_args(argv)
    configure_logging()
    settings = get_settings()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    monitor_options = MonitorOptions(
        threshold=options.threshold,
        window_seconds=options.window_seconds,
        interval_seconds=options.interval_seconds,
    )
    cache = ForecastCache.from_settings(settings, role=MONITOR)
    while not stop.is_set():
        try:
            monitor = HitMonitor(cache, monitor_options, model_forecaster(settings))
            break
        except redis.RedisError as exc:
            logger.error("cache monitor cannot reach Redis at start, retrying in 5 s: %s", exc)
            stop.wait(5.0)
    else:
        return 0
    logger.info(
        "cache monitor started: threshold %.2f, window %.0f s, interval %.0f s",
        monitor_options.threshold,
        monitor_options.window_seconds,
        monitor_options.interval_seconds,
    )
    ticks = monitor.run(stop)
    logger.info("cache monitor stopped after %d ticks", ticks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
