"""Unit tests of the broker load meter."""

from __future__ import annotations

import pytest

from streaming.load import BrokerMeter


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _meter(clock: _Clock) -> BrokerMeter:
    return BrokerMeter("kafka", capacity_rate=100.0, capacity_depth=10, clock=clock)


def test_meter_rate_counts_window():
    clock = _Clock()
    meter = _meter(clock)
    meter.record_arrivals(30)
    clock.now += 0.5
    meter.record_arrivals(20)
    assert meter.rate() == pytest.approx(50.0)
    clock.now += 0.8
    assert meter.rate() == pytest.approx(20.0)


def test_meter_latency_takes_slow_sample():
    meter = _meter(_Clock())
    meter.observe_latency(0.01)
    meter.observe_latency(0.4)
    assert meter.latency() == pytest.approx(0.4)


def test_meter_latency_recovers_by_mean():
    meter = _meter(_Clock())
    meter.observe_latency(0.4)
    meter.observe_latency(0.0)
    assert meter.latency() == pytest.approx(0.28)


def test_meter_latency_includes_inflight_age():
    clock = _Clock()
    meter = _meter(clock)
    meter.begin_send()
    clock.now += 2.0
    assert meter.latency() == pytest.approx(2.0)


def test_meter_end_send_observes_elapsed():
    clock = _Clock()
    meter = _meter(clock)
    send_id = meter.begin_send()
    clock.now += 0.25
    assert meter.end_send(send_id) == pytest.approx(0.25)
    assert meter.latency() == pytest.approx(0.25)


def test_meter_unreachable_has_no_load():
    meter = _meter(_Clock())
    meter.mark_unreachable("connection refused")
    assert meter.load() is None
    meter.mark_reachable()
    assert meter.load() is not None


def test_meter_load_carries_depth():
    meter = _meter(_Clock())
    meter.set_depth(7)
    assert meter.load().queue_depth == 7
