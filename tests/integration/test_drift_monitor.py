"""Drift monitoring against a real MLflow server and a file lake.

Each test registers a ``champion`` version whose prepared data (three hourly sine series
from ``models.synthetic``) and forecast file it writes into the test's lake, then writes
raw readings for the 24 hours before ``CHECK_END``, with or without a level shift.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from saodf.config import PROJECT_ROOT, Settings, reset_settings

pytestmark = [pytest.mark.integration]

GROUP = "1h"
FREQ = "h"
SERIES = 3
TRAIN_LENGTH = 120
PREDICTION_LENGTH = 12
DEVICES = [f"device-{GROUP}-{index}" for index in range(SERIES)]
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
# The last point of each test series; the champion's forecast covers the 12 hours after it.
SERIES_END = START + timedelta(hours=TRAIN_LENGTH + PREDICTION_LENGTH - 1)
CHECK_END = SERIES_END + timedelta(hours=13)
# About 3.7 standard deviations of the synthetic series (3 * sin plus noise of sd 0.3).
SHIFT = 8.0


def pattern(index: int, hours: np.ndarray) -> np.ndarray:
    """Return the noise-free values of synthetic series ``index``, as models.synthetic builds it."""
    return 50 + 5 * index + 3 * np.sin(2 * np.pi * hours / 24)


@pytest.fixture(scope="module")
def drift_mlflow_uri(session_settings, tmp_path_factory):
    """Start an MLflow server of this module only, so the DAG reads no other test's champions."""
    from saodf.stack import process, services

    port = process.free_port()
    settings = session_settings.with_overrides(
        home=tmp_path_factory.mktemp("drift-mlflow"),
        ports={**session_settings.ports, "mlflow": port},
    )
    spec = services.mlflow_spec(settings)
    process.start(spec)
    yield f"http://{settings.host}:{port}"
    process.stop(spec)


@pytest.fixture
def drift_env(saodf_env, drift_mlflow_uri, monkeypatch) -> Settings:
    """Point SAODF_MLFLOW_URI at the module's server, for code that reads the environment."""
    monkeypatch.setenv("SAODF_MLFLOW_URI", drift_mlflow_uri)
    reset_settings()
    yield Settings.from_env()
    reset_settings()


def unique_prefix() -> str:
    """Return a registered-model prefix that the DAG's default prefix does not match."""
    return f"drift-test-{uuid.uuid4().hex[:8]}"


def register_champion(
    settings: Settings,
    run_key: str,
    separator: str = "-",
    write_data: bool = True,
    write_forecasts: bool = True,
) -> str:
    """Register a version tagged ``run_key``, alias it champion and write its lake data."""
    import mlflow

    from models.output import write_forecast_lines
    from models.registry import client_for, ensure_experiment, move_champion
    from models.synthetic import write_synthetic_prepared
    from saodf import lake, pipeline

    client = client_for(settings.mlflow_tracking_uri)
    name = f"{settings.registered_model_prefix}{separator}{GROUP}"
    run = client.create_run(ensure_experiment(client, "drift-test-models"))
    client.set_terminated(run.info.run_id, "FINISHED")
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass  # registered by an earlier test of this module
    source = f"s3://saodf-drift-test/models/{run_key}/model.tar.gz"
    version = client.create_model_version(
        name, source, run_id=run.info.run_id, tags={"run_key": run_key}
    )
    move_champion(client, name, str(version.version))
    paths = pipeline.urls(settings, run_key)
    if write_data:
        _, folder = lake.filesystem(paths["prepared"])
        write_synthetic_prepared(
            folder,
            groups={GROUP: FREQ},
            series_per_group=SERIES,
            train_length=TRAIN_LENGTH,
            prediction_length=PREDICTION_LENGTH,
            run_key=run_key,
        )
    if write_forecasts:
        steps = np.arange(TRAIN_LENGTH + PREDICTION_LENGTH, TRAIN_LENGTH + 2 * PREDICTION_LENGTH)
        forecasts = []
        for index in range(SERIES):
            mean = pattern(index, steps).round(4).tolist()
            quantiles = {level: mean for level in ("0.1", "0.5", "0.9")}
            forecasts.append({"mean": mean, "quantiles": quantiles})
        write_forecast_lines(f"{paths['forecasts']}/{GROUP}/output.jsonl.out", forecasts)
    return f"{name} v{version.version}"


