import uuid

import pytest

from models.output import read_forecast_lines
from models.synthetic import write_synthetic_prepared

# The module trains three tiny DeepAR models and logs six pyfunc models.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {
    "epochs": 1,
    "num_batches_per_epoch": 3,
    "num_cells": 30,
    "num_layers": 1,
    "dropout_rate": 0.0,
    "num_eval_samples": 20,
}


@pytest.fixture(scope="module")
def prepared_url(tmp_path_factory):
    return write_synthetic_prepared(
        tmp_path_factory.mktemp("prepared"), groups={"5min": "5min", "1h": "h"}
    )


@pytest.fixture(scope="module")
def trained(mlflow_uri, prepared_url, tmp_path_factory):
    from models.pipeline import train_and_register

    suffix = uuid.uuid4().hex[:8]
    arguments = {
        "prepared_url": prepared_url,
        "run_key": f"it-{suffix}",
        "tracking_uri": mlflow_uri,
        "workdir": tmp_path_factory.mktemp("work"),
        "config_overrides": TINY,
        "experiment": f"models-it-{suffix}",
        "model_prefix": f"models-it-{suffix}",
    }
    return arguments, train_and_register(**arguments)


def _client(mlflow_uri):
    from models.registry import client_for

    return client_for(mlflow_uri)


def test_register_sets_champion_alias(mlflow_uri, trained):
    _, results = trained
    client = _client(mlflow_uri)
    for group, result in results.items():
        champion = client.get_model_version_by_alias(result["model_name"], "champion")
        assert result["model_name"].endswith(f"-{group}")
        assert champion.version == result["model_version"]


def test_register_tags_version(mlflow_uri, trained):
    arguments, results = trained
    result = results["5min"]
    version = _client(mlflow_uri).get_model_version(result["model_name"], result["model_version"])
    assert version.tags["run_key"] == arguments["run_key"]
    assert version.tags["model_kind"] == result["champion_kind"]
    assert "mean_wql" in version.tags


def test_register_champion_has_lower_wql(trained):
    _, results = trained
    for result in results.values():
        other = "deepar" if result["champion_kind"] == "seasonal_naive" else "seasonal_naive"
        champion_wql = result["metrics"][result["champion_kind"]]["mean_wql"]
        assert champion_wql <= result["metrics"][other]["mean_wql"]


def test_register_logs_child_runs(mlflow_uri, trained):
    _, results = trained
    client = _client(mlflow_uri)
    result = results["1h"]
    for kind, run_id in result["run_ids"].items():
        run = client.get_run(run_id)
        assert run.data.tags["model_kind"] == kind
        assert run.data.tags["mlflow.parentRunId"] == result["parent_run_id"]
        assert {"wql_0.1", "wql_0.5", "wql_0.9", "mean_wql", "mase", "coverage_80"} <= set(
            run.data.metrics
        )
        assert "estimated_cost_usd" in run.data.metrics
        assert "training_seconds" in run.data.metrics
    deepar_params = client.get_run(result["run_ids"]["deepar"]).data.params
    assert deepar_params["num_cells"] == "30"
    assert deepar_params["likelihood"] == "student-T"


def test_register_rerun_reuses_result(mlflow_uri, trained):
    from models.pipeline import train_and_register

    arguments, first = trained
    client = _client(mlflow_uri)
    experiment = client.get_experiment_by_name(arguments["experiment"])
    runs_before = len(client.search_runs([experiment.experiment_id], max_results=1000))
    second = train_and_register(**arguments)
    runs_after = len(client.search_runs([experiment.experiment_id], max_results=1000))
    for group, result in second.items():
        versions = client.search_model_versions(f"name = '{result['model_name']}'")
        assert result["reused"] is True
        assert result["model_version"] == first[group]["model_version"]
        assert len(versions) == 1
    assert runs_after == runs_before


def test_batch_transform_output_parses(mlflow_uri, prepared_url, trained, tmp_path):
    import json

    from models.pipeline import batch_transform

    _, results = trained
    models = {group: (r["model_name"], "champion") for group, r in results.items()}
    written = batch_transform(prepared_url, tmp_path.as_uri(), mlflow_uri, models)
    forecasts = read_forecast_lines(written["5min"]["output"])
    manifest = json.loads((tmp_path / "5min" / "manifest.json").read_text(encoding="utf-8"))
    assert len(forecasts) == 3
    assert len(forecasts[0]["mean"]) == 12
    assert sorted(forecasts[0]["quantiles"]) == ["0.1", "0.5", "0.9"]
    assert manifest["model_version"] == results["5min"]["model_version"]
    assert manifest["quantiles"] == ["0.1", "0.5", "0.9"]
    assert [s["line"] for s in manifest["series"]] == [0, 1, 2]
    assert manifest["series"][0]["device_id"] == "device-5min-0"
    # 132 test points at 5 minutes from midnight end at 10:55, so the forecast starts at 11:00.
    assert manifest["series"][0]["forecast_start"] == "2024-01-01T11:00:00"


