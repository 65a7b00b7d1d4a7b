"""Champion promotion on a rolling backtest, against a real MLflow server."""

import uuid

import pytest

from models.synthetic import write_synthetic_prepared

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
    # Hourly sine with a 24-step period: seasonal naive at 24 steps is nearly exact.
    return write_synthetic_prepared(tmp_path_factory.mktemp("prepared"), groups={"1h": "h"})


def _train(mlflow_uri, prepared_url, workdir, prefix, run_key):
    from models.pipeline import train_and_register

    return train_and_register(
        prepared_url,
        run_key,
        mlflow_uri,
        workdir,
        config_overrides=TINY,
        experiment=f"{prefix}-experiment",
        model_prefix=prefix,
    )["1h"]


def _register_baseline(mlflow_uri, name, prediction_length, season_length):
    import mlflow

    from models.pyfunc import ForecasterModel, log_forecaster
    from models.registry import register_champion, tracking

    model = ForecasterModel("seasonal_naive", "h", prediction_length, season_length=season_length)
    with tracking(mlflow_uri), mlflow.start_run() as run:
        info = log_forecaster(model)
    tags = {"model_kind": "seasonal_naive"}
    return register_champion(mlflow_uri, name, info.model_uri, run.info.run_id, "seed-1", tags)


def _alias(mlflow_uri, name):
    from models.registry import client_for

    return client_for(mlflow_uri).get_model_version_by_alias(name, "champion").version


@pytest.fixture(scope="module")
def two_runs(mlflow_uri, prepared_url, tmp_path_factory):
    prefix = f"champ-{uuid.uuid4().hex[:8]}"
    work = tmp_path_factory.mktemp("work")
    first = _train(mlflow_uri, prepared_url, work, prefix, "run-1")
    second = _train(mlflow_uri, prepared_url, work, prefix, "run-2")
    return first, second


def test_champion_first_run_promotes(mlflow_uri, two_runs):
    first, _ = two_runs
    assert first["promoted"] is True
    assert first["champion_metrics"] is None
    assert first["model_version"] == first["candidate_version"]
    assert first["backtest_windows"] == 3


def test_champion_kept_on_equal_score(mlflow_uri, two_runs):
    first, second = two_runs
    assert second["promoted"] is False
    assert ">= champion" in second["promotion_reason"]
    assert second["candidate_version"] != first["candidate_version"]
    assert second["model_version"] == first["model_version"]
    assert _alias(mlflow_uri, second["model_name"]) == first["model_version"]
    assert second["champion_metrics"]["mean_wql"] == pytest.approx(
        second["metrics"][second["candidate_kind"]]["mean_wql"]
    )


def test_champion_replaced_when_beaten(mlflow_uri, prepared_url, tmp_path):
    prefix = f"champ-{uuid.uuid4().hex[:8]}"
    # A 5-step season is out of phase with the 24-step sine, so it forecasts badly.
    seeded = _register_baseline(mlflow_uri, f"{prefix}-1h", 12, season_length=5)
    result = _train(mlflow_uri, prepared_url, tmp_path, prefix, "run-1")
    candidate_wql = result["metrics"][result["candidate_kind"]]["mean_wql"]
    assert result["promoted"] is True
    assert result["champion_metrics"]["mean_wql"] > candidate_wql
    assert result["model_version"] != seeded
    assert _alias(mlflow_uri, result["model_name"]) == result["candidate_version"]


def test_champion_replaced_when_incomparable(mlflow_uri, prepared_url, tmp_path):
    prefix = f"champ-{uuid.uuid4().hex[:8]}"
    _register_baseline(mlflow_uri, f"{prefix}-1h", 3, season_length=24)
    result = _train(mlflow_uri, prepared_url, tmp_path, prefix, "run-1")
    assert result["promoted"] is True
    assert result["champion_metrics"] is None


def test_run_logs_hash_charts_backtest(mlflow_uri, two_runs):
    from models.registry import client_for

    first, _ = two_runs
    client = client_for(mlflow_uri)
    hashes = {client.get_run(run_id).data.tags["data_hash"] for run_id in first["run_ids"].values()}
    for kind, run_id in first["run_ids"].items():
        charts = [a.path for a in client.list_artifacts(run_id, "charts")]
        top = [a.path for a in client.list_artifacts(run_id)]
        metrics = client.get_run(run_id).data.metrics
        assert charts == [f"charts/fan_chart_{kind}.png"]
        assert "backtest.json" in top
        assert "window_2_mean_wql" in metrics
    assert hashes == {first["data_hash"]}
    assert set(first["metrics"]) == {"deepar", "seasonal_naive", "auto_ets"}


def test_compare_reads_runs(mlflow_uri, two_runs, tmp_path):
    import typer
    from typer.testing import CliRunner

    from saodf.cli_models import models_app

    first, _ = two_runs
    experiment = first["model_name"].removesuffix("-1h") + "-experiment"
    app = typer.Typer()
    app.add_typer(models_app, name="models")
    result = CliRunner().invoke(
        app,
        [
            "models",
            "compare",
            "--experiment",
            experiment,
            "--tracking-uri",
            mlflow_uri,
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "comparison.md").read_text()
    assert markdown.count("| run-1 | 1h |") == 3
    assert markdown.count("| run-2 | 1h |") == 3
    assert "<table>" in (tmp_path / "comparison.html").read_text()