def write_recent_readings(settings: Settings, shifted: set[str]) -> None:
    """Write readings every 10 minutes for the 24 hours before CHECK_END, shifted by SHIFT."""
    from saodf import lake

    rng = np.random.default_rng(7)
    times = pd.date_range(
        CHECK_END - timedelta(hours=24), CHECK_END, freq="10min", inclusive="left"
    )
    hours = ((times - pd.Timestamp(START)) / pd.Timedelta(hours=1)).to_numpy()
    offset = 0
    for index, device in enumerate(DEVICES):
        values = pattern(index, hours) + rng.normal(0, 0.3, hours.size)
        if device in shifted:
            values = values + SHIFT
        # Offsets are unique over all devices, because the lake deduplicates on them.
        offsets = np.arange(offset, offset + hours.size)
        offset += hours.size
        frame = pd.DataFrame(
            {
                "device_id": device,
                "timestamp": times,
                "metric": "value",
                "value": values,
                "schema_version": 1,
                "kafka_topic": "telemetry.raw",
                "kafka_partition": 0,
                "kafka_offset": offsets,
            }
        )
        for hour, group in frame.groupby(frame["timestamp"].dt.floor("h")):
            table = pa.Table.from_pandas(group, schema=lake.RAW_SCHEMA, preserve_index=False)
            name = lake.raw_file_name(
                "telemetry.raw", 0, int(group.kafka_offset.min()), int(group.kafka_offset.max())
            )
            url = lake.raw_partition_url(settings.lake_url, device, hour.to_pydatetime())
            lake.write_parquet_atomic(table, f"{url}/{name}")


def test_champion_references_read_champion(drift_env):
    from saodf import drift

    settings = drift_env.with_overrides(registered_model_prefix=unique_prefix())
    model = register_champion(settings, "drift-refs")
    references = drift.champion_references(settings)
    assert sorted(references) == DEVICES
    first = references[DEVICES[0]]
    assert first["metric"] == "value"
    assert first["freq"] == FREQ
    assert first["model"] == model
    assert len(first["target"]) == TRAIN_LENGTH + PREDICTION_LENGTH
    assert math.isnan(first["target"][5])
    assert pd.Timestamp(first["end"]) == pd.Timestamp(SERIES_END).tz_localize(None)
    expected_mean = pattern(0, np.arange(132, 144)).round(4)
    assert first["forecast"]["mean"] == pytest.approx(expected_mean)


def test_champion_references_aws_model_name(drift_env):
    from saodf import drift

    settings = drift_env.with_overrides(registered_model_prefix=unique_prefix())
    model = register_champion(settings, "drift-refs-aws", separator="_")
    references = drift.champion_references(settings)
    assert sorted(references) == DEVICES
    assert references[DEVICES[0]]["model"] == model


def test_champion_references_without_forecasts(drift_env):
    from saodf import drift

    settings = drift_env.with_overrides(registered_model_prefix=unique_prefix())
    register_champion(settings, "drift-refs-no-forecasts", write_forecasts=False)
    references = drift.champion_references(settings)
    assert sorted(references) == DEVICES
    assert references[DEVICES[0]]["forecast"] is None


def test_champion_references_skip_cases(drift_env):
    from models.registry import client_for
    from saodf import drift

    prefix = unique_prefix()
    settings = drift_env.with_overrides(registered_model_prefix=prefix)
    # A champion whose prepared data is gone from the lake.
    register_champion(settings, "drift-refs-gone", write_data=False, write_forecasts=False)
    # A name that only starts with the prefix, without a separator after it.
    register_champion(settings.with_overrides(registered_model_prefix=prefix + "x"), "drift-x")
    client = client_for(settings.mlflow_tracking_uri)
    # A registered model without a champion alias.
    client.create_registered_model(f"{prefix}-5min")
    assert drift.champion_references(settings) == {}


