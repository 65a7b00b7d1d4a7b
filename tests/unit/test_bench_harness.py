"""Benchmark harness: discovery, result schema, records and time limits."""

import json
from datetime import datetime, timezone

import pytest

from saodf import bench
from saodf.config import Settings


def _result(**changes):
    result = {
        "figures": {"train_seconds": 1.5, "rows": 10},
        "reference": {"read_seconds": 0.5},
        "ratios": {"train_over_read": 3.0},
        "goals": {"speed": bench.goal(2.0, 1.5, "min")},
        "notes": ["two series"],
    }
    result.update(changes)
    return result


def test_discover_lists_modules(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "etl.py").write_text("")
    (tmp_path / "train.py").write_text("")
    assert bench.discover(None, tmp_path) == ["etl", "train"]


def test_discover_unknown_name(tmp_path):
    (tmp_path / "etl.py").write_text("")
    with pytest.raises(bench.BenchmarkError, match="nope.*available: etl"):
        bench.discover(["nope"], tmp_path)


def test_validate_accepts_schema():
    assert bench.validate_result("x", _result())["figures"]["rows"] == 10


def test_validate_missing_key():
    result = _result()
    del result["notes"]
    with pytest.raises(bench.BenchmarkError, match="missing keys \\['notes'\\]"):
        bench.validate_result("x", result)


def test_validate_non_number_figure():
    with pytest.raises(bench.BenchmarkError, match="not numbers"):
        bench.validate_result("x", _result(figures={"seconds": "fast"}))


def test_validate_bad_goal_direction():
    goals = {"speed": {"target": 1, "measured": 2, "met": False, "direction": "up"}}
    with pytest.raises(bench.BenchmarkError, match="direction 'up' is invalid"):
        bench.validate_result("x", _result(goals=goals))


def test_goal_directions():
    assert bench.goal(0.8, 0.81)["met"] is True
    assert bench.goal(0.8, 0.79)["met"] is False
    assert bench.goal(10, 9, "min")["met"] is True
    assert bench.goal(10, float("nan"))["met"] is False


def test_write_outputs_json_and_record(tmp_path):
    result = {**_result(figures={"train_seconds": float("nan")}), "seconds": 2.0}
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    results_file = tmp_path / "RESULTS.md"
    path = bench.write_outputs("train", result, True, None, tmp_path / "out", results_file, now)
    document = json.loads(path.read_text())
    assert path.name == "train-20260102T030405Z.json"
    assert document["figures"]["train_seconds"] is None
    assert document["machine"]["cpu_count"] >= 1
    assert "python" in document["versions"]
    record = results_file.read_text()
    assert record.startswith("# Benchmark records")
    assert "## train - 2026-01-02T03:04:05Z (quick)" in record
    assert "goal speed: 1.5 (target <= 2, met)" in record


def test_record_appended_per_run(tmp_path):
    results_file = tmp_path / "RESULTS.md"
    for second in (1, 2):
        now = datetime(2026, 1, 2, 3, 4, second, tzinfo=timezone.utc)
        result = {**_result(), "seconds": 1.0}
        bench.write_outputs("etl", result, False, None, tmp_path / "out", results_file, now)
    assert results_file.read_text().count("## etl - ") == 2


def test_run_benchmark_timeout(tmp_path, monkeypatch):
    # A benchmark module that sleeps past the limit is killed and reported.
    package = tmp_path / "bench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sleepy.py").write_text(
        "import time\n\ndef run(settings, quick):\n    time.sleep(60)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(bench, "PROJECT_ROOT", tmp_path)
    settings = Settings.from_env().with_overrides(home=tmp_path / "home")
    with pytest.raises(bench.BenchmarkError, match="sleepy timed out after 2 s"):
        bench.run_benchmark("sleepy", settings, True, timeout=2)
