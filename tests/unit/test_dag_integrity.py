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


def test_pipeline_expected_graph(pipeline_dag):
    from saodf.dag_policy import check_task_graph

    assert check_task_graph(pipeline_dag, EXPECTED_EDGES) == []


def test_graph_check_catches_extra_edge(pipeline_dag):
    from saodf.dag_policy import check_task_graph

    # Without this edge nothing in the expected graph orders teardown before report_cost.
    expected = EXPECTED_EDGES - {("teardown", "report_cost")}
    assert check_task_graph(pipeline_dag, expected) == [
        "telemetry_pipeline: unexpected edge teardown >> report_cost"
    ]


def test_graph_check_catches_missing_edge(pipeline_dag):
    from saodf.dag_policy import check_task_graph

    expected = EXPECTED_EDGES | {("resolve_scope", "teardown")}
    assert check_task_graph(pipeline_dag, expected) == [
        "telemetry_pipeline: missing edge resolve_scope >> teardown"
    ]


def test_pipeline_task_ids(pipeline_dag):
    assert {t.task_id for t in pipeline_dag.tasks} == {e for edge in EXPECTED_EDGES for e in edge}


def test_pipeline_has_owner_tags_docs(pipeline_dag):
    assert pipeline_dag.owner == "saodf"
    assert "saodf" in pipeline_dag.tags
    assert pipeline_dag.doc_md


def test_every_pipeline_task_has_doc(pipeline_dag):
    for task in pipeline_dag.tasks:
        assert task.doc_md, f"{task.task_id} has no doc_md"


@pytest.mark.parametrize(
    ("group_id", "task_ids"),
    [
        (
            "quality_and_prep",
            {
                "quality_and_prep.validate_raw",
                "quality_and_prep.preprocess",
                "quality_and_prep.validate_prepared",
            },
        ),
        ("model", {"model.train", "model.batch_transform"}),
    ],
)
def test_pipeline_stage_task_groups(pipeline_dag, group_id, task_ids):
    group = pipeline_dag.task_group_dict[group_id]
    assert group.tooltip
    assert {task.task_id for task in group} == task_ids


def test_populate_cache_emits_forecast_cache(pipeline_dag):
    from airflow.sdk import Asset

    outlets = pipeline_dag.get_task("populate_cache").outlets
    assert outlets == [Asset(name="forecast_cache")]


def test_only_populate_cache_has_outlets(pipeline_dag):
    with_outlets = {task.task_id for task in pipeline_dag.tasks if task.outlets}
    assert with_outlets == {"populate_cache"}


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


@pytest.mark.parametrize("name", sorted(p.name for p in (PROJECT_ROOT / "dags").glob("*.py")))
def test_dag_file_imports_only_light_modules(name):
    from saodf.dag_policy import disallowed_imports, module_level_imports

    imported = module_level_imports(PROJECT_ROOT / "dags" / name, PLUGIN_PATHS)
    assert disallowed_imports(imported) == []


def test_aws_pipeline_imports_only_light_modules():
    from saodf.dag_policy import (
        AWS_TARGET_MODULES,
        LIGHT_MODULES,
        disallowed_imports,
        module_level_imports,
    )

    path = PROJECT_ROOT / "dags" / "telemetry_pipeline.py"
    imported = module_level_imports(path, PLUGIN_PATHS, env={"SAODF_TARGET": "aws"})
    assert "boto3" in imported
    assert disallowed_imports(imported, LIGHT_MODULES | AWS_TARGET_MODULES) == []


def test_configured_pools_fit_two_cores():
    from saodf.config import Settings
    from saodf.dag_policy import check_pools
    from saodf.stack.manager import airflow_pools

    assert check_pools(airflow_pools(Settings.from_env())) == []


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
    from saodf.config import Settings
    from saodf.stack.manager import airflow_pools

    heavy_pools = [pool.name for pool in airflow_pools(Settings.from_env()) if pool.cpu_heavy]
    assert heavy_pools == ["saodf_heavy"]
    for task_id in ("quality_and_prep.preprocess", "model.train", "model.batch_transform"):
        assert pipeline_dag.get_task(task_id).pool == "saodf_heavy"


def test_ruff_airflow3_rules_clean():
    from saodf.dag_policy import ruff_airflow3_findings

    assert ruff_airflow3_findings(["dags", "plugins"], PROJECT_ROOT) == []


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
        ("broken_no_task_doc", "no task doc"),
    ],
)
def test_broken_policy_caught(broken_dagbag, dag_id, fragment):
    from saodf.dag_policy import check_dag

    problems = check_dag(broken_dagbag.dags[dag_id])
    assert len(problems) == 1, problems
    assert fragment in problems[0]


def test_broken_heavy_import_caught():
    from saodf.dag_policy import disallowed_imports, module_level_imports

    assert "pandas" in disallowed_imports(module_level_imports(BROKEN / "heavy_import.py"))


def test_broken_pool_size_caught(monkeypatch):
    from saodf.config import Settings
    from saodf.dag_policy import check_pools
    from saodf.stack.manager import airflow_pools

    monkeypatch.setenv("SAODF_HEAVY_POOL_SLOTS", "4")
    monkeypatch.setenv("SAODF_REMOTE_POOL_SLOTS", "8")
    problems = check_pools(airflow_pools(Settings.from_env()))
    assert len(problems) == 1, problems
    assert problems[0].startswith("pool saodf_heavy: 4 slots")


# The fixture expects extract >> transform >> load; wrong_graph.py swaps the last two.
FIXTURE_EDGES = {("extract", "transform"), ("transform", "load")}


def test_broken_task_graph_caught(broken_dagbag):
    from saodf.dag_policy import check_dag, check_task_graph

    dag = broken_dagbag.dags["broken_wrong_graph"]
    assert check_dag(dag) == []
    assert check_task_graph(dag, FIXTURE_EDGES) == [
        "broken_wrong_graph: unexpected task notify",
        "broken_wrong_graph: missing edge extract >> transform",
        "broken_wrong_graph: missing edge transform >> load",
        "broken_wrong_graph: unexpected edge load >> transform",
    ]


def test_broken_airflow2_context_key_caught(broken_dagbag):
    from saodf.dag_policy import check_dag, ruff_airflow3_findings

    assert check_dag(broken_dagbag.dags["broken_airflow2_context_key"]) == []
    findings = ruff_airflow3_findings([BROKEN / "airflow2_context_key.py"], PROJECT_ROOT)
    assert len(findings) == 1, findings
    assert "AIR301 `execution_date` is removed in Airflow 3.0" in findings[0]


def test_ruff_directory_walk_skips_fixtures():
    from saodf.dag_policy import ruff_airflow3_findings

    assert ruff_airflow3_findings(["tests"], PROJECT_ROOT) == []
