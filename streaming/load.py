"""Load measurements of one broker, turned into the :class:`BrokerLoad` the router scores.

The arrival rate counts the messages routed to the broker over the last
``rate_window_s`` seconds. The queue depth comes from the broker's own figure (the
producer's queue for Kafka, the queue attributes for SQS). The latency is an
exponentially weighted mean of send, acknowledgement and probe times. It is raised to
the latest sample, so one slow response counts at once while recovery waits for the mean
to fall. It is also raised to the age of the oldest unanswered send, so a broker that
stops answering becomes unavailable before any send times out.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Callable

from streaming.router import BrokerLoad

Clock = Callable[[], float]


class BrokerMeter:
    """Thread-safe load figures of one broker; ``load()`` is None while it is unreachable."""

    def __init__(
        self,
        name: str,
        capacity_rate: float,
        capacity_depth: int,
        rate_window_s: float = 1.0,
        alpha: float = 0.3,
        clock: Clock = time.monotonic,
    ):
        self.name = name
        self.capacity_rate = capacity_rate
        self.capacity_depth = capacity_depth
        self.rate_window_s = rate_window_s
        self.alpha = alpha
        self._clock = clock
        self._lock = threading.Lock()
        self._arrivals: deque[tuple[float, int]] = deque()
        self._latency: float | None = None
        self._last_latency = 0.0
        self._depth = 0
        self._inflight: dict[int, float] = {}
        self._ids = itertools.count()
        self.reachable = True
        self.unreachable_reason: str | None = None

    def record_arrivals(self, count: int) -> None:
        with self._lock:
            self._arrivals.append((self._clock(), count))

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self._last_latency = seconds
            if self._latency is None:
                self._latency = seconds
            else:
                self._latency = self.alpha * seconds + (1 - self.alpha) * self._latency

    def set_depth(self, depth: int) -> None:
        with self._lock:
            self._depth = max(int(depth), 0)

    def begin_send(self) -> int:
        """Start timing one send and return its id for :meth:`end_send`."""
        with self._lock:
            send_id = next(self._ids)
            self._inflight[send_id] = self._clock()
            return send_id

    def end_send(self, send_id: int) -> float:
        """Stop timing ``send_id``, count its latency and return it in seconds."""
        with self._lock:
            started = self._inflight.pop(send_id, None)
        if started is None:
            return 0.0
        elapsed = self._clock() - started
        self.observe_latency(elapsed)
        return elapsed

    def mark_unreachable(self, reason: str) -> None:
        with self._lock:
            self.reachable = False
            self.unreachable_reason = reason

    def mark_reachable(self) -> None:
        with self._lock:
            self.reachable = True
            self.unreachable_reason = None

    def rate(self) -> float:
        with self._lock:
            return self._rate_locked(self._clock())

    def _rate_locked(self, now: float) -> float:
        while self._arrivals and self._arrivals[0][0] < now - self.rate_window_s:
            self._arrivals.popleft()
        return sum(count for _, count in self._arrivals) / self.rate_window_s

    def latency(self) -> float:
        with self._lock:
            return self._latency_locked(self._clock())

    def _latency_locked(self, now: float) -> float:
        latency = max(self._latency or 0.0, self._last_latency)
        if self._inflight:
            latency = max(latency, now - min(self._inflight.values()))
        return latency

    def load(self) -> BrokerLoad | None:
        """Return the current load, or None while the broker is marked unreachable."""
        with self._lock:
            if not self.reachable:
                return None
            now = self._clock()
            return BrokerLoad(
                arrival_rate=self._rate_locked(now),
                queue_depth=self._depth,
                latency_s=self._latency_locked(now),
                capacity_rate=self.capacity_rate,
                capacity_depth=self.capacity_depth,
            )