def test_batch_transform_rejects_unknown_group(mlflow_uri, prepared_url, tmp_path):
    from models.errors import ModelInputError
    from models.pipeline import batch_transform

    with pytest.raises(ModelInputError, match=r"group '15min' is not in the prepared manifest"):
        batch_transform(prepared_url, tmp_path.as_uri(), mlflow_uri, {"15min": ("x", "1")})


def test_serving_deepar_by_alias(mlflow_uri, prepared_url, tmp_path):
    import mlflow

    from models.config import DeepARConfig
    from models.local_deepar import train_deepar
    from models.prepared import read_records
    from models.pyfunc import ForecasterModel, log_forecaster
    from models.registry import register_champion, tracking
    from models.serving import forecast_record, load_model_version

    records = read_records(prepared_url, "groups/5min/train/data.jsonl")
    config = DeepARConfig(prediction_length=12, context_length=24, **TINY)
    trained = train_deepar(records, "5min", config, tmp_path)
    name = f"models-it-serving-{uuid.uuid4().hex[:8]}"
    model = ForecasterModel("deepar", "5min", 12, cardinality=trained.cardinality)
    with tracking(mlflow_uri), mlflow.start_run() as run:
        info = log_forecaster(model, trained.predictor)
    register_champion(mlflow_uri, name, info.model_uri, run.info.run_id, "serving-1", {})

    loaded = load_model_version(mlflow_uri, name, "champion")
    again = load_model_version(mlflow_uri, name, "champion")
    forecast = forecast_record(
        loaded, {**records[0], "target": records[0]["target"].tolist()}, "5min", 4
    )
    assert loaded.kind == "deepar"
    assert again is loaded
    assert len(forecast["mean"]) == 4
    assert len(forecast["quantiles"]["0.9"]) == 4


def test_serving_follows_moved_alias(mlflow_uri):
    import mlflow

    from models.pyfunc import ForecasterModel, log_forecaster
    from models.registry import register_champion, tracking
    from models.serving import load_model_version

    name = f"models-it-alias-{uuid.uuid4().hex[:8]}"
    for run_key, season in (("alias-1", 2), ("alias-2", 3)):
        with tracking(mlflow_uri), mlflow.start_run() as run:
            info = log_forecaster(ForecasterModel("seasonal_naive", "h", 3, season_length=season))
        register_champion(mlflow_uri, name, info.model_uri, run.info.run_id, run_key, {})
        loaded = load_model_version(mlflow_uri, name, "champion")
        assert loaded.pyfunc.unwrap_python_model().season_length == season


def test_serving_rejects_long_horizon(mlflow_uri):
    import mlflow

    from models.errors import ModelInputError
    from models.pyfunc import ForecasterModel, log_forecaster
    from models.registry import register_champion, tracking
    from models.serving import forecast_record, load_model_version

    name = f"models-it-horizon-{uuid.uuid4().hex[:8]}"
    with tracking(mlflow_uri), mlflow.start_run() as run:
        info = log_forecaster(ForecasterModel("seasonal_naive", "h", 3, season_length=2))
    register_champion(mlflow_uri, name, info.model_uri, run.info.run_id, "horizon-1", {})
    loaded = load_model_version(mlflow_uri, name, "1")
    with pytest.raises(ModelInputError, match=r"horizon=5 is out of range .* use 1 to 3"):
        forecast_record(loaded, {"start": "2024-01-01", "target": [1.0, 2.0, 3.0]}, "h", 5)


def test_serving_missing_alias_raises(mlflow_uri):
    from models.errors import RegistryError
    from models.serving import load_model_version

    with pytest.raises(
        RegistryError, match=r"model 'models-it-none' version or alias 'champion' not found"
    ):
        load_model_version(mlflow_uri, "models-it-none", "champion")


def test_cost_summary_logged(mlflow_uri):
    from models.cost import log_cost_summary

    experiment = f"models-it-cost-{uuid.uuid4().hex[:8]}"
    summary = log_cost_summary(
        mlflow_uri, "cost-1", {"train": 3600.0, "batch_transform": 1800.0}, experiment=experiment
    )
    run = _client(mlflow_uri).get_run(summary["run_id"])
    # train on Spot at the assumed 70% saving: 0.23 * 0.3; batch transform on demand: 0.115
    assert run.data.metrics["train_cost_usd"] == pytest.approx(0.069)
    assert run.data.metrics["batch_transform_cost_usd"] == pytest.approx(0.115)
    assert run.data.metrics["total_cost_usd"] == pytest.approx(0.184)
    assert run.data.tags["run_key"] == "cost-1"
