"""Real-time benchmark helpers: fleet readings, latency log, offsets, and a stream smoke run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from bench import realtime
from saodf.telemetry import decode_message


@dataclass
class FakeMessage:
    """The parts of a confluent_kafka Message that the benchmark reads."""

    offset_value: int = 0
    header_list: list | None = None
    partition_value: int = 0

    def headers(self):
        return self.header_list

    def topic(self):
        return "t"

    def partition(self):
        return self.partition_value

    def offset(self):
        return self.offset_value


def test_fleet_readings_valid(session_settings):
    messages = realtime.fleet_readings(session_settings.data_dir, devices=3, count=7)
    decoded = [decode_message(value) for _, value in messages]
    assert len(decoded) == 7
    assert [item["device_id"] for item in decoded[:4]] == [
        "fleet-00000",
        "fleet-00001",
        "fleet-00002",
        "fleet-00000",
    ]
    assert decoded[3]["timestamp"] == "2025-04-20T00:00:01Z"
    assert len(decoded[0]) == 3 + len(realtime.SKAB_COLUMNS)


def test_fleet_readings_keyed_by_device(session_settings):
    key, value = realtime.fleet_readings(session_settings.data_dir, devices=2, count=2)[1]
    assert key == b"fleet-00001"
    assert decode_message(value)["device_id"] == "fleet-00001"


def test_fleet_readings_need_skab(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SKAB valve1 files"):
        realtime.fleet_readings(tmp_path, devices=1, count=1)


def test_latency_log_marks_ready(tmp_path):
    log = realtime._LatencyLog(tmp_path / "ready", expected=1)
    log.record([FakeMessage(header_list=[(realtime.WARMUP_END_HEADER, b"1")])])
    assert (tmp_path / "ready").exists()
    assert log.samples_ns == []


def test_latency_log_counts_measured(tmp_path):
    log = realtime._LatencyLog(tmp_path / "ready", expected=2)
    log.record([FakeMessage(header_list=[(realtime.SENT_HEADER, b"0")]), FakeMessage()])
    assert len(log.samples_ns) == 1
    assert not log.done.is_set()


def test_latency_log_done_at_expected(tmp_path):
    log = realtime._LatencyLog(tmp_path / "ready", expected=1)
    log.record([FakeMessage(header_list=[(realtime.SENT_HEADER, b"0")])])
    assert log.done.is_set()


def test_next_offsets_one_past_last():
    from streaming.anomaly_consumer import _next_offsets

    messages = [FakeMessage(4), FakeMessage(9), FakeMessage(2, partition_value=1)]
    offsets = {(tp.partition, tp.offset) for tp in _next_offsets(messages)}
    assert offsets == {(0, 10), (1, 3)}


def test_stream_figures_goals_on_detector():
    runs = {
        "bare": {"p50_ms": 5.0, "p99_ms": 20.0},
        "detector": {"p50_ms": 10.0, "p99_ms": 30.0},
        "gateway_detector": {"p50_ms": 40.0, "p99_ms": 90.0},
        "bare_fetch_wait_500": {"p50_ms": 250.0, "p99_ms": 500.0},
    }
    figures, reference, ratios, goals = realtime._stream_figures(runs)
    assert figures["stream_decision_p99_ms"] == 30.0
    assert reference["stream_fetch_wait_500_bare_roundtrip_p99_ms"] == 500.0
    assert ratios["stream_decision_p99_over_bare_p99"] == 1.5
    assert ratios["stream_gateway_decision_p99_over_bare_p99"] == 4.5
    assert goals["stream_decision_p99_over_bare_p99"]["met"] is True
    assert goals["stream_decision_p99_ms"]["met"] is True


@pytest.mark.integration
def test_stream_phases_time_every_message(kafka_bootstrap, redis_server, session_settings):
    from actions.gateway import DEFAULT_ACTIONS, serve

    detector = [spec for spec in DEFAULT_ACTIONS if spec.name == "detect_anomaly"]
    gateway = serve(session_settings, actions=detector, port=0)
    try:
        settings = session_settings.with_overrides(gateway_url=gateway.url)
        messages = realtime.fleet_readings(settings.data_dir, devices=50, count=1200)
        work = settings.home / "bench-stream-test"
        results = {
            mode: realtime._stream_phase(settings, mode, messages, 200, work, 5)
            for mode in ("bare", "detector")
        }
        results["gateway"] = realtime._stream_phase(
            settings, "detector", messages, 200, work, 0, "gateway"
        )
    finally:
        gateway.close()
    assert results["bare"]["received"] == 1000
    assert results["detector"]["received"] == 1000
    assert results["detector"]["dead_lettered"] == 0
    assert results["gateway"]["received"] == 1000
    assert results["gateway"]["dead_lettered"] == 0
