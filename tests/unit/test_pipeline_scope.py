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


def _write_raw_hour(settings, device_id: str, hour_start: str) -> None:
    """Write one reading a minute for ``device_id`` in the hour from ``hour_start``."""
    import pandas as pd
    import pyarrow as pa

    from saodf import lake

    times = pd.date_range(hour_start, periods=60, freq="1min")
    offsets = range(int(times[0].timestamp()), int(times[0].timestamp()) + 60)
    frame = pd.DataFrame(
        {
            "device_id": device_id,
            "timestamp": times,
            "metric": "temperature",
            "value": [20.0 + (minute % 7) for minute in range(60)],
            "schema_version": 1,
            "kafka_topic": "telemetry.raw",
            "kafka_partition": 0,
            "kafka_offset": offsets,
        }
    )
    table = pa.Table.from_pandas(frame, schema=lake.RAW_SCHEMA, preserve_index=False)
    url = lake.raw_partition_url(settings.lake_url, device_id, times[0])
    name = lake.raw_file_name("telemetry.raw", 0, offsets[0], offsets[-1])
    lake.write_parquet_atomic(table, url + "/" + name)


def _partition(path: str) -> str:
    """Return ``device/date/hour`` of a raw file path."""
    parts = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in path.split("/") if "=" in p}
    return f"{parts['device_id']}/{parts['date']}/{parts['hour']}"


def test_interval_run_raw_partitions(tmp_path, monkeypatch):
    import pandas as pd

    from saodf import lake

    settings = _settings(tmp_path, monkeypatch)
    # pump-a sends every hour from 07:00 to 12:59, pump-b only before the interval and
    # pump-c only after it.
    for hour in range(7, 13):
        _write_raw_hour(settings, "pump-a", f"2014-01-01T{hour:02d}:00:00Z")
    _write_raw_hour(settings, "pump-b", "2014-01-01T09:00:00Z")
    _write_raw_hour(settings, "pump-c", "2014-01-01T11:00:00Z")

    listed: list[list[str]] = []
    list_raw_files = lake.list_raw_files

    def spy(*args, **kwargs):
        files = list_raw_files(*args, **kwargs)
        listed.append(sorted(_partition(f) for f in files))
        return files

    monkeypatch.setattr(lake, "list_raw_files", spy)
    start = datetime(2014, 1, 1, 10, tzinfo=timezone.utc)
    end = datetime(2014, 1, 1, 11, tzinfo=timezone.utc)
    scope = pipeline.scope_from_interval(start, end, history_hours=3)
    assert scope["start"] == "2014-01-01T08:00:00Z"

    scope = pipeline.resolve_devices(scope, settings)
    assert scope["devices"] == ["pump-a"]
    assert listed.pop() == ["pump-a/2014-01-01/10"]

    checked = pipeline.validate_raw(scope, settings)
    assert listed.pop() == ["pump-a/2014-01-01/10"]
    assert checked["rows"] == 60
    assert checked["success"] is True

    prepared = pipeline.preprocess(scope, settings)
    assert listed.pop() == [
        "pump-a/2014-01-01/08",
        "pump-a/2014-01-01/09",
        "pump-a/2014-01-01/10",
    ]
    assert listed == []
    assert prepared["prepared_url"] == settings.lake_path("prepared", scope["run_key"])

    frame = pd.read_parquet(tmp_path / "lake" / "prepared" / scope["run_key"] / "prepared.parquet")
    assert set(frame["device_id"]) == {"pump-a"}
    assert frame["timestamp"].min() == pd.Timestamp("2014-01-01T08:00:00Z")
    assert frame["timestamp"].max() == pd.Timestamp("2014-01-01T10:59:00Z")

    # Outside the raw zone the run writes only under its run key, except the category
    # mapping that every run shares.
    lake_root = tmp_path / "lake"
    written = [
        path.relative_to(lake_root).parts
        for path in lake_root.rglob("*")
        if path.is_file() and path.relative_to(lake_root).parts[0] != "raw"
    ]
    run_key_position = {"prepared": 1, "data_docs": 2, "quarantine": 2}
    assert written
    for parts in written:
        if parts == ("meta", "cat_mapping.json"):
            continue
        assert parts[0] in run_key_position, "/".join(parts)
        assert parts[run_key_position[parts[0]]] == scope["run_key"], "/".join(parts)


def test_report_cost_rerun_reuses_run(tmp_path, monkeypatch):
    import mlflow

    settings = _settings(tmp_path, monkeypatch).with_overrides(
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    start = datetime(2014, 1, 1, 10, tzinfo=timezone.utc)
    end = datetime(2014, 1, 1, 11, tzinfo=timezone.utc)
    scope = pipeline.scope_from_interval(start, end, history_hours=3)

    first = pipeline.report_cost(scope, {"train": 2.0}, settings)
    # A retry, or a task cleared in the Airflow UI, calls report_cost again.
    second = pipeline.report_cost(scope, {"train": 3.0}, settings)

    assert second["run_id"] == first["run_id"]
    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiment_ids)
    assert [run.info.run_id for run in runs] == [first["run_id"]]
    assert runs[0].data.metrics["train_seconds"] == 3.0
    assert runs[0].info.status == "FINISHED"
