"""Load-aware routing decision between Kafka and SQS for incoming telemetry.

Each broker gets a load score in [0, 1] from its arrival rate, queue depth and
processing latency, each measured against the broker's capacity. A broker whose latency
exceeds ``t_max`` is unavailable. Kafka takes a message when it is available and no more
loaded than SQS (within ``tie_margin``), and otherwise SQS takes it. When neither can,
the caller backs off and retries a bounded number of times, then sends the message to
the dead-letter queue.

:class:`streaming.ingest_router.IngestRouter` measures the brokers and sends through
this decision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from saodf.errors import ConfigError


class Route(enum.Enum):
    KAFKA = "kafka"
    SQS = "sqs"
    BACKPRESSURE = "backpressure"
    DLQ = "dlq"


@dataclass(frozen=True)
class BrokerLoad:
    """Measured load of one broker and the capacity it is measured against.

    Rates are in messages per second, latencies in seconds.
    """

    arrival_rate: float
    queue_depth: int
    latency_s: float
    capacity_rate: float
    capacity_depth: int

    def __post_init__(self) -> None:
        if self.capacity_rate <= 0 or self.capacity_depth <= 0:
            raise ConfigError(
                f"broker capacity rate={self.capacity_rate} depth={self.capacity_depth} is "
                "invalid; set both to positive numbers"
            )
        if self.arrival_rate < 0 or self.queue_depth < 0 or self.latency_s < 0:
            raise ConfigError(
                f"broker load rate={self.arrival_rate} depth={self.queue_depth} "
                f"latency={self.latency_s} is invalid; measurements cannot be negative"
            )


@dataclass(frozen=True)
class RoutingPolicy:
    """Thresholds of the routing decision.

    ``weights`` apply to the rate, depth and latency terms of the load score.
    ``saturation`` is the score at or above which a broker takes no more messages.
    ``tie_margin`` is how much lower than Kafka's the SQS score must be to take traffic.
    Scores that close count as equal load, so measurement noise does not move traffic
    back and forth.
    """

    # NOTE: these defaults are starting points, not values measured on any deployment.
    t_max_s: float = 0.5
    saturation: float = 1.0
    max_attempts: int = 5
    weights: tuple[float, float, float] = (0.4, 0.3, 0.3)
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0
    tie_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.t_max_s <= 0:
            raise ConfigError(f"t_max_s={self.t_max_s} is invalid; use seconds > 0")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise ConfigError(f"weights={self.weights} are invalid; use non-negative numbers")
        if not 0 <= self.tie_margin < 1:
            raise ConfigError(f"tie_margin={self.tie_margin} is invalid; use 0 <= margin < 1")
        if self.max_attempts < 0:
            raise ConfigError(f"max_attempts={self.max_attempts} is invalid; use 0 or more")


def _ratio(value: float, capacity: float) -> float:
    return min(max(value / capacity, 0.0), 1.0)


def load_score(load: BrokerLoad, policy: RoutingPolicy) -> float:
    """Return the weighted load score in [0, 1]; latency counts against ``policy.t_max_s``."""
    rate_weight, depth_weight, latency_weight = policy.weights
    total = rate_weight + depth_weight + latency_weight
    score = (
        rate_weight * _ratio(load.arrival_rate, load.capacity_rate)
        + depth_weight * _ratio(load.queue_depth, load.capacity_depth)
        + latency_weight * _ratio(load.latency_s, policy.t_max_s)
    )
    return score / total


def is_available(load: BrokerLoad, policy: RoutingPolicy) -> bool:
    return load.latency_s <= policy.t_max_s


def choose_route(
    kafka: BrokerLoad | None,
    sqs: BrokerLoad | None,
    policy: RoutingPolicy,
    attempt: int = 0,
) -> Route:
    """Pick where one message goes; ``None`` marks a broker that is not reachable at all.

    ``attempt`` counts the earlier backpressure rounds for this message.
    """

    def score_if_open(load: BrokerLoad | None) -> float | None:
        if load is None or not is_available(load, policy):
            return None
        score = load_score(load, policy)
        return score if score < policy.saturation else None

    kafka_score = score_if_open(kafka)
    sqs_score = score_if_open(sqs)
    if kafka_score is not None and (
        sqs_score is None or kafka_score <= sqs_score + policy.tie_margin
    ):
        return Route.KAFKA
    if sqs_score is not None:
        return Route.SQS
    if attempt < policy.max_attempts:
        return Route.BACKPRESSURE
    return Route.DLQ


def backoff_delay(attempt: int, policy: RoutingPolicy) -> float:
    """Return the wait in seconds before retry ``attempt`` (0-based), doubling up to a cap."""
    return min(policy.backoff_base_s * (2 ** max(attempt, 0)), policy.backoff_max_s)
