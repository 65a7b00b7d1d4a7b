"""The ingest benchmark's result passes the harness's schema check."""

from __future__ import annotations

from bench.ingest import _result
from saodf.bench import validate_result

MEASUREMENTS = {
    "raw_produce_per_second": 20000.0,
    "router_decision_us": 10.0,
    "http": {"readings": 3700, "seconds": 3.1, "per_second": 1185.0},
    "mqtt": {"readings": 450, "seconds": 2.0, "per_second": 225.0},
    "ingest_to_lake": {"rounds": 3, "median_s": 1.0, "max_s": 4.3},
}


def test_result_passes_validation():
    result = _result(MEASUREMENTS, mqtt_sent=500, lake_rounds=3, quick=True)
    assert validate_result("ingest", result) is result


def test_result_lost_mqtt_goal_not_met():
    result = _result(MEASUREMENTS, mqtt_sent=500, lake_rounds=3, quick=True)
    goal = result["goals"]["mqtt_readings_handled_share"]
    assert goal["measured"] == 0.9
    assert goal["met"] is False


def test_result_no_lake_rounds_validates():
    lost = {**MEASUREMENTS, "ingest_to_lake": {"rounds": 0, "median_s": None, "max_s": None}}
    result = _result(lost, mqtt_sent=500, lake_rounds=3, quick=True)
    assert validate_result("ingest", result)["figures"]["ingest_to_lake_median_s"] is None
