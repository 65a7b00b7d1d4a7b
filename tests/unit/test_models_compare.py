import math

import pytest

from models.compare import collect_runs, summarize, to_html, to_markdown, write_comparison


def _rows():
    base = {
        "run_key": "r1",
        "group": "5min",
        "champion_kind": "deepar",
        "champion_version": "3",
        "promoted": "true",
        "windows": "3",
        "data_hash": "abc",
        "wql_0.1": 0.1,
        "wql_0.5": 0.2,
        "wql_0.9": 0.1,
        "mase": 0.9,
        "coverage_80": 0.8,
        "training_seconds": 1.0,
        "test_mean_wQuantileLoss": math.nan,
    }
    return [
        {**base, "run_id": "a", "kind": "deepar", "candidate": True, "mean_wql": 0.1},
        {**base, "run_id": "b", "kind": "seasonal_naive", "candidate": False, "mean_wql": 0.3},
        {**base, "run_id": "c", "kind": "deepar", "candidate": False, "mean_wql": math.nan},
    ]


def test_summary_skips_nan():
    summary = {(s["group"], s["kind"]): s for s in summarize(_rows())}
    assert summary[("5min", "deepar")]["runs"] == 2
    assert summary[("5min", "deepar")]["mean_of_mean_wql"] == 0.1
    assert summary[("5min", "deepar")]["best_in_run"] == 1


def test_markdown_has_tables():
    text = to_markdown(_rows(), "exp")
    assert text.startswith("# Model comparison: experiment exp")
    assert "| r1 | 5min | deepar | True |" in text
    assert "nan" in text


def test_html_escapes(tmp_path):
    rows = _rows()
    rows[0]["run_key"] = "<script>"
    page = to_html(rows, "exp")
    assert "&lt;script&gt;" in page
    assert "<script>" not in page


def test_write_both_files(tmp_path):
    paths = write_comparison(_rows(), "exp", tmp_path)
    assert paths["markdown"].read_text().startswith("# Model comparison")
    assert paths["html"].read_text().startswith("<!doctype html>")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """An MLflow store with one local backtest and one SageMaker run of group 5min."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("exp")
    base = {"run_key": "r1", "group": "5min", "data_hash": "abcdef0123456789"}
    parent = client.create_run(
        experiment_id,
        tags={**base, "model_kind": "parent", "champion_kind": "deepar", "promoted": "false"},
    )
    local = client.create_run(
        experiment_id,
        tags={**base, "model_kind": "deepar", "mlflow.parentRunId": parent.info.run_id},
    )
    client.log_metric(local.info.run_id, "mean_wql", 0.2)
    sagemaker = client.create_run(
        experiment_id,
        tags={
            **base,
            "model_kind": "deepar_sagemaker",
            "promoted": "true",
            "champion_version": "4",
            "champion_kind": "deepar_sagemaker",
        },
    )
    client.log_metric(sagemaker.info.run_id, "test_mean_wQuantileLoss", 0.15)
    client.log_metric(sagemaker.info.run_id, "mean_wql", 0.1)
    client.log_param(sagemaker.info.run_id, "backtest_windows", "1")
    return uri


def test_collect_includes_sagemaker_runs(tracking_uri):
    rows = {row["kind"]: row for row in collect_runs(tracking_uri, "exp")}
    sagemaker = rows["deepar_sagemaker"]
    assert sorted(rows) == ["deepar", "deepar_sagemaker"]
    assert sagemaker["mean_wql"] == 0.1
    assert sagemaker["test_mean_wQuantileLoss"] == 0.15
    assert sagemaker["promoted"] == "true"
    assert sagemaker["champion_version"] == "4"
    assert sagemaker["candidate"] is True
    assert sagemaker["windows"] == "1"


def test_collect_local_decision_from_parent(tracking_uri):
    rows = {row["kind"]: row for row in collect_runs(tracking_uri, "exp")}
    local = rows["deepar"]
    assert local["promoted"] == "false"
    assert local["champion_kind"] == "deepar"
    assert math.isnan(local["test_mean_wQuantileLoss"])


def test_markdown_lists_sagemaker_run(tracking_uri):
    text = to_markdown(collect_runs(tracking_uri, "exp"), "exp")
    assert "| r1 | 5min | deepar_sagemaker | True |" in text
