"""Prometheus counters of the action gateway and the forecast cache, in the text format 0.0.4."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(**values: str) -> str:
    escaped = []
    for name, value in values.items():
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        escaped.append(f'{name}="{text}"')
    return "{" + ",".join(escaped) + "}"


class GatewayMetrics:
    """Invocation, error, rejection and latency counters; safe to update from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.invocations: dict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.rejections: dict[int, int] = defaultdict(int)
        self.degraded_counts: dict[tuple[str, str], int] = defaultdict(int)
        self.latency_counts: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)

    def observe(self, namespace: str, action: str, status: str, seconds: float) -> None:
        """Count one finished activation with its status and duration in seconds."""
        with self._lock:
            self.invocations[(namespace, action, status)] += 1
            if status != "success":
                self.errors[(action, status)] += 1
            counts = self.latency_counts.setdefault(action, [0] * (len(LATENCY_BUCKETS) + 1))
            for index, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    counts[index] += 1
            counts[-1] += 1
            self.latency_sum[action] += seconds

    def degraded(self, namespace: str, action: str) -> None:
        """Count one activation that an action served without Redis."""
        with self._lock:
            self.degraded_counts[(namespace, action)] += 1

    def reject(self, http_status: int) -> None:
        with self._lock:
            self.rejections[http_status] += 1

    def render(self, cache_stats: dict[str, Any] | None) -> str:
        """Return the exposition text; ``cache_stats`` is None when Redis did not answer."""
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP saodf_gateway_invocations_total Activations by namespace, action and status.",
                "# TYPE saodf_gateway_invocations_total counter",
            ]
            for (namespace, action, status), count in sorted(self.invocations.items()):
                labels = _labels(namespace=namespace, action=action, status=status)
                lines.append(f"saodf_gateway_invocations_total{labels} {count}")
            lines += [
                "# HELP saodf_gateway_errors_total Activations that did not succeed.",
                "# TYPE saodf_gateway_errors_total counter",
            ]
            for (action, status), count in sorted(self.errors.items()):
                lines.append(
                    f"saodf_gateway_errors_total{_labels(action=action, status=status)} {count}"
                )
            lines += [
                "# HELP saodf_gateway_rejections_total Requests rejected before any activation.",
                "# TYPE saodf_gateway_rejections_total counter",
            ]
            for code, count in sorted(self.rejections.items()):
                lines.append(f"saodf_gateway_rejections_total{_labels(code=str(code))} {count}")
            lines += [
                "# HELP saodf_gateway_degraded_total Activations served without Redis.",
                "# TYPE saodf_gateway_degraded_total counter",
            ]
            for (namespace, action), count in sorted(self.degraded_counts.items()):
                labels = _labels(namespace=namespace, action=action)
                lines.append(f"saodf_gateway_degraded_total{labels} {count}")
            lines += [
                "# HELP saodf_gateway_activation_duration_seconds Activation latency.",
                "# TYPE saodf_gateway_activation_duration_seconds histogram",
            ]
            for action, counts in sorted(self.latency_counts.items()):
                name = "saodf_gateway_activation_duration_seconds"
                for bound, count in zip(LATENCY_BUCKETS, counts[:-1], strict=True):
                    lines.append(f"{name}_bucket{_labels(action=action, le=f'{bound:g}')} {count}")
                lines.append(f"{name}_bucket{_labels(action=action, le='+Inf')} {counts[-1]}")
                lines.append(f"{name}_sum{_labels(action=action)} {self.latency_sum[action]:.6f}")
                lines.append(f"{name}_count{_labels(action=action)} {counts[-1]}")
        lines += _cache_lines(cache_stats)
        return "\n".join(lines) + "\n"


def _cache_lines(stats: dict[str, Any] | None) -> list[str]:
    lines = [
        "# HELP saodf_cache_up 1 when Redis answered the statistics query of this scrape.",
        "# TYPE saodf_cache_up gauge",
        f"saodf_cache_up {0 if stats is None else 1}",
    ]
    if stats is None:
        return lines
    series = [
        ("saodf_cache_hits_total", "counter", "Forecast cache hits.", stats["hits"]),
        ("saodf_cache_misses_total", "counter", "Forecast cache misses.", stats["misses"]),
        (
            "saodf_cache_evictions_total",
            "counter",
            "Keys Redis evicted under maxmemory.",
            stats["evictions"],
        ),
        ("saodf_cache_used_memory_bytes", "gauge", "Memory used by Redis.", stats["used_memory"]),
        (
            "saodf_cache_maxmemory_bytes",
            "gauge",
            "Redis maxmemory (0 is unlimited).",
            stats["maxmemory"],
        ),
    ]
    if stats.get("hit_ratio") is not None:
        series.append(
            ("saodf_cache_hit_ratio", "gauge", "Hits / (hits + misses).", stats["hit_ratio"])
        )
    monitor = stats.get("monitor") or {}
    if monitor.get("hit_rate"):
        series.append(
            (
                "saodf_cache_window_hit_ratio",
                "gauge",
                "Hit ratio over the hit monitor's sliding window at its last check.",
                monitor["hit_rate"],
            )
        )
    if monitor.get("state"):
        series.append(
            (
                "saodf_cache_monitor_below_threshold",
                "gauge",
                "1 when the hit monitor's last check found the window's hit ratio too low.",
                1 if monitor["state"] == "below threshold" else 0,
            )
        )
    if monitor.get("stable_ttl"):
        series.append(
            (
                "saodf_cache_stable_ttl_seconds",
                "gauge",
                "TTL of stable devices' forecasts in the hit monitor's policy.",
                monitor["stable_ttl"],
            )
        )
    for name, kind, help_text, value in series:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return lines
