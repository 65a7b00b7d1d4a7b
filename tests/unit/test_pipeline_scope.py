from datetime import datetime, timezone

import pytest

from saodf import pipeline
from saodf_airflow.triggers import parse_window_event

EVENT = {
    "window_id": "abc",
    "devices": ["b", "a"],
    "start": "2020-03-09T10:00:00Z",
    "end": "2020-03-09T11:00:00Z",
    "message_count": 10,
}


def test_window_scope_is_deterministic():
    first = pipeline.scope_from_window_event(EVENT)
    second = pipeline.scope_from_window_event(dict(EVENT))
    assert first["run_key"] == second["run_key"]
    assert first["devices"] == ["a", "b"]
    assert first["end"] == EVENT["end"]


def test_interval_scope_key():
    start = datetime(2014, 1, 1, 10, tzinfo=timezone.utc)
    end = datetime(2014, 1, 1, 11, tzinfo=timezone.utc)
    scope = pipeline.scope_from_interval(start, end)
    assert scope["run_key"] == "interval-20140101T1000-20140101T1100"
    assert scope["end"] == "2014-01-01T11:00:00Z"


def test_merge_window_events_unions_devices():
    other = {**EVENT, "window_id": "def", "devices": ["c"], "end": "2020-03-09T12:00:00Z"}
    scope = pipeline.merge_window_events([EVENT, other])
    assert scope["devices"] == ["a", "b", "c"]
    assert scope["end"] == "2020-03-09T12:00:00Z"
    assert scope["window_id"] == "abc+def"
    assert scope["message_count"] == 20


def test_parse_window_event_rejects_missing_fields():
    with pytest.raises(ValueError, match="lacks the fields"):
        parse_window_event(b'{"window_id": "x"}')


def test_parse_window_event_rejects_non_json():
    with pytest.raises(ValueError):
        parse_window_event(b"not json")


def test_parse_window_event_rejects_empty_devices():
    with pytest.raises(ValueError, match="lists no devices"):
        parse_window_event({**EVENT, "devices": []})


def test_teardown_removes_workspace(tmp_path, monkeypatch):
    from saodf.config import Settings

    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    settings = Settings.from_env()
    workspace = pipeline.workspace(settings, "run-1")
    (workspace / "checkpoint.ckpt").write_text("x")
    result = pipeline.teardown(None, "run-1", settings)
    assert result["removed"] is True
    assert not workspace.exists()


def test_teardown_absent_workspace(tmp_path, monkeypatch):
    from saodf.config import Settings

    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    result = pipeline.teardown(None, "never-created", Settings.from_env())
    assert result["removed"] is False


def _settings(tmp_path, monkeypatch):
    from saodf.config import Settings

    monkeypatch.setenv("SAODF_HOME", str(tmp_path))
    monkeypatch.setenv("SAODF_LAKE_URL", (tmp_path / "lake").as_uri())
    return Settings.from_env()


def test_claim_run_rejects_second_run(tmp_path, monkeypatch):
    settings = _settings(tmp_path, monkeypatch)
    scope = pipeline.scope_from_window_event(EVENT)
    assert pipeline.claim_run(scope, "run-a", settings) is True
    assert pipeline.claim_run(scope, "run-b", settings) is False


def test_claim_run_allows_owner_again(tmp_path, monkeypatch):
    settings = _settings(tmp_path, monkeypatch)
    scope = pipeline.scope_from_window_event(EVENT)
    assert pipeline.claim_run(scope, "run-a", settings) is True
    assert pipeline.claim_run(scope, "run-a", settings) is True


def test_claim_run_partial_overlap_proceeds(tmp_path, monkeypatch):
    settings = _settings(tmp_path, monkeypatch)
    first = pipeline.scope_from_window_event(EVENT)
    assert pipeline.claim_run(first, "run-a", settings)
    other = {**EVENT, "window_id": "def"}
    merged = pipeline.merge_window_events([EVENT, other])
    assert pipeline.claim_run(merged, "run-b", settings) is True
    assert pipeline.is_window_claimed("def", settings)


def test_window_claimed_after_claim(tmp_path, monkeypatch):
    settings = _settings(tmp_path, monkeypatch)
    assert not pipeline.is_window_claimed("abc", settings)
    pipeline.claim_run(pipeline.scope_from_window_event(EVENT), "run-a", settings)
    assert pipeline.is_window_claimed("abc", settings)


def test_interval_scope_reads_history_before_end():
    start = datetime(2014, 1, 1, 10, tzinfo=timezone.utc)
    end = datetime(2014, 1, 1, 11, tzinfo=timezone.utc)
    scope = pipeline.scope_from_interval(start, end, history_hours=24)
    assert scope["interval_start"] == "2014-01-01T10:00:00Z"
    assert scope["start"] == "2013-12-31T11:00:00Z"
    assert scope["end"] == "2014-01-01T11:00:00Z"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("window_id", 12345, "not a non-empty string"),
        ("devices", "skab-valve1-0", "is not a list"),
        ("devices", ["../etc"], "invalid device ids"),
        ("start", "notadate", "not an ISO 8601 timestamp"),
        ("end", "2020-03-09T11:00:00", "has no time zone"),
        ("message_count", "many", "not a non-negative integer"),
        ("message_count", -1, "not a non-negative integer"),
    ],
)
def test_parse_window_event_rejects_bad_types(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_window_event({**EVENT, field: value})


def test_preprocess_too_short_is_no_data(tmp_path, monkeypatch):
    import pandas as pd
    import pyarrow as pa

    from saodf import lake

    settings = _settings(tmp_path, monkeypatch)
    times = pd.date_range("2020-03-09T10:00:00Z", periods=10, freq="1s")
    frame = pd.DataFrame(
        {
            "device_id": "short-1",
            "timestamp": times,
            "metric": "value",
            "value": range(10),
            "schema_version": 1,
            "kafka_topic": "telemetry.raw",
            "kafka_partition": 0,
            "kafka_offset": range(10),
        }
    )
    table = pa.Table.from_pandas(frame, schema=lake.RAW_SCHEMA, preserve_index=False)
    url = lake.raw_partition_url(settings.lake_url, "short-1", times[0].floor("h"))
    lake.write_parquet_atomic(table, url + "/" + lake.raw_file_name("telemetry.raw", 0, 0, 9))
    scope = pipeline.scope_from_window_event(
        {**EVENT, "devices": ["short-1"], "end": "2020-03-09T11:00:00Z"}
    )
    with pytest.raises(pipeline.NoDataError, match="short-1"):
        pipeline.preprocess(scope, settings)
