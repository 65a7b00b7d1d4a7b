"""Prometheus counters and gauges of the ingest path, in the text exposition format 0.0.4."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Iterable

from streaming.load import BrokerMeter
from streaming.router import RoutingPolicy, is_available, load_score


def _labels(**values: str) -> str:
    escaped = []
    for name, value in values.items():
        text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        escaped.append(f'{name}="{text}"')
    return "{" + ",".join(escaped) + "}"


class IngestMetrics:
    """Counters of routing decisions, readings, dead-letter writes and rejected requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions: dict[str, int] = defaultdict(int)
        self.readings: dict[tuple[str, str], int] = defaultdict(int)
        self.dlq_writes: dict[str, int] = defaultdict(int)
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.send_failures: dict[str, int] = defaultdict(int)
        self.backpressure_seconds = 0.0

    def count_decision(self, route: str, readings: int = 1) -> None:
        with self._lock:
            self.decisions[route] += readings

    def count_readings(self, source: str, outcome: str, count: int = 1) -> None:
        with self._lock:
            self.readings[(source, outcome)] += count

    def count_dlq_write(self, sink: str, count: int = 1) -> None:
        with self._lock:
            self.dlq_writes[sink] += count

    def count_request(self, transport: str, status: int | str) -> None:
        with self._lock:
            self.requests[(transport, str(status))] += 1

    def count_send_failure(self, broker: str, count: int = 1) -> None:
        with self._lock:
            self.send_failures[broker] += count

    def add_backpressure(self, seconds: float) -> None:
        with self._lock:
            self.backpressure_seconds += seconds

    def snapshot(self) -> dict:
        """Return the counters as plain dicts, for tests and benchmarks."""
        with self._lock:
            return {
                "decisions": dict(self.decisions),
                "readings": {f"{s}:{o}": n for (s, o), n in self.readings.items()},
                "dlq_writes": dict(self.dlq_writes),
                "send_failures": dict(self.send_failures),
                "backpressure_seconds": self.backpressure_seconds,
            }

    def render(self, meters: Iterable[BrokerMeter], policy: RoutingPolicy) -> str:
        """Return the exposition text, with gauges read from ``meters`` at this moment."""
        lines: list[str] = []
        with self._lock:
            lines += _series(
                "saodf_ingest_route_decisions_total",
                "counter",
                "Readings per routing decision (kafka, sqs, backpressure, dlq).",
                [(_labels(route=route), n) for route, n in sorted(self.decisions.items())],
            )
            lines += _series(
                "saodf_ingest_readings_total",
                "counter",
                "Readings by source and where they were stored.",
                [
                    (_labels(source=source, outcome=outcome), n)
                    for (source, outcome), n in sorted(self.readings.items())
                ],
            )
            lines += _series(
                "saodf_ingest_dlq_writes_total",
                "counter",
                "Dead-letter records by sink (kafka, sqs, spool).",
                [(_labels(sink=sink), n) for sink, n in sorted(self.dlq_writes.items())],
            )
            lines += _series(
                "saodf_ingest_requests_total",
                "counter",
                "Ingest requests by transport and HTTP status.",
                [
                    (_labels(transport=transport, code=code), n)
                    for (transport, code), n in sorted(self.requests.items())
                ],
            )
            lines += _series(
                "saodf_ingest_send_failures_total",
                "counter",
                "Readings a broker did not acknowledge and that were routed again.",
                [(_labels(broker=b), n) for b, n in sorted(self.send_failures.items())],
            )
            lines += _series(
                "saodf_ingest_backpressure_seconds_total",
                "counter",
                "Seconds spent waiting while both brokers were saturated.",
                [("", round(self.backpressure_seconds, 6))],
            )
        gauges: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for meter in meters:
            labels = _labels(broker=meter.name)
            load = meter.load()
            gauges["reachable"].append((labels, 1 if load is not None else 0))
            gauges["available"].append(
                (labels, 1 if load is not None and is_available(load, policy) else 0)
            )
            gauges["score"].append((labels, load_score(load, policy) if load else 1.0))
            gauges["latency"].append((labels, meter.latency()))
            gauges["rate"].append((labels, meter.rate()))
            gauges["depth"].append((labels, load.queue_depth if load else 0))
        for key, name, help_text in [
            ("reachable", "saodf_ingest_broker_reachable", "1 when the broker answers."),
            ("available", "saodf_ingest_broker_available", "1 when latency <= T_max."),
            ("score", "saodf_ingest_load_score", "Load score in [0, 1] (1 when unreachable)."),
            ("latency", "saodf_ingest_broker_latency_seconds", "Smoothed processing latency."),
            ("rate", "saodf_ingest_arrival_rate", "Readings routed per second."),
            ("depth", "saodf_ingest_queue_depth", "Messages queued at the broker."),
        ]:
            lines += _series(name, "gauge", help_text, gauges[key])
        return "\n".join(lines) + "\n"


def _series(name: str, kind: str, help_text: str, samples) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        lines.append(
            f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}"
        )
    return lines
