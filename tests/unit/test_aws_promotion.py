"""Promotion rules of the aws target: test metric on the same data, scoring on other data."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from models.errors import ModelInputError
from models.prepared import group_specs, read_manifest
from models.synthetic import write_synthetic_prepared
from saodf import aws_promotion
from saodf.aws_pipeline import AwsOutputError

MODEL = "saodf-forecaster_5min"
HORIZON = 12


def _champion(version="1", data_hash="abc", wql="0.3", kind="deepar_sagemaker", **changes):
    tags = {"data_hash": data_hash, "test_mean_wquantileloss": wql, "model_kind": kind}
    fields = {
        "version": version,
        "tags": tags,
        "source": "s3://bucket/sm/models/old-job/output/model.tar.gz",
        "run_id": "champion-run",
    }
    return SimpleNamespace(**{**fields, **changes})


class FakeMlflow:
    """The MlflowClient calls of the promotion code, recorded in dicts."""

    def __init__(self, params=None):
        self.params = dict(params or {})
        self.metrics, self.tags, self.version_tags, self.aliases = {}, {}, {}, {}
        self.logged_params = {}

    def get_run(self, run_id):
        return SimpleNamespace(data=SimpleNamespace(params=self.params))

    def log_metric(self, run_id, key, value):
        self.metrics[key] = value

    def log_param(self, run_id, key, value):
        self.logged_params[key] = value

    def set_tag(self, run_id, key, value):
        self.tags[key] = value

    def set_model_version_tag(self, name, version, key, value):
        self.version_tags[(version, key)] = value

    def set_registered_model_alias(self, name, alias, version):
        self.aliases[alias] = version


class FakeSageMaker:
    """DescribeTransformJob of a finished one-minute job."""

    def describe_transform_job(self, TransformJobName):  # noqa: N803 - boto3 argument name
        start = datetime(2024, 1, 1, tzinfo=timezone.utc)
        return {
            "TransformStartTime": start,
            "TransformEndTime": start + timedelta(minutes=1),
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }


# decide_by_test_metric: SageMaker's own test metric, only on the same data.


def test_test_metric_without_champion():
    assert aws_promotion.decide_by_test_metric(None, "1", "abc", {})[0] is True


def test_test_metric_lower_loss_wins():
    promoted, reason = aws_promotion.decide_by_test_metric(
        _champion(), "2", "abc", {"test:mean_wQuantileLoss": 0.2}
    )
    assert promoted is True
    assert "0.2 < champion 0.3" in reason


def test_test_metric_higher_loss_stays():
    promoted, _ = aws_promotion.decide_by_test_metric(
        _champion(), "2", "abc", {"test:mean_wQuantileLoss": 0.4}
    )
    assert promoted is False


def test_test_metric_equal_loss_stays():
    promoted, _ = aws_promotion.decide_by_test_metric(
        _champion(), "2", "abc", {"test:mean_wQuantileLoss": 0.3}
    )
    assert promoted is False


def test_test_metric_other_data_open():
    decision = aws_promotion.decide_by_test_metric(
        _champion(data_hash="old"), "2", "abc", {"test:mean_wQuantileLoss": 0.01}
    )
    assert decision is None


def test_test_metric_needs_metric():
    promoted, _ = aws_promotion.decide_by_test_metric(_champion(), "2", "abc", {})
    assert promoted is False


# champion_comparison: how a champion trained on other data can be scored.

HYPERPARAMETERS = {"prediction_length": "12", "time_freq": "5min"}


def test_comparison_sagemaker_champion():
    client = FakeMlflow(params=HYPERPARAMETERS)
    comparison = aws_promotion.champion_comparison(client, _champion(), HYPERPARAMETERS)
    assert comparison["scorer"] == "sagemaker"
    assert comparison["champion_model_url"].endswith("/old-job/output/model.tar.gz")
    assert comparison["champion_version"] == "1"


def test_comparison_other_horizon():
    client = FakeMlflow(params={**HYPERPARAMETERS, "prediction_length": "24"})
    comparison = aws_promotion.champion_comparison(client, _champion(), HYPERPARAMETERS)
    assert comparison["scorer"] is None
    assert "prediction_length=24" in comparison["reason"]


def test_comparison_without_params():
    comparison = aws_promotion.champion_comparison(FakeMlflow(), _champion(), HYPERPARAMETERS)
    assert comparison["scorer"] == "sagemaker"


def test_comparison_non_s3_artifact():
    champion = _champion(source="runs:/abc/model")
    comparison = aws_promotion.champion_comparison(FakeMlflow(), champion, HYPERPARAMETERS)
    assert comparison["scorer"] is None
    assert "no S3 model artifact" in comparison["reason"]


def test_comparison_local_champion():
    champion = _champion(kind="seasonal_naive", source="models:/m-1")
    comparison = aws_promotion.champion_comparison(FakeMlflow(), champion, HYPERPARAMETERS)
    assert comparison["scorer"] == "mlflow"


def test_comparison_unknown_kind():
    champion = _champion(kind="prophet")
    comparison = aws_promotion.champion_comparison(FakeMlflow(), champion, HYPERPARAMETERS)
    assert comparison["scorer"] is None
    assert "model_kind='prophet'" in comparison["reason"]


# backtest_lines: the scoring input and its held-out points.


def test_backtest_lines_cut_tail():
    line = json.dumps({"start": "2024-01-01", "target": [1, 2, "NaN", 4, 5], "cat": [0]})
    inputs, held_out = aws_promotion.backtest_lines([line], 2)
    assert json.loads(inputs[0]) == {"start": "2024-01-01", "target": [1, 2, "NaN"], "cat": [0]}
    assert json.loads(held_out[0]) == {"target": [4, 5]}


def test_backtest_lines_keep_dynamic_feat():
    record = {"start": "2024-01-01", "target": [1, 2, 3, 4], "dynamic_feat": [[0, 1, 0, 1]]}
    inputs, _ = aws_promotion.backtest_lines([json.dumps(record)], 2)
    assert json.loads(inputs[0])["dynamic_feat"] == [[0, 1, 0, 1]]


def test_backtest_lines_reject_short():
    line = json.dumps({"start": "2024-01-01", "target": [1, 2]})
    with pytest.raises(ModelInputError, match="test line 1 has 2 target points"):
        aws_promotion.backtest_lines([line], 2)


# decide_group: both models' forecasts scored on the same window.


@pytest.fixture
def scoring(tmp_path):
    """A scoring folder with the backtest input of three synthetic 5-minute series."""
    prepared = write_synthetic_prepared(tmp_path / "prepared")
    spec = group_specs(read_manifest(prepared))[0]
    test_lines = (tmp_path / "prepared" / spec.test).read_text().splitlines()
    inputs, held_out = aws_promotion.backtest_lines(test_lines, HORIZON)
    folder = tmp_path / "scoring"
    (folder / "input").mkdir(parents=True)
    (folder / "input" / "data.jsonl").write_text("\n".join(inputs) + "\n")
    (folder / "held_out.jsonl").write_text("\n".join(held_out) + "\n")
    tails = [json.loads(line)["target"] for line in held_out]
    return SimpleNamespace(
        spec=spec, folder=folder, window=aws_promotion.read_window(folder.as_uri()), tails=tails
    )


def _output(folder: Path, role: str, forecasts: list[list[float]]) -> dict:
    """Write a transform output of ``forecasts`` and return its scoring result."""
    lines = [
        json.dumps({"mean": values, "quantiles": {q: values for q in ("0.1", "0.5", "0.9")}})
        for values in forecasts
    ]
    path = folder / role / "data.jsonl.out"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {
        "group": "5min",
        "role": role,
        "mode": "transform",
        "job_name": f"saodf-{role}-xform-t1",
        "model_version": "2" if role == "candidate" else "1",
        "output": path.as_uri(),
    }


def _exact(tails):
    return [[float(v) for v in tail] for tail in tails]


def _flat(tails, level=0.0):
    return [[level] * len(tail) for tail in tails]


def _decide(scoring, candidate, champion, client=None, scorer="sagemaker"):
    client = client or FakeMlflow()
    result = {
        "model_name": MODEL,
        "model_version": "2",
        "mlflow_run_id": "candidate-run",
        "comparison": {
            "champion_version": "1",
            "champion_kind": "deepar_sagemaker",
            "scorer": scorer,
        },
    }
    scored = {("5min", "candidate"): _output(scoring.folder, "candidate", candidate)}
    if champion is not None:
        scored[("5min", "champion")] = _output(scoring.folder, "champion", champion)
    decision = aws_promotion.decide_group(
        spec=scoring.spec,
        result=result,
        window=scoring.window,
        scored=scored,
        mlflow_client=client,
        sagemaker_client=FakeSageMaker(),
        tracking_uri="http://127.0.0.1:1",
    )
    return decision, client


def test_window_reads_held_out(scoring):
    assert len(scoring.window.contexts) == 3
    assert scoring.window.contexts[0]["target"].size == 120
    assert scoring.window.actuals[0].size == HORIZON
    assert np.allclose(scoring.window.actuals[0], np.asarray(scoring.tails[0], dtype=float))


def test_decide_better_candidate_promoted(scoring):
    decision, client = _decide(scoring, _exact(scoring.tails), _flat(scoring.tails))
    assert decision["promoted"] is True
    assert decision["candidate_metrics"]["mean_wql"] == 0.0
    assert decision["champion_metrics"]["mean_wql"] > 0.0
    assert client.aliases == {"champion": "2"}
    assert client.tags["promoted"] == "true"
    assert client.tags["champion_version"] == "2"
    assert "candidate mean_wql 0 < champion" in client.tags["promotion_reason"]
    assert client.metrics["mean_wql"] == 0.0
    assert client.metrics["champion_mean_wql"] == decision["champion_metrics"]["mean_wql"]
    assert client.metrics["scoring_cost_usd"] > 0.0
    assert client.tags["compared_champion_version"] == "1"


def test_decide_worse_candidate_kept(scoring):
    decision, client = _decide(scoring, _flat(scoring.tails), _exact(scoring.tails))
    assert decision["promoted"] is False
    assert client.aliases == {}
    assert client.tags["promoted"] == "false"
    assert client.tags["champion_version"] == "1"
    assert client.version_tags[("2", "promotion_reason")].startswith("candidate mean_wql")


def test_decide_tie_keeps_champion(scoring):
    decision, client = _decide(scoring, _exact(scoring.tails), _exact(scoring.tails))
    assert decision["promoted"] is False
    assert client.aliases == {}


def test_decide_unscorable_champion_replaced(scoring):
    short = [values[:-1] for values in _exact(scoring.tails)]
    decision, client = _decide(scoring, _flat(scoring.tails), short)
    assert decision["promoted"] is True
    assert decision["champion_metrics"] is None
    assert "could not be scored" in decision["promotion_reason"]
    assert client.aliases == {"champion": "2"}


def test_decide_needs_champion_result(scoring):
    with pytest.raises(AwsOutputError, match="no scoring result of the champion"):
        _decide(scoring, _exact(scoring.tails), None)


def test_decide_rejects_short_output(scoring):
    with pytest.raises(AwsOutputError, match="wrote 2 forecast lines for the 3 series"):
        _decide(scoring, _exact(scoring.tails), _flat(scoring.tails)[:2])


def test_decide_local_champion(scoring, monkeypatch):
    import models.pipeline

    seen = {}

    def fake_score(tracking_uri, name, version, spec, windows):
        seen.update(name=name, version=version, windows=windows)
        return {"mean_wql": 0.5}

    monkeypatch.setattr(models.pipeline, "score_champion", fake_score)
    client = FakeMlflow()
    client.get_model_version = lambda name, version: SimpleNamespace(version=version)
    decision, _ = _decide(scoring, _exact(scoring.tails), None, client=client, scorer="mlflow")
    assert decision["promoted"] is True
    assert seen["name"] == MODEL
    assert seen["version"].version == "1"
    assert seen["windows"] == [scoring.window]
    assert decision["scoring_jobs"] == ["saodf-candidate-xform-t1"]
