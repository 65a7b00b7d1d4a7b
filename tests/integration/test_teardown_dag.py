"""``dag.test()`` of small DAGs that apply and destroy the batch stack against moto_server.

The DAGs have the telemetry pipeline's shape: work tasks, a ``teardown`` task with
``TriggerRule.ALL_DONE``, and a final report task with the default rule, so a failed task
anywhere fails the run. One DAG fails a work task and checks that teardown still
destroys the stack; the other makes the destroy fail and checks that the run fails and
the surviving resources are named.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from saodf import teardown
from saodf.config import reset_settings
from saodf.stack.process import free_port
from saodf.teardown import TerraformSetup

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def tf_env(saodf_env, moto_endpoint, monkeypatch):
    setup = TerraformSetup.from_env()
    if setup.binary is None or setup.plugin_dir is None:
        pytest.skip("terraform or a mirror of the hashicorp/aws provider is missing")
    monkeypatch.setenv("SAODF_TF_DESTROY_ATTEMPTS", "2")
    monkeypatch.setenv("SAODF_TF_RETRY_SECONDS", "0.5")
    return saodf_env


DAG_TEMPLATE = """
from datetime import datetime, timezone

from airflow.sdk import DAG, TriggerRule, task

from saodf_airflow.terraform import TerraformBatchOperator

with DAG(
    dag_id={dag_id!r},
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={{"retries": 0}},
) as dag:

    @task
    def resolve_scope() -> dict:
        return {{"run_key": {run_key!r}}}

    @task
    def work() -> dict:
        if {fail_work!r}:
            raise RuntimeError("training failed on purpose")
        return {{"seconds": 0.0}}

    destroy = TerraformBatchOperator(
        task_id="teardown", action="destroy", trigger_rule=TriggerRule.ALL_DONE
    )

    @task
    def report() -> str:
        return "reported"

    scope = resolve_scope()
    worked = work()
    if {apply!r}:
        applied = TerraformBatchOperator(
            task_id="apply_batch", action="apply", variables={{"kms_key_arn": {kms_key!r}}}
        )
        scope >> applied >> worked
    else:
        scope >> worked
    worked >> destroy
    [worked, destroy] >> report()
"""


def make_dag(folder, monkeypatch, dag_id: str, run_key: str, fail_work: bool, kms_key: str, apply):
    """Write scope -> [apply] -> work -> teardown (ALL_DONE) -> report into its own bundle.

    ``dag.test()`` runs only DAGs that a DAG bundle contains, so each test DAG is a file
    in a temporary folder that is configured as the only bundle.
    """
    from airflow.dag_processing.dagbag import DagBag

    folder.mkdir(exist_ok=True)
    source = DAG_TEMPLATE.format(
        dag_id=dag_id, run_key=run_key, fail_work=fail_work, kms_key=kms_key, apply=apply
    )
    (folder / f"{dag_id}.py").write_text(source, encoding="utf-8")
    bundle = {
        "name": "saodf-teardown-tests",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(folder), "refresh_interval": 0},
    }
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def states_of(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def bucket_exists(s3, name: str) -> bool:
    try:
        s3.head_bucket(Bucket=name)
    except ClientError:
        return False
    return True


def test_teardown_runs_after_failure(airflow_db, tf_env, moto_endpoint, tmp_path, monkeypatch):
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=tf_env.aws_region)
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name=tf_env.aws_region)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    run_key = "window-dagfailed"
    dag = make_dag(
        tmp_path / "dags", monkeypatch, "saodf_teardown_after_failure", run_key, True, key, True
    )

    run = dag.test()

    states = states_of(run)
    assert states["apply_batch"] == "success"
    assert states["work"] == "failed"
    assert states["teardown"] == "success"
    assert states["report"] == "upstream_failed"
    assert run.state == "failed"
    assert not bucket_exists(s3, f"saodf-batch-{teardown.run_slug(run_key)}")
    assert not (tf_env.batch_dir / run_key).exists()


def test_failed_destroy_fails_run(airflow_db, tf_env, moto_endpoint, monkeypatch, tmp_path):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=tf_env.aws_region)
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name=tf_env.aws_region)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    run_key = "window-dagsurvivors"
    applied = teardown.apply_batch(tf_env, run_key, variables={"kms_key_arn": key})
    bucket = applied["outputs"]["scratch_bucket"]
    # The AWS API becomes unreachable before the teardown task runs.
    monkeypatch.setenv("SAODF_AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    reset_settings()
    dag = make_dag(
        tmp_path / "dags", monkeypatch, "saodf_failed_destroy", run_key, False, key, False
    )

    run = dag.test()

    states = states_of(run)
    assert states["work"] == "success"
    assert states["teardown"] == "failed"
    assert run.state == "failed"
    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, dag_ids=run.dag_id, task_ids="teardown", key="surviving_resources"
        )
        survivors = session.scalars(query).first()
        assert survivors is not None
        listed = XComModel.deserialize_value(survivors)
    assert "aws_s3_bucket.scratch" in listed
    assert "aws_iam_role.job" in listed
    assert bucket_exists(s3, bucket)

    # Clean up: with the endpoint back, the teardown destroys the survivors.
    monkeypatch.setenv("SAODF_AWS_ENDPOINT_URL", moto_endpoint)
    reset_settings()
    result = teardown.teardown_batch(tf_env.with_overrides(aws_endpoint_url=moto_endpoint), run_key)
    assert set(listed) <= set(result["destroyed"])
    assert not bucket_exists(s3, bucket)
