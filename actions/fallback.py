"""State that lets the actions serve requests while Redis is unreachable.

- :class:`PointerMemo` keeps the device pointers that one runtime process read from Redis.
- :class:`LakePointerIndex` finds a device's pointer in the newest batch-transform output
  in the lake, for devices the process never saw.
- :class:`EwmaState` runs the detector's streaming z-score in process memory, with the
  same arithmetic as the Redis script of :mod:`actions.detect_anomaly`.
- :class:`DegradedLog` counts degraded activations and logs the first one of an outage and
  then every ``every``-th, so an outage does not flood the log.

In-process state is per runtime process: another process of the same action, or a
restarted one, starts without it.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import threading
import time
from collections import OrderedDict
from typing import Any

import fsspec

from actions.cache import CacheError, DevicePointer, context_channel, volatility_class
from saodf.config import Settings

logger = logging.getLogger(__name__)

MAX_MEMO_POINTERS = 100_000
MAX_EWMA_KEYS = 100_000
LAKE_INDEX_REFRESH_SECONDS = 60.0


class PointerMemo:
    """The device pointers read from Redis by this process, least recently used first out."""

    def __init__(self, max_entries: int = MAX_MEMO_POINTERS):
        self.max_entries = max_entries
        self._pointers: OrderedDict[str, DevicePointer] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, pointer: DevicePointer) -> None:
        with self._lock:
            self._pointers[pointer.device_id] = pointer
            self._pointers.move_to_end(pointer.device_id)
            while len(self._pointers) > self.max_entries:
                self._pointers.popitem(last=False)

    def get(self, device_id: str) -> DevicePointer | None:
        with self._lock:
            return self._pointers.get(device_id)


class LakePointerIndex:
    """Device pointers rebuilt from the newest batch-transform output under ``lake/forecasts``.

    The index is rebuilt at most every ``refresh_seconds``. For each device it keeps the
    group manifest with the newest modification time that names it.
    """

    def __init__(self, settings: Settings, refresh_seconds: float = LAKE_INDEX_REFRESH_SECONDS):
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self._index: dict[str, DevicePointer] = {}
        self._built_at = -math.inf
        self._lock = threading.Lock()

    def get(self, device_id: str) -> DevicePointer | None:
        with self._lock:
            if time.monotonic() - self._built_at > self.refresh_seconds:
                self._index = self._build()
                self._built_at = time.monotonic()
            return self._index.get(device_id)

    def _build(self) -> dict[str, DevicePointer]:
        root_url = self.settings.lake_path("forecasts")
        fs, root = fsspec.core.url_to_fs(root_url)
        if not fs.exists(root):
            return {}
        manifests = []
        for path in fs.glob(posixpath.join(root, "*", "*", "manifest.json")):
            info = fs.info(path)
            modified = info.get("mtime") or info.get("LastModified") or 0
            if hasattr(modified, "timestamp"):
                modified = modified.timestamp()
            manifests.append((float(modified), path))
        index: dict[str, DevicePointer] = {}
        # Oldest first, so that newer manifests overwrite the devices they name.
        for _, path in sorted(manifests):
            try:
                index.update(self._read_group(fs, path))
            except (CacheError, OSError, ValueError, KeyError) as exc:
                logger.warning("skipping batch output %s in the fallback index: %s", path, exc)
        logger.info(
            "fallback index built from %d batch outputs: %d devices", len(manifests), len(index)
        )
        return index

    def _read_group(self, fs: Any, manifest_path: str) -> dict[str, DevicePointer]:
        with fs.open(manifest_path, "rt", encoding="utf-8") as handle:
            manifest = json.load(handle)
        group_dir = posixpath.dirname(manifest_path)
        run_key = posixpath.basename(posixpath.dirname(group_dir))
        channel = context_channel(self.settings.lake_path("prepared", run_key), manifest["group"])
        pointers = {}
        for series in manifest["series"]:
            device_id = str(series["device_id"])
            pointers[device_id] = DevicePointer(
                device_id=device_id,
                model_name=manifest["model_name"],
                model_version=str(manifest["model_version"]),
                forecast_start=series["forecast_start"],
                freq=manifest["freq"],
                horizon=int(manifest["prediction_length"]),
                group=manifest["group"],
                context_url=channel.url,
                context_line=int(series["line"]),
                # The class only sets cache TTLs, which do not apply while Redis is down.
                volatility=volatility_class([]),
                metric=channel.metrics.get(device_id, ""),
            )
        return pointers


class EwmaState:
    """Exponentially weighted mean and variance per key, held in this process."""

    def __init__(self, max_keys: int = MAX_EWMA_KEYS):
        self.max_keys = max_keys
        self._state: OrderedDict[str, tuple[int, float | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def update(
        self,
        key: str,
        value: float,
        alpha: float,
        warmup: float,
        threshold: float,
        flagged_weight: float,
    ) -> tuple[int, float]:
        """Score ``value`` against the state before it, then update; return (count before, z)."""
        with self._lock:
            count, mean, var = self._state.get(key, (0, None, 0.0))
            z = 0.0
            if mean is None:
                mean, var = value, 0.0
            else:
                sd = max(math.sqrt(var), 1e-3 * abs(mean) + 1e-9)
                z = (value - mean) / sd
                weight = max(alpha, 1 / (count + 1))
                if count >= warmup and abs(z) > threshold:
                    weight = alpha * flagged_weight
                diff = value - mean
                increment = weight * diff
                mean = mean + increment
                var = (1 - weight) * (var + diff * increment)
            self._state[key] = (count + 1, mean, var)
            self._state.move_to_end(key)
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            return count, z


class DegradedLog:
    """Count of degraded activations, logged at the start of an outage and every ``every``-th."""

    def __init__(self, action: str, every: int = 100):
        self.action = action
        self.every = every
        self.count = 0
        self.in_outage = False
        self._lock = threading.Lock()

    def degraded(self, activation_id: str, error: BaseException) -> int:
        """Count one degraded activation, log it when due, and return the running count."""
        with self._lock:
            self.count += 1
            first = not self.in_outage
            self.in_outage = True
            count = self.count
        if first or count % self.every == 0:
            logger.warning(
                "%s activation %s degraded: Redis unavailable (%s); %d degraded activations "
                "in this process so far",
                self.action,
                activation_id or "-",
                error,
                count,
            )
        return count

    def recovered(self) -> None:
        with self._lock:
            if not self.in_outage:
                return
            self.in_outage = False
            count = self.count
        logger.info("%s reached Redis again; %d degraded activations so far", self.action, count)
