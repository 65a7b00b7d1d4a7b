"""Unit tests of replay's argument checks and stats; none of them reaches a broker."""

from __future__ import annotations

import pytest

from saodf.config import Settings
from saodf.errors import ConfigError, DatasetError
from streaming.replay import ReplayStats, replay


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    # Port 1 is closed, so a test that reached the broker would fail on delivery instead.
    monkeypatch.setenv("SAODF_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    return Settings.from_env()


def test_replay_unknown_dataset(settings):
    with pytest.raises(
        DatasetError, match="dataset 'nope' is unknown; valid datasets: nab, skab, intel"
    ):
        replay("nope", settings=settings, progress=False)


def test_replay_missing_data_dir(settings, tmp_path):
    with pytest.raises(DatasetError, match="skab data folder .* not found"):
        replay("skab", tmp_path / "missing", settings=settings, progress=False)


def test_replay_missing_data_dir_fix(settings, tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"Pass --data-dir DIR to `saodf replay` or set SAODF_DATA_DIR=DIR, where DIR "
        r"contains nab/\. To download it into DIR, run `saodf data fetch nab --dest DIR`",
    ):
        replay("nab", tmp_path / "missing", settings=settings, progress=False)


def test_replay_unknown_group(settings):
    with pytest.raises(DatasetError, match="group\\(s\\) 'valve9' not found.*valid groups"):
        replay("skab", groups=["valve9"], settings=settings, progress=False)


def test_replay_negative_speed(settings):
    with pytest.raises(ConfigError, match="speed=-1"):
        replay("skab", speed=-1, settings=settings, progress=False)


def test_replay_zero_limit(settings):
    with pytest.raises(ConfigError, match="limit=0 is invalid"):
        replay("skab", limit=0, settings=settings, progress=False)


def test_stats_sum_reports():
    stats = ReplayStats(dataset="skab", topic="telemetry.raw")
    report = {"rows_read": 10, "rows_kept": 8, "skipped": {"invalid timestamp": 2}, "notes": {}}
    stats.add_report(report)
    stats.add_report({**report, "notes": {"duplicate timestamps": 3}})
    assert stats.rows_read == 20
    assert stats.rows_skipped == 4
    assert stats.notes == {"duplicate timestamps": 3}


def test_stats_summary_lists_skipped():
    stats = ReplayStats(dataset="nab", topic="telemetry.raw", skipped={"invalid timestamp": 2})
    assert "  skipped 2 row(s): invalid timestamp" in stats.summary_lines()
