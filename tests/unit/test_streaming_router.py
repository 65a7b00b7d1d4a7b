"""Unit tests of the load-aware routing decision."""

from __future__ import annotations

import pytest

from saodf.errors import ConfigError
from streaming.router import (
    BrokerLoad,
    Route,
    RoutingPolicy,
    backoff_delay,
    choose_route,
    load_score,
)

POLICY = RoutingPolicy(t_max_s=0.5, max_attempts=2)


def _load(rate: float = 0.0, depth: int = 0, latency: float = 0.0) -> BrokerLoad:
    return BrokerLoad(rate, depth, latency, capacity_rate=1000.0, capacity_depth=100)


def test_score_idle_is_zero():
    assert load_score(_load(), POLICY) == 0.0


def test_score_saturated_is_one():
    assert load_score(_load(5000, 500, 9.0), POLICY) == 1.0


def test_score_weighted_terms():
    # 0.4 * 0.5 + 0.3 * 0.5 + 0.3 * 0.5
    assert load_score(_load(500, 50, 0.25), POLICY) == pytest.approx(0.5)


def test_route_kafka_when_less_loaded():
    assert choose_route(_load(100), _load(500), POLICY) is Route.KAFKA


def test_route_kafka_on_equal_load():
    assert choose_route(_load(300), _load(300), POLICY) is Route.KAFKA


def test_route_sqs_when_kafka_busier():
    assert choose_route(_load(800), _load(100), POLICY) is Route.SQS


def test_route_sqs_when_kafka_too_slow():
    assert choose_route(_load(latency=0.6), _load(900), POLICY) is Route.SQS


def test_route_sqs_when_kafka_unreachable():
    assert choose_route(None, _load(), POLICY) is Route.SQS


def test_route_kafka_when_sqs_saturated():
    assert choose_route(_load(900), _load(5000, 500, 0.5), POLICY) is Route.KAFKA


def test_route_backpressure_then_dlq():
    slow = _load(latency=1.0)
    assert choose_route(slow, None, POLICY, attempt=0) is Route.BACKPRESSURE
    assert choose_route(slow, None, POLICY, attempt=1) is Route.BACKPRESSURE
    assert choose_route(slow, None, POLICY, attempt=2) is Route.DLQ


def test_backoff_doubles_to_cap():
    assert backoff_delay(0, POLICY) == pytest.approx(0.05)
    assert backoff_delay(3, POLICY) == pytest.approx(0.4)
    assert backoff_delay(20, POLICY) == pytest.approx(2.0)


def test_load_rejects_zero_capacity():
    with pytest.raises(ConfigError, match="capacity rate=0"):
        BrokerLoad(1.0, 0, 0.0, capacity_rate=0, capacity_depth=10)


def test_policy_rejects_zero_t_max():
    with pytest.raises(ConfigError, match="t_max_s=0"):
        RoutingPolicy(t_max_s=0)


def test_route_kafka_within_tie_margin():
    policy = RoutingPolicy(t_max_s=0.5, tie_margin=0.1)
    assert choose_route(_load(200), _load(0), policy) is Route.KAFKA


def test_policy_rejects_tie_margin_one():
    with pytest.raises(ConfigError, match="tie_margin=1"):
        RoutingPolicy(tie_margin=1)
