"""DAG integrity: the DAG folder imports cleanly and has the expected shape and policies."""

from datetime import timedelta

import pytest

from saodf.config import PROJECT_ROOT

EXPECTED_EDGES = {
    ("resolve_scope", "quality_and_prep.validate_raw"),
    ("quality_and_prep.validate_raw", "quality_and_prep.preprocess"),
    ("quality_and_prep.preprocess", "quality_and_prep.validate_prepared"),
    ("quality_and_prep.validate_prepared", "model.train"),
    ("model.train", "model.batch_transform"),
    ("model.batch_transform", "populate_cache"),
    ("populate_cache", "teardown"),
    ("teardown", "report_cost"),
    ("populate_cache", "report_cost"),
}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models import DagBag

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


@pytest.fixture(scope="module")
def pipeline_dag(dagbag):
    return dagbag.dags.get("telemetry_pipeline")


def test_dagbag_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_pipeline_dag_present(pipeline_dag):
    assert pipeline_dag is not None


def test_pipeline_expected_edges(pipeline_dag):
    edges = {(t.task_id, d) for t in pipeline_dag.tasks for d in t.downstream_task_ids}
    missing = EXPECTED_EDGES - edges
    assert missing == set()


def test_pipeline_task_ids(pipeline_dag):
    assert {t.task_id for t in pipeline_dag.tasks} == {e for edge in EXPECTED_EDGES for e in edge}


def test_pipeline_has_owner_tags_docs(pipeline_dag):
    assert pipeline_dag.owner == "saodf"
    assert "saodf" in pipeline_dag.tags
    assert pipeline_dag.doc_md


@pytest.mark.parametrize("field", ["retries", "execution_timeout"])
def test_every_task_has_policy(pipeline_dag, field):
    for task in pipeline_dag.tasks:
        assert getattr(task, field), f"{task.task_id} has no {field}"


def test_every_task_times_out_within_an_hour(pipeline_dag):
    for task in pipeline_dag.tasks:
        assert task.execution_timeout <= timedelta(hours=1), task.task_id


def test_teardown_runs_after_failures(pipeline_dag):
    assert pipeline_dag.get_task("teardown").trigger_rule == "all_done"


def test_schedule_is_asset_or_time(pipeline_dag):
    from airflow.sdk import AssetOrTimeSchedule

    assert isinstance(pipeline_dag.timetable, AssetOrTimeSchedule)


def test_window_watcher_uses_shared_stream_trigger(pipeline_dag):
    from saodf_airflow.triggers import WindowEventTrigger

    assets = pipeline_dag.timetable.asset_condition.objects
    watchers = [w for asset in assets for w in asset.watchers]
    assert len(watchers) == 1
    assert isinstance(watchers[0].trigger, WindowEventTrigger)
    assert watchers[0].trigger.serialize()[0] == "saodf_airflow.triggers.WindowEventTrigger"
