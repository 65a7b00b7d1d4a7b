"""The "MLflow run" extra link, read as the API server reads it: from the metadata DB.

A tiny DAG runs with ``dag.test()`` against the session's migrated SQLite DB, its tasks
push the XCom, and ``get_link`` is then called in this process, outside any task.
"""

from __future__ import annotations

import sys
import uuid
from datetime import datetime, timezone

import pytest

from saodf.config import PROJECT_ROOT

pytestmark = pytest.mark.integration

URL = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"


@pytest.fixture(scope="module")
def links(airflow_db):
    sys.path[:0] = [str(PROJECT_ROOT / "plugins")]
    from saodf_airflow import links

    yield links
    sys.path.remove(str(PROJECT_ROOT / "plugins"))


DAG_FILE = """
from datetime import datetime, timezone

from airflow.sdk import DAG, task
from saodf_airflow.links import MLFLOW_URL_XCOM_KEY

with DAG("{dag_id}", schedule=None, start_date=datetime(2020, 1, 1, tzinfo=timezone.utc)):

    @task
    def with_url(ti=None):
        ti.xcom_push(key=MLFLOW_URL_XCOM_KEY, value="{url}")

    @task
    def with_script(ti=None):
        ti.xcom_push(key=MLFLOW_URL_XCOM_KEY, value="javascript:alert(1)")

    @task
    def without_url():
        return None

    with_url()
    with_script()
    without_url()
"""


@pytest.fixture(scope="module")
def finished_run(links, tmp_path_factory):
    """Run a three-task DAG from a DAG folder of its own and return its dag and run id."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models import DagBag

    dag_id = f"links_{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("link-dags")
    (folder / f"{dag_id}.py").write_text(DAG_FILE.format(dag_id=dag_id, url=URL))
    bag = DagBag(dag_folder=str(folder))
    # dag.test() runs only DAGs serialized in the metadata DB; this one is outside every bundle.
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    run = bag.dags[dag_id].test(logical_date=datetime(2020, 1, 2, tzinfo=timezone.utc))
    return dag_id, run.run_id


def _key(dag_id: str, run_id: str, task_id: str):
    from airflow.models.taskinstancekey import TaskInstanceKey

    return TaskInstanceKey(dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=1)


def test_link_returns_pushed_url(links, finished_run):
    assert links.MlflowRunLink().get_link(None, ti_key=_key(*finished_run, "with_url")) == URL


def test_link_empty_without_xcom(links, finished_run):
    assert links.MlflowRunLink().get_link(None, ti_key=_key(*finished_run, "without_url")) == ""


def test_link_rejects_non_http(links, finished_run):
    assert links.MlflowRunLink().get_link(None, ti_key=_key(*finished_run, "with_script")) == ""


def test_link_unknown_run_empty(links, finished_run):
    assert (
        links.MlflowRunLink().get_link(None, ti_key=_key(finished_run[0], "nosuch", "with_url"))
        == ""
    )
