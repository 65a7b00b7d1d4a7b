"""DAG integrity: the DAG folder imports cleanly and has the expected shape and policies."""

from datetime import timedelta
from pathlib import Path

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


BROKEN = PROJECT_ROOT / "tests" / "fixtures" / "broken_dags"
PLUGIN_PATHS = [str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")]


@pytest.fixture(scope="module")
def broken_dagbag():
    from airflow.models import DagBag

    return DagBag(dag_folder=str(BROKEN))


def test_every_dag_follows_policy(dagbag):
    from saodf.dag_policy import check_dag

    assert dagbag.dags
    for dag in dagbag.dags.values():
        assert check_dag(dag) == [], dag.dag_id


def test_dag_files_have_no_heavy_imports():
    from saodf.dag_policy import module_level_heavy_imports

    for path in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        assert module_level_heavy_imports(path, PLUGIN_PATHS) == [], path.name


def test_drift_monitor_present(dagbag):
    dag = dagbag.dags.get("drift_monitor")
    assert dag is not None
    assert {t.task_id for t in dag.tasks} == {"check_drift", "request_retraining"}


def test_pipeline_listens_to_retrain_requests(pipeline_dag):
    names = _asset_names(pipeline_dag.timetable.asset_condition)
    assert {"telemetry_windows", "retrain_request"} <= names


def _asset_names(condition) -> set[str]:
    names = set()
    for item in getattr(condition, "objects", []):
        if hasattr(item, "objects"):
            names |= _asset_names(item)
        else:
            names.add(item.name)
    return names


def test_heavy_tasks_in_pool(pipeline_dag):
    for task_id in ("quality_and_prep.preprocess", "model.train", "model.batch_transform"):
        assert pipeline_dag.get_task(task_id).pool == "saodf_heavy"


def test_ruff_airflow3_rules_clean():
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--select",
            "AIR3",
            "--no-cache",
            "dags",
            "plugins",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


# Each broken fixture breaks exactly one rule; the suite must catch it.


def test_broken_import_error_reported(broken_dagbag):
    errors = {Path(path).name: text for path, text in broken_dagbag.import_errors.items()}
    assert "import_error.py" in errors
    assert "module_that_does_not_exist" in errors["import_error.py"]


def test_broken_cycle_reported(broken_dagbag):
    errors = {Path(path).name: text for path, text in broken_dagbag.import_errors.items()}
    assert "cycle.py" in errors
    assert "cycle" in errors["cycle.py"].lower()


@pytest.mark.parametrize(
    ("dag_id", "fragment"),
    [
        ("broken_no_owner", "owner other than the default"),
        ("broken_no_tags", "no tags"),
        ("broken_no_doc", "no doc_md"),
        ("broken_no_retries", "retries must be at least 1"),
        ("broken_no_backoff", "retry_exponential_backoff is off"),
        ("broken_no_timeout", "no execution_timeout"),
        ("broken_heavy_task_default_pool", "sized pool"),
    ],
)
def test_broken_policy_caught(broken_dagbag, dag_id, fragment):
    from saodf.dag_policy import check_dag

    problems = check_dag(broken_dagbag.dags[dag_id])
    assert len(problems) == 1, problems
    assert fragment in problems[0]


def test_broken_heavy_import_caught():
    from saodf.dag_policy import module_level_heavy_imports

    assert module_level_heavy_imports(BROKEN / "heavy_import.py") == ["pandas"]
