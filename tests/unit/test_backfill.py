"""Backfill date checks, data intervals, retries on a locked Airflow DB, and CLI input checks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from saodf import backfill
from saodf.backfill import data_intervals, parse_date
from saodf.cli import app
from saodf.errors import SaodfError, ServiceError

runner = CliRunner()
UTC = timezone.utc


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2020, 2, 8, hour, minute, tzinfo=UTC)


def test_intervals_start_at_from_date():
    intervals = data_intervals(_at(14), _at(16))
    assert intervals[0] == (_at(14), _at(15))
    assert intervals[-1] == (_at(16), _at(17))
    assert len(intervals) == 3


def test_intervals_contain_unaligned_ends():
    intervals = data_intervals(_at(14, 30), _at(16, 16))
    assert intervals[0][0] == _at(14)
    assert intervals[-1][1] == _at(17)


def test_intervals_equal_dates_one_run():
    assert data_intervals(_at(14), _at(14)) == [(_at(14), _at(15))]


def test_intervals_convert_zone_to_utc():
    moment = datetime(2020, 2, 8, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert data_intervals(moment, moment) == [(_at(14), _at(15))]


def test_intervals_reversed_rejected():
    with pytest.raises(SaodfError, match="is before --from-date"):
        data_intervals(_at(16), _at(14))


def test_intervals_future_rejected():
    now = _at(12, 10)
    with pytest.raises(SaodfError, match=r"after now .*use a --to-date before 2020-02-08T12:00"):
        data_intervals(_at(10), _at(12), now=now)


def test_intervals_last_ended_accepted():
    assert len(data_intervals(_at(10), _at(11), now=_at(12, 10))) == 2


def test_parse_date_missing_day():
    with pytest.raises(SaodfError, match="'2020-02-30T00:00:00Z' is invalid: day is out of range"):
        parse_date("2020-02-30T00:00:00Z")


def test_parse_date_not_iso():
    with pytest.raises(SaodfError, match="is not ISO 8601"):
        parse_date("notadate")


def test_cli_future_date_never_calls_airflow(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("run_backfill was called")

    monkeypatch.setattr(backfill, "run_backfill", fail)
    result = runner.invoke(
        app,
        ["backfill", "--from-date", "2030-01-01T00:00:00Z", "--to-date", "2030-01-01T02:00:00Z"],
    )
    assert result.exit_code == 1
    assert "--to-date 2030-01-01T02:00:00+00:00 is in a data interval" in result.output


def test_cli_bad_reprocess_never_calls_airflow(monkeypatch):
    monkeypatch.setattr(backfill, "run_backfill", lambda *args, **kwargs: {})
    result = runner.invoke(
        app,
        [
            "backfill",
            "--from-date",
            "2020-02-08T14:00:00Z",
            "--to-date",
            "2020-02-08T16:00:00Z",
            "--reprocess",
            "bogus",
        ],
    )
    assert result.exit_code == 1
    assert "use none, completed or failed" in result.output


LOCKED_OUTPUT = "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked"


def _fake_airflow(monkeypatch, results: list[tuple[int, str]]) -> list[list[str]]:
    """Make ``airflow backfill create`` return ``results`` in turn; return the calls made."""
    import subprocess

    from saodf.stack import services

    calls: list[list[str]] = []

    def run(argv, **kwargs):
        calls.append(argv)
        code, stderr = results[len(calls) - 1]
        return subprocess.CompletedProcess(argv, code, stdout="", stderr=stderr)

    monkeypatch.setattr(services, "find_binary", lambda name: name)
    monkeypatch.setattr(services, "airflow_env", lambda settings: {})
    monkeypatch.setattr(backfill.subprocess, "run", run)
    monkeypatch.setattr(backfill.time, "sleep", lambda seconds: None)
    return calls


def test_create_retries_locked_database(monkeypatch):
    calls = _fake_airflow(monkeypatch, [(1, LOCKED_OUTPUT), (0, "created backfill 2")])
    output = backfill.create_backfill(None, _at(14), _at(15))
    assert output == "created backfill 2"
    assert len(calls) == 2
    assert calls[0] == calls[1]


def test_create_other_failure_not_retried(monkeypatch):
    calls = _fake_airflow(monkeypatch, [(1, "AlreadyRunningBackfill: Another backfill is running")])
    with pytest.raises(ServiceError, match=r"attempt 1 of 4\): AlreadyRunningBackfill"):
        backfill.create_backfill(None, _at(14), _at(15))
    assert len(calls) == 1


def test_create_locked_every_attempt_raises(monkeypatch):
    attempts = backfill.LOCKED_ATTEMPTS
    calls = _fake_airflow(monkeypatch, [(1, LOCKED_OUTPUT)] * attempts)
    with pytest.raises(ServiceError, match=f"attempt {attempts} of {attempts}.*database is locked"):
        backfill.create_backfill(None, _at(14), _at(15))
    assert len(calls) == attempts
