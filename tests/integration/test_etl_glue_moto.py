"""The preprocessing job through Airflow's Glue hook against a real moto_server.

moto stores the Glue job and its run but never runs the script, so the test reads the
run's arguments back from the Glue API and runs the script with them as AWS Glue would.
"""

from __future__ import annotations

import json
import os
import sys

import boto3
import pytest

from etl.glue_job import PrepareConfig, glue_operator_kwargs, main
from tests.unit.test_glue_job import raw_lake  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture()
def aws_connection(moto_endpoint, monkeypatch) -> str:
    """Point Airflow's ``aws_default`` connection at moto and return the connection id."""
    extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}),
    )
    return "aws_default"


def test_glue_run_arguments_prepare(raw_lake, tmp_path, moto_endpoint, aws_connection, monkeypatch):  # noqa: F811
    from airflow.providers.amazon.aws.hooks.glue import GlueJobHook

    monkeypatch.setattr("saodf.log.configure_logging", lambda level=None: None)
    config = PrepareConfig(raw_url=raw_lake, output_url=str(tmp_path / "out"), freq="5min")
    kwargs = glue_operator_kwargs(
        config,
        script_location="s3://saodf-artifacts/etl/glue_job.py",
        iam_role_arn="arn:aws:iam::123456789012:role/saodf-glue",
        extra_py_files=["s3://saodf-artifacts/saodf_etl.zip"],
        job_name=f"saodf-prepare-{os.getpid()}",
    )
    hook = GlueJobHook(
        aws_conn_id=aws_connection,
        job_name=kwargs["job_name"],
        desc=kwargs["job_desc"],
        script_location=kwargs["script_location"],
        iam_role_arn=kwargs["iam_role_arn"],
        create_job_kwargs=dict(kwargs["create_job_kwargs"]),
    )
    run_id = hook.initialize_job(kwargs["script_args"])["JobRunId"]

    glue = boto3.client("glue", endpoint_url=moto_endpoint, region_name="us-east-1")
    job = glue.get_job(JobName=kwargs["job_name"])["Job"]
    assert job["Command"]["ScriptLocation"] == "s3://saodf-artifacts/etl/glue_job.py"
    assert job["DefaultArguments"]["--extra-py-files"] == "s3://saodf-artifacts/saodf_etl.zip"
    arguments = glue.get_job_run(JobName=kwargs["job_name"], RunId=run_id)["JobRun"]["Arguments"]
    # The run's arguments are the job's DefaultArguments merged with the script arguments.
    assert {name: arguments[name] for name in kwargs["script_args"]} == kwargs["script_args"]
    assert arguments["--extra-py-files"] == "s3://saodf-artifacts/saodf_etl.zip"

    argv = ["glue_job.py", "--JOB_NAME", kwargs["job_name"], "--JOB_RUN_ID", run_id]
    for name, value in arguments.items():
        argv.extend([name, value])
    monkeypatch.setattr(sys, "argv", argv)
    summary = main()
    assert summary["groups"] == {"5min": 1}
    assert (tmp_path / "out" / "groups" / "5min" / "train" / "data.jsonl").is_file()
