"""``dag.test()`` of the pipeline on the aws target, every AWS call going to a real moto_server.

moto stores Glue and SageMaker jobs but runs neither. So before the run, the test puts
into S3 what those jobs would write for this run: the prepared dataset, the model
artifact and the forecast lines, computed locally from the same arguments. During
the run moto records every request; the test then compares the Glue and SageMaker
requests, key by key, with the configs that ``saodf.aws_pipeline`` builds, and checks
the outputs that the run left: forecast cache, MLflow version and alias, destroyed
batch stack, done marker.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import uuid
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from saodf.config import PROJECT_ROOT, reset_settings
from tests.integration.test_dag_test import DEVICE, write_raw

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOGICAL_DATE = datetime(2020, 2, 8, 16, tzinfo=timezone.utc)
GLUE_ROLE = "arn:aws:iam::123456789012:role/saodf-glue"
SAGEMAKER_ROLE = "arn:aws:iam::123456789012:role/saodf-sagemaker"


@pytest.fixture(params=["transform", "spot_training"])
def aws_target(request, saodf_env, moto_endpoint, monkeypatch):
    """Switch the settings to the aws target with an S3 lake and state bucket on moto_server."""
    from saodf.config import Settings
    from saodf.teardown import TerraformSetup

    setup = TerraformSetup.from_env()
    if setup.binary is None or setup.plugin_dir is None:
        pytest.skip("terraform or a mirror of the hashicorp/aws provider is missing")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"saodf-aws-{uuid.uuid4().hex[:8]}"
    state_bucket = f"{bucket}-tfstate"
    for name in (bucket, state_bucket):
        s3.create_bucket(Bucket=name)
    kms_key = boto3.client("kms", endpoint_url=moto_endpoint, region_name="us-east-1").create_key(
        Description="test platform data key"
    )["KeyMetadata"]["Arn"]
    connection = {"conn_type": "aws", "extra": {"endpoint_url": moto_endpoint}}
    env = {
        "SAODF_TARGET": "aws",
        "SAODF_LAKE_URL": f"s3://{bucket}/lake",
        "SAODF_AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
        "SAODF_GLUE_ROLE_ARN": GLUE_ROLE,
        # moto_server lives for the session: a fresh job name keeps other tests' runs apart.
        "SAODF_GLUE_JOB_NAME": f"saodf-prepare-{bucket.rsplit('-', 1)[1]}",
        "SAODF_SAGEMAKER_ROLE_ARN": SAGEMAKER_ROLE,
        "SAODF_SAGEMAKER_CHECK_INTERVAL_SECONDS": "1",
        # Job names are fixed per interval and try: a fresh prefix keeps the runs apart.
        "SAODF_SAGEMAKER_NAME_PREFIX": f"t{bucket.rsplit('-', 1)[1][:6]}",
        "SAODF_SAGEMAKER_PRINT_LOG": "false",
        # Each parameter forces one inference mode; the cost model's choice is unit-tested.
        "SAODF_SAGEMAKER_BATCH_INFERENCE": request.param,
        # The platform's data key, as the workers get it from the platform stack's outputs.
        "TF_VAR_kms_key_arn": kms_key,
        "SAODF_TF_STATE_BUCKET": state_bucket,
        "SAODF_TF_DESTROY_ATTEMPTS": "2",
        "SAODF_TF_RETRY_SECONDS": "0.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    yield {
        "settings": Settings.from_env(),
        "s3": s3,
        "bucket": bucket,
        "endpoint": moto_endpoint,
        "mode": request.param,
    }
    reset_settings()


def _put(aws, url: str, payload: bytes) -> None:
    key = url.removeprefix(f"s3://{aws['bucket']}/")
    aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=payload)


def stage_job_outputs(aws, scope: dict) -> dict:
    """Write to S3 what the Glue job and try 1 of the SageMaker jobs would write."""
    from etl.glue_job import PrepareConfig, run
    from models.baselines import forecast_baseline, season_length_for
    from models.output import format_forecast_line
    from models.prepared import read_records
    from saodf import aws_pipeline

    settings = aws["settings"]
    glue = aws_pipeline.glue_kwargs(scope, settings)
    arguments = {name.removeprefix("--"): value for name, value in glue["script_args"].items()}
    run(PrepareConfig.from_args(arguments))

    configs = aws_pipeline.task_configs(scope, 1, settings)
    prepared = f"{settings.lake_url}/prepared/{scope['run_key']}"
    for group, entry in configs["groups"].items():
        model_url = (
            f"s3://{aws['bucket']}/lake/sagemaker/models/{entry['training_job_name']}"
            "/output/model.tar.gz"
        )
        _put(aws, model_url, b"model placeholder")
        spec_records = read_records(prepared, f"groups/{group}/test/data.jsonl")
        horizon = int(entry["hyperparameters"]["prediction_length"])
        season = season_length_for(
            entry["hyperparameters"]["time_freq"], len(spec_records[0]["target"])
        )
        lines = "".join(
            format_forecast_line(forecast) + "\n"
            for forecast in forecast_baseline(spec_records, horizon, season)
        ).encode()
        if entry["batch_mode"] == "transform":
            url = aws_pipeline.inference_output_url(entry, "transform", entry["transform_job_name"])
            _put(aws, url, lines)
        else:
            name = entry["spot_inference_job_name"]
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                info = tarfile.TarInfo("data.jsonl.out")
                info.size = len(lines)
                archive.addfile(info, io.BytesIO(lines))
            _put(
                aws,
                aws_pipeline.inference_output_url(entry, "spot_training", name),
                buffer.getvalue(),
            )
    return configs


def test_aws_dag_sends_exact_job_requests(
    airflow_db, aws_target, moto_recorder, redis_server, mlflow_uri
):
    from airflow.models import DagBag

    from actions.cache import ForecastCache
    from actions.redis_acl import READER
    from models.registry import client_for, current_champion
    from saodf import aws_pipeline, pipeline

    settings = aws_target["settings"]
    assert write_raw(settings) == 9405
    scope = pipeline.resolve_devices(
        pipeline.scope_from_interval(LOGICAL_DATE - timedelta(hours=1), LOGICAL_DATE)
    )
    configs = stage_job_outputs(aws_target, scope)
    glue = aws_pipeline.glue_kwargs(scope, settings)

    sys.path[:0] = [str(PROJECT_ROOT / "plugins")]
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags["telemetry_pipeline"]
    run = dag.test(logical_date=LOGICAL_DATE)
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    skipped = (
        "model.spot_inference" if aws_target["mode"] == "transform" else "model.batch_transform"
    )
    assert {state for (task, _), state in states.items() if task == skipped} == {"skipped"}

    (job,) = moto_recorder("AWSGlue.CreateJob")
    (job_run,) = moto_recorder("AWSGlue.StartJobRun")
    assert job["Command"] == glue["create_job_kwargs"]["Command"]
    assert job["DefaultArguments"] == glue["create_job_kwargs"]["DefaultArguments"]
    assert job["Role"] == GLUE_ROLE
    assert job_run["Arguments"] == glue["script_args"]

    assert len(configs[aws_target["mode"].replace("_training", "_inference")]) == 1
    trainings = moto_recorder("SageMaker.CreateTrainingJob")
    expected_training = [json.loads(json.dumps(k["config"])) for k in configs["training"]]
    expected_spot = [json.loads(json.dumps(k["config"])) for k in configs["spot_inference"]]
    assert sorted(trainings, key=lambda b: b["TrainingJobName"]) == sorted(
        expected_training + expected_spot, key=lambda b: b["TrainingJobName"]
    )
    transforms = moto_recorder("SageMaker.CreateTransformJob")
    assert transforms == [
        json.loads(json.dumps(k["config"]["Transform"])) for k in configs["transform"]
    ]

    cache = ForecastCache.from_settings(settings, role=READER)
    assert cache.pointer(DEVICE) is not None
    group = next(iter(configs["groups"]))
    client = client_for(mlflow_uri)
    champion = current_champion(client, f"{settings.registered_model_prefix}_{group}")
    assert champion.tags["model_kind"] == "deepar_sagemaker"
    assert champion.source.endswith("/output/model.tar.gz")
    metrics = client.get_run(champion.run_id).data.metrics
    assert metrics["inference_cost_per_1000_forecasts_usd"] >= 0.0
    assert "training_cost_usd" in metrics
    assert pipeline.is_done(scope, settings)
    assert not (settings.batch_dir / scope["run_key"]).exists()