def test_check_fleet_level_shift(drift_env):
    from saodf import drift

    settings = drift_env.with_overrides(registered_model_prefix=unique_prefix())
    register_champion(settings, "drift-fleet-shift")
    write_recent_readings(settings, shifted={DEVICES[0]})
    results, request = drift.check_fleet(CHECK_END, 24.0, settings=settings)
    by_device = {result.device_id: result for result in results}
    assert sorted(by_device) == DEVICES
    shifted = by_device[DEVICES[0]]
    assert shifted.drifted
    assert [reason.split()[0] for reason in shifted.reasons] == ["PSI", "KS", "residual"]
    assert shifted.recent_points == 144
    assert not by_device[DEVICES[1]].drifted
    assert not by_device[DEVICES[2]].drifted
    assert request["devices"] == [DEVICES[0]]
    assert request["start"] == "2024-01-06T00:00:00Z"
    assert request["end"] == "2024-01-07T00:00:00Z"


def test_check_fleet_no_shift(drift_env):
    from saodf import drift

    settings = drift_env.with_overrides(registered_model_prefix=unique_prefix())
    register_champion(settings, "drift-fleet-steady")
    write_recent_readings(settings, shifted=set())
    results, request = drift.check_fleet(CHECK_END, 24.0, settings=settings)
    assert request is None
    assert len(results) == SERIES
    for result in results:
        assert not result.drifted, result
        assert result.psi < drift.DEFAULT_PSI_LIMIT
        assert result.ks < drift.DEFAULT_KS_LIMIT
        assert result.residual < 1.0


def test_check_fleet_without_champions(drift_env):
    from saodf import drift

    settings = drift_env.with_overrides(registered_model_prefix=unique_prefix())
    assert drift.check_fleet(CHECK_END, 24.0, settings=settings) == ([], None)


def test_log_scores_records_run(drift_env, tmp_path):
    import json

    from models.registry import client_for
    from saodf import drift

    shifted = drift.DeviceDrift("dev-a", 1.5, 0.8, 1e-9, 4.0, 132, 144, True, ["PSI 1.500 >= 0.25"])
    unscored = drift.DeviceDrift("dev-b", None, None, None, None, 10, 5)
    run_id = drift.log_scores([shifted, unscored], CHECK_END, drift_env)

    client = client_for(drift_env.mlflow_tracking_uri)
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "drift_monitor"
    assert run.info.run_name == "drift-20240107T0000"
    assert run.data.tags["end"] == CHECK_END.isoformat()
    assert run.data.tags["devices"] == "2"
    assert run.data.metrics == {
        "drifted_devices": 1.0,
        "psi.dev-a": 1.5,
        "ks.dev-a": 0.8,
        "residual.dev-a": 4.0,
    }
    path = client.download_artifacts(run_id, "drift.json", str(tmp_path))
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle) == [asdict(shifted), asdict(unscored)]


def run_drift_dag(logical_date: datetime):
    """Run the drift_monitor DAG with dag.test(); its data interval ends at ``logical_date``."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "drift_monitor.py"))
    assert bag.import_errors == {}
    return bag.dags["drift_monitor"].test(logical_date=logical_date)


def retrain_events(run_id: str) -> list[dict]:
    """Return the extras of the retrain_request asset events that DAG run ``run_id`` emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "retrain_request", AssetEvent.source_run_id == run_id)
        )
        return [event.extra for event in session.scalars(query)]


@pytest.mark.slow
def test_drift_dag_shift_requests_retraining(airflow_db, drift_env):
    register_champion(drift_env, "drift-dag-shift")
    write_recent_readings(drift_env, shifted={DEVICES[1]})
    run = run_drift_dag(CHECK_END)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"check_drift": "success", "request_retraining": "success"}
    events = retrain_events(run.run_id)
    assert len(events) == 1
    assert events[0]["devices"] == [DEVICES[1]]
    assert events[0]["end"] == "2024-01-07T00:00:00Z"


@pytest.mark.slow
def test_drift_dag_steady_skips_request(airflow_db, drift_env):
    register_champion(drift_env, "drift-dag-steady")
    write_recent_readings(drift_env, shifted=set())
    # Another logical date than the shift test's, so each test gets its own DAG run.
    run = run_drift_dag(CHECK_END + timedelta(hours=1))
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"check_drift": "success", "request_retraining": "skipped"}
    assert retrain_events(run.run_id) == []
