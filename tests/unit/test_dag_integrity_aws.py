"""DAG integrity of the pipeline as parsed for the aws target (SAODF_TARGET=aws)."""

from datetime import timedelta

import pytest

from saodf.config import PROJECT_ROOT

EXPECTED_EDGES = {
    ("resolve_scope", "quality_and_prep.apply_batch"),
    ("quality_and_prep.apply_batch", "quality_and_prep.stage_code"),
    ("quality_and_prep.stage_code", "quality_and_prep.preprocess"),
    ("quality_and_prep.validate_raw", "quality_and_prep.preprocess"),
    ("quality_and_prep.preprocess", "quality_and_prep.validate_prepared"),
    ("quality_and_prep.validate_prepared", "model.plan_jobs"),
    ("model.plan_jobs", "model.train"),
    ("model.train", "model.record_training"),
    ("model.train", "model.batch_transform"),
    ("model.train", "model.spot_inference"),
    ("model.record_training", "model.plan_scoring"),
    ("model.plan_scoring", "model.score_transform"),
    ("model.plan_scoring", "model.score_spot_inference"),
    ("model.record_training", "model.promote"),
    ("model.score_transform", "model.promote"),
    ("model.score_spot_inference", "model.promote"),
    ("model.batch_transform", "model.collect_forecasts"),
    ("model.spot_inference", "model.collect_forecasts"),
    ("model.promote", "model.collect_forecasts"),
    ("model.collect_forecasts", "populate_cache"),
    ("populate_cache", "teardown"),
    ("teardown", "report_cost"),
}
OPERATORS = {
    "quality_and_prep.preprocess": "PrepareGlueJobOperator",
    "model.train": "DeepARTrainingOperator",
    "model.batch_transform": "DeepARTransformOperator",
    "model.spot_inference": "SpotInferenceOperator",
    "model.score_transform": "ScoringTransformOperator",
    "model.score_spot_inference": "ScoringSpotInferenceOperator",
    "quality_and_prep.apply_batch": "TerraformBatchOperator",
}


@pytest.fixture(scope="module")
def aws_dag():
    from airflow.models import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAODF_TARGET", "aws")
        bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["telemetry_pipeline"]


def test_aws_expected_edges(aws_dag):
    edges = {(t.task_id, d) for t in aws_dag.tasks for d in t.downstream_task_ids}
    assert EXPECTED_EDGES - edges == set()


def test_aws_task_ids(aws_dag):
    assert {t.task_id for t in aws_dag.tasks} == {e for edge in EXPECTED_EDGES for e in edge}


@pytest.mark.parametrize(("task_id", "class_name"), sorted(OPERATORS.items()))
def test_aws_operator_classes(aws_dag, task_id, class_name):
    task = aws_dag.get_task(task_id)
    name = task.operator_class.__name__ if hasattr(task, "operator_class") else type(task).__name__
    assert name == class_name


def test_aws_provider_bases(aws_dag):
    from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
    from airflow.providers.amazon.aws.operators.sagemaker import (
        SageMakerTrainingOperator,
        SageMakerTransformOperator,
    )

    assert issubclass(type(aws_dag.get_task("quality_and_prep.preprocess")), GlueJobOperator)
    assert issubclass(aws_dag.get_task("model.train").operator_class, SageMakerTrainingOperator)
    transform = aws_dag.get_task("model.batch_transform").operator_class
    assert issubclass(transform, SageMakerTransformOperator)
    scoring = aws_dag.get_task("model.score_transform").operator_class
    assert issubclass(scoring, SageMakerTransformOperator)
    spot_scoring = aws_dag.get_task("model.score_spot_inference").operator_class
    assert issubclass(spot_scoring, SageMakerTrainingOperator)


def test_aws_dag_follows_policy(aws_dag):
    from saodf.dag_policy import check_dag

    assert check_dag(aws_dag) == []


def test_aws_job_tasks_in_remote_pool(aws_dag):
    for task_id in OPERATORS:
        if not task_id.endswith("apply_batch"):
            assert aws_dag.get_task(task_id).pool == "saodf_remote", task_id


def test_aws_tasks_time_out(aws_dag):
    for task in aws_dag.tasks:
        assert task.execution_timeout <= timedelta(minutes=90), task.task_id


def test_aws_collect_runs_after_a_skipped_mode(aws_dag):
    rule = aws_dag.get_task("model.collect_forecasts").trigger_rule
    assert rule == "none_failed_min_one_success"


def test_aws_promote_runs_without_scoring(aws_dag):
    rule = aws_dag.get_task("model.promote").trigger_rule
    assert rule == "none_failed_min_one_success"


def test_aws_teardown_runs_after_failures(aws_dag):
    assert aws_dag.get_task("teardown").trigger_rule == "all_done"
