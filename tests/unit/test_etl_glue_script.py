"""The preprocessing job as an AWS Glue job script: arguments, sys.argv and operator kwargs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from etl.glue_job import PrepareConfig, glue_job_args, glue_operator_kwargs, main
from saodf.config import PROJECT_ROOT
from saodf.errors import ConfigError
from tests.unit.test_glue_job import raw_lake  # noqa: F401 (fixture)

pytest.importorskip("awsglue.utils")

# Arguments that AWS Glue and Airflow's GlueJobOperator add to every run.
GLUE_EXTRAS = [
    "--JOB_NAME",
    "saodf-prepare",
    "--JOB_ID",
    "j_0123",
    "--JOB_RUN_ID",
    "jr_0123",
    "--job-bookmark-option",
    "job-bookmark-disable",
    "--TempDir",
    "s3://aws-glue-temporary/saodf",
    "--airflow_task_uuid",
    "telemetry_pipeline:preprocess:manual__1:-1",
]


@pytest.fixture()
def quiet_logging(monkeypatch):
    """Keep main() from adding a root handler bound to pytest's captured stderr."""
    monkeypatch.setattr("saodf.log.configure_logging", lambda level=None: None)


def test_main_reads_sys_argv(raw_lake, tmp_path, monkeypatch, capsys, quiet_logging):  # noqa: F811
    argv = [
        "/tmp/glue/glue_job.py",
        *GLUE_EXTRAS,
        "--raw_url",
        raw_lake,
        "--output_url",
        str(tmp_path / "out"),
        "--freq=5min",
        "--devices",
        "sensor-a",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    summary = main()
    assert summary["groups"] == {"5min": 1}
    assert summary["devices"] == 1
    assert json.loads(capsys.readouterr().out)["run_key"] == "out"


def test_main_glue_args_round_trip(raw_lake, tmp_path, monkeypatch, quiet_logging):  # noqa: F811
    config = PrepareConfig(
        raw_url=raw_lake,
        output_url=str(tmp_path / "out"),
        devices=["sensor-b"],
        end=datetime(2025, 4, 20, 2, tzinfo=timezone.utc),
        context_length=10,
        prediction_length=5,
    )
    argv = ["glue_job.py", *GLUE_EXTRAS]
    for name, value in glue_job_args(config).items():
        argv.extend([name, value])
    monkeypatch.setattr(sys, "argv", argv)
    assert main()["groups"] == {"1min": 1}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["end"] == "2025-04-20T02:00:00+00:00"
    assert manifest["config"]["not_after"] == "2025-04-20T02:00:00+00:00"


def test_main_missing_output_raises(raw_lake, monkeypatch, quiet_logging):  # noqa: F811
    monkeypatch.setattr(sys, "argv", ["glue_job.py", *GLUE_EXTRAS, "--raw_url", raw_lake])
    with pytest.raises(ConfigError, match=r"required: --output_url\); give at least --raw_url"):
        main()


def test_script_runs_as_file(raw_lake, tmp_path):  # noqa: F811
    # Glue runs the script file itself with the packages on the path (--extra-py-files).
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    completed = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "etl" / "glue_job.py"),
            *GLUE_EXTRAS,
            "--raw_url",
            raw_lake,
            "--output_url",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=environment,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["groups"] == {"1min": 1, "5min": 1}


def _operator_kwargs(engine: str) -> dict:
    config = PrepareConfig(
        raw_url="s3://lake", output_url="s3://lake/prepared/run-1", engine=engine, freq="5min"
    )
    return glue_operator_kwargs(
        config,
        script_location="s3://artifacts/etl/glue_job.py",
        iam_role_arn="arn:aws:iam::123456789012:role/saodf-glue",
        extra_py_files=["s3://artifacts/saodf_etl.zip"],
    )


def test_operator_kwargs_accepted():
    from airflow.providers.amazon.aws.operators.glue import GlueJobOperator

    operator = GlueJobOperator(task_id="preprocess", **_operator_kwargs("pandas"))
    assert operator.script_args["--raw_url"] == "s3://lake"
    assert operator.script_args["--freq"] == "5min"
    assert operator.create_job_kwargs["Command"]["Name"] == "glueetl"


def test_operator_args_read_back():
    script_args = _operator_kwargs("pandas")["script_args"]
    config = PrepareConfig.from_args(script_args)
    assert config.output_url == "s3://lake/prepared/run-1"
    assert config.spark_master == "local[2]"


def test_operator_spark_uses_cluster():
    kwargs = _operator_kwargs("spark")
    assert kwargs["script_args"]["--spark_master"] == "none"
    assert PrepareConfig.from_args(kwargs["script_args"]).spark_master is None


def test_operator_default_arguments():
    arguments = _operator_kwargs("pandas")["create_job_kwargs"]["DefaultArguments"]
    assert arguments == {
        "--job-language": "python",
        "--extra-py-files": "s3://artifacts/saodf_etl.zip",
        "--additional-python-modules": "orjson",
    }


def test_operator_one_worker_rejected():
    config = PrepareConfig(raw_url="s3://lake", output_url="s3://lake/out")
    with pytest.raises(ConfigError, match="number_of_workers 1 is invalid"):
        glue_operator_kwargs(
            config, script_location="s3://a/b.py", iam_role_arn="arn:r", number_of_workers=1
        )
