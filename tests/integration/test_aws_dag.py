"""``dag.test()`` of the pipeline on the aws target, every AWS call going to a real moto_server.

moto stores Glue and SageMaker jobs but runs neither. So before the run, the test puts
into S3 what those jobs would write for this run: the prepared dataset, the model
artifact, the forecast lines and the scoring jobs' forecasts of the held-out windows,
computed locally from the same arguments. It also registers a champion trained on
other data, so the run scores both models on the same windows. During the run moto
records every request. The test then compares the Glue and SageMaker requests, key by
key, with the configs that ``saodf.aws_pipeline`` and ``models.aws_tasks`` build. It
also checks the outputs that the run left: forecast cache, MLflow versions, alias and
scores, destroyed batch stack, done marker.
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
# Each inference mode runs once, so each mode also covers one outcome of the comparison.
WINNER = {"transform": "candidate", "spot_training": "champion"}
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


def register_old_champion(aws, client, group: str, entry: dict) -> dict:
    """Register a SageMaker version trained on other data and point ``champion`` at it."""
    import mlflow

    from models.registry import ensure_experiment, move_champion

    settings = aws["settings"]
    name = f"{settings.registered_model_prefix}_{group}"
    job_name = f"old-{aws['bucket']}"
    model_url = f"s3://{aws['bucket']}/lake/sagemaker/models/{job_name}/output/model.tar.gz"
    _put(aws, model_url, b"old model placeholder")
    experiment_id = ensure_experiment(client, settings.mlflow_experiment)
    run = client.create_run(experiment_id, tags={"model_kind": "deepar_sagemaker"})
    for key in ("prediction_length", "time_freq"):
        client.log_param(run.info.run_id, key, entry["hyperparameters"][key])
    client.set_terminated(run.info.run_id, "FINISHED")
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass  # registered by an earlier test of this session
    tags = {
        "model_kind": "deepar_sagemaker",
        "training_job_name": job_name,
        "data_hash": "other-data",
        "run_key": "interval-older",
    }
    version = client.create_model_version(name, model_url, run_id=run.info.run_id, tags=tags)
    move_champion(client, name, str(version.version))
    return {
        "name": name,
        "version": str(version.version),
        "training_job_name": job_name,
        "model_url": model_url,
    }


def stage_scoring_outputs(aws, scope: dict, configs: dict, champions: dict) -> list[dict]:
    """Write the scoring jobs' forecasts of try 1 and return the scoring requests.

    The winner of :data:`WINNER` forecasts the held-out points exactly and the other
    model forecasts 0, so the run must promote exactly when the candidate wins.
    """
    import numpy as np

    from models.aws_tasks import scoring_job_kwargs
    from models.output import format_forecast_line
    from models.prepared import read_records
    from models.sagemaker import AwsJobSettings, model_artifact_url
    from saodf import aws_pipeline

    settings = aws["settings"]
    job = AwsJobSettings.from_settings(settings)
    prepared = f"{settings.lake_url}/prepared/{scope['run_key']}"
    requests = []
    for group, entry in configs["groups"].items():
        folder = f"{job.artifacts_url}/scoring/{scope['run_key']}/{group}"
        horizon = int(entry["hyperparameters"]["prediction_length"])
        records = read_records(prepared, f"groups/{group}/test/data.jsonl")
        tails = [np.nan_to_num(record["target"][-horizon:], nan=1.0) for record in records]
        models = {
            "candidate": (
                entry["training_job_name"],
                model_artifact_url(job, entry["training_job_name"]),
            ),
            "champion": (champions[group]["training_job_name"], champions[group]["model_url"]),
        }
        for role, (training_job_name, model_url) in models.items():
            request = {
                "group": group,
                "role": role,
                "mode": entry["batch_mode"],
                "training_job_name": training_job_name,
                "model_data_url": model_url,
                "input_url": f"{folder}/input/",
                "output_url": f"{folder}/{role}/",
            }
            built = scoring_job_kwargs(request, scope["run_key"], 1, job)
            forecasts = [
                tail.tolist() if role == WINNER[aws["mode"]] else [0.0] * horizon for tail in tails
            ]
            lines = "".join(
                format_forecast_line(
                    {"mean": values, "quantiles": {q: values for q in ("0.1", "0.5", "0.9")}}
                )
                + "\n"
                for values in forecasts
            ).encode()
            url = aws_pipeline.inference_output_url(request, built["mode"], built["job_name"])
            _put(aws, url, lines if built["mode"] == "transform" else _tar(lines))
            requests.append(built)
    return requests


def _tar(lines: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("data.jsonl.out")
        info.size = len(lines)
        archive.addfile(info, io.BytesIO(lines))
    return buffer.getvalue()


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
    client = client_for(mlflow_uri)
    champions = {
        group: register_old_champion(aws_target, client, group, entry)
        for group, entry in configs["groups"].items()
    }
    scoring = stage_scoring_outputs(aws_target, scope, configs, champions)

    sys.path[:0] = [str(PROJECT_ROOT / "plugins")]
    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags["telemetry_pipeline"]
    run = dag.test(logical_date=LOGICAL_DATE)
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    skipped = (
        "model.spot_inference" if aws_target["mode"] == "transform" else "model.batch_transform"
    )
    skipped_scoring = (
        "model.score_spot_inference"
        if aws_target["mode"] == "transform"
        else "model.score_transform"
    )
    assert {state for (task, _), state in states.items() if task == skipped} == {"skipped"}
    assert {state for (task, _), state in states.items() if task == skipped_scoring} == {"skipped"}

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
    spot_scoring = [b["kwargs"] for b in scoring if b["mode"] == "spot_training"]
    transform_scoring = [b["kwargs"] for b in scoring if b["mode"] == "transform"]
    expected_spot += [json.loads(json.dumps(k["config"])) for k in spot_scoring]
    assert len(scoring) == 2 * len(configs["groups"])
    assert sorted(trainings, key=lambda b: b["TrainingJobName"]) == sorted(
        expected_training + expected_spot, key=lambda b: b["TrainingJobName"]
    )
    transforms = moto_recorder("SageMaker.CreateTransformJob")
    expected_transforms = [
        json.loads(json.dumps(k["config"]["Transform"]))
        for k in configs["transform"] + transform_scoring
    ]
    assert sorted(transforms, key=lambda b: b["TransformJobName"]) == sorted(
        expected_transforms, key=lambda b: b["TransformJobName"]
    )
    models = moto_recorder("SageMaker.CreateModel")
    expected_models = [
        json.loads(json.dumps(k["config"]["Model"]))
        for k in configs["transform"] + transform_scoring
    ]
    assert sorted(models, key=lambda b: b["ModelName"]) == sorted(
        expected_models, key=lambda b: b["ModelName"]
    )

    cache = ForecastCache.from_settings(settings, role=READER)
    assert cache.pointer(DEVICE) is not None
    group = next(iter(configs["groups"]))
    old = champions[group]
    champion = current_champion(client, old["name"])
    assert champion.tags["model_kind"] == "deepar_sagemaker"
    assert champion.source.endswith("/output/model.tar.gz")
    (candidate_run,) = client.search_runs(
        [client.get_experiment_by_name(settings.mlflow_experiment).experiment_id],
        filter_string=(
            f"tags.run_key = '{scope['run_key']}' and tags.group = '{group}' "
            "and tags.model_kind = 'deepar_sagemaker'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    metrics = candidate_run.data.metrics
    tags = candidate_run.data.tags
    assert metrics["inference_cost_per_1000_forecasts_usd"] >= 0.0
    assert "training_cost_usd" in metrics
    assert metrics["scoring_cost_usd"] >= 0.0
    assert tags["compared_champion_version"] == old["version"]
    if WINNER[aws_target["mode"]] == "candidate":
        assert champion.version != old["version"]
        assert champion.tags["run_key"] == scope["run_key"]
        assert metrics["mean_wql"] < metrics["champion_mean_wql"]
        assert tags["promoted"] == "true"
    else:
        assert champion.version == old["version"]
        assert metrics["mean_wql"] > metrics["champion_mean_wql"]
        assert tags["promoted"] == "false"
    assert "candidate mean_wql" in tags["promotion_reason"]
    assert pipeline.is_done(scope, settings)
    assert not (settings.batch_dir / scope["run_key"]).exists()
