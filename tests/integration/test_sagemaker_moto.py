"""The aws target's SageMaker jobs run through the Airflow operators against a real moto_server.

moto accepts almost any request, so the tests read back what the server received
through moto's request recorder and compare it with the configs, key by key.
"""

import json
import uuid
from pathlib import Path

import pytest

from models.aws_tasks import aws_task_configs, describe_training_costs
from models.sagemaker import AwsJobSettings, stage_spot_inference_code
from models.synthetic import write_synthetic_prepared

pytestmark = pytest.mark.integration

ROLE = "arn:aws:iam::123456789012:role/saodf-sagemaker"
CONN_ID = "saodf_aws_moto"


class _TaskInstance:
    def __init__(self):
        self.xcom = {}

    def xcom_push(self, key, value, **kwargs):
        self.xcom[key] = value


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """Point boto3, s3fs and an Airflow AWS connection at the session's moto_server."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    bucket = f"saodf-sm-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    return {
        "endpoint": moto_endpoint,
        "bucket": bucket,
        "s3": s3,
        "sagemaker": boto3.client("sagemaker", endpoint_url=moto_endpoint, region_name="us-east-1"),
    }


@pytest.fixture
def prepared(aws, tmp_path):
    local = Path(
        write_synthetic_prepared(tmp_path / "prepared", groups={"5min": "5min"}).removeprefix(
            "file://"
        )
    )
    prefix = "lake/prepared/interval-20240101T0000-20240101T0100"
    for path in local.rglob("*"):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(local).as_posix()}"
            aws["s3"].put_object(Bucket=aws["bucket"], Key=key, Body=path.read_bytes())
    return f"s3://{aws['bucket']}/{prefix}"


def _job(aws, **changes):
    return AwsJobSettings(
        role_arn=ROLE,
        artifacts_url=f"s3://{aws['bucket']}/sagemaker",
        aws_conn_id=CONN_ID,
        check_interval_seconds=1,
        **changes,
    )


def _run(operator_class, kwargs, task_id):
    operator = (
        operator_class(task_id=task_id, print_log=False, **kwargs)
        if (operator_class.__name__ == "SageMakerTrainingOperator")
        else operator_class(task_id=task_id, **kwargs)
    )
    return operator.execute({"ti": _TaskInstance()})


def _settings():
    from saodf.config import Settings

    return Settings.from_env()


def test_training_request_exact(aws, prepared, moto_recorder):
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator

    run_key = f"interval-{uuid.uuid4().hex[:8]}"
    configs = aws_task_configs(prepared, run_key, 1, _settings(), job=_job(aws))
    kwargs = configs["training"][0]
    expected = json.loads(json.dumps(kwargs["config"]))
    _run(SageMakerTrainingOperator, kwargs, "train")

    (sent,) = moto_recorder("SageMaker.CreateTrainingJob")
    described = aws["sagemaker"].describe_training_job(TrainingJobName=expected["TrainingJobName"])
    assert sent == expected
    assert sent["EnableManagedSpotTraining"] is True
    assert sent["StoppingCondition"] == {"MaxRuntimeInSeconds": 3000, "MaxWaitTimeInSeconds": 3600}
    assert sent["AlgorithmSpecification"]["TrainingImage"].endswith("/forecasting-deepar:1")
    assert described["TrainingJobStatus"] == "Completed"
    assert described["HyperParameters"] == expected["HyperParameters"]


def test_training_retry_uses_new_name(aws, prepared, moto_recorder):
    from airflow.exceptions import AirflowException
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator

    run_key = f"interval-{uuid.uuid4().hex[:8]}"
    first = aws_task_configs(prepared, run_key, 1, _settings(), job=_job(aws))["training"][0]
    _run(SageMakerTrainingOperator, first, "train")
    replay = aws_task_configs(prepared, run_key, 1, _settings(), job=_job(aws))["training"][0]
    with pytest.raises(AirflowException, match=r"already exists"):
        _run(SageMakerTrainingOperator, replay, "train")
    retry = aws_task_configs(prepared, run_key, 2, _settings(), job=_job(aws))["training"][0]
    _run(SageMakerTrainingOperator, retry, "train")

    names = [body["TrainingJobName"] for body in moto_recorder("SageMaker.CreateTrainingJob")]
    assert names == [first["config"]["TrainingJobName"], retry["config"]["TrainingJobName"]]
    assert names[1].endswith("-t2")


def test_transform_request_exact(aws, prepared, moto_recorder):
    from airflow.providers.amazon.aws.operators.sagemaker import (
        SageMakerTrainingOperator,
        SageMakerTransformOperator,
    )

    run_key = f"interval-{uuid.uuid4().hex[:8]}"
    configs = aws_task_configs(
        prepared, run_key, 1, _settings(), job=_job(aws, batch_inference="transform")
    )
    _run(SageMakerTrainingOperator, configs["training"][0], "train")
    kwargs = configs["transform"][0]
    expected = json.loads(json.dumps(kwargs["config"]))
    _run(SageMakerTransformOperator, kwargs, "transform")

    (model,) = moto_recorder("SageMaker.CreateModel")
    (transform,) = moto_recorder("SageMaker.CreateTransformJob")
    training_name = configs["groups"]["5min"]["training_job_name"]
    described = aws["sagemaker"].describe_training_job(TrainingJobName=training_name)
    assert model == expected["Model"]
    assert transform == expected["Transform"]
    assert transform["BatchStrategy"] == "SingleRecord"
    assert transform["TransformInput"]["SplitType"] == "Line"
    assert transform["TransformOutput"]["AssembleWith"] == "Line"
    assert "DEEPAR_INFERENCE_CONFIG" in transform["Environment"]
    # The model reads the artifact where the training job wrote it.
    assert (
        model["PrimaryContainer"]["ModelDataUrl"] == described["ModelArtifacts"]["S3ModelArtifacts"]
    )


def test_spot_inference_request_exact(aws, prepared, moto_recorder):
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator

    run_key = f"interval-{uuid.uuid4().hex[:8]}"
    job = _job(aws, batch_inference="spot_training")
    script_url = stage_spot_inference_code(
        job, {"client_kwargs": {"endpoint_url": aws["endpoint"]}}
    )
    configs = aws_task_configs(prepared, run_key, 1, _settings(), job=job)
    _run(SageMakerTrainingOperator, configs["training"][0], "train")
    # moto completes training jobs without writing artifacts; put the model where
    # SageMaker would, because the hook checks that every input channel exists.
    training_name = configs["groups"]["5min"]["training_job_name"]
    aws["s3"].put_object(
        Bucket=aws["bucket"],
        Key=f"sagemaker/models/{training_name}/output/model.tar.gz",
        Body=b"placeholder",
    )
    kwargs = configs["spot_inference"][0]
    expected = json.loads(json.dumps(kwargs["config"]))
    _run(SageMakerTrainingOperator, kwargs, "spot_inference")

    training, inference = moto_recorder("SageMaker.CreateTrainingJob")
    key = script_url.removeprefix(f"s3://{aws['bucket']}/")
    staged = aws["s3"].get_object(Bucket=aws["bucket"], Key=key)["Body"].read()
    assert inference == expected
    assert inference["EnableManagedSpotTraining"] is True
    assert inference["StoppingCondition"]["MaxWaitTimeInSeconds"] <= 3600
    assert b"def main()" in staged


def test_training_cost_from_describe(aws, prepared):
    from airflow.providers.amazon.aws.operators.sagemaker import SageMakerTrainingOperator

    run_key = f"interval-{uuid.uuid4().hex[:8]}"
    configs = aws_task_configs(prepared, run_key, 1, _settings(), job=_job(aws))
    _run(SageMakerTrainingOperator, configs["training"][0], "train")
    name = configs["groups"]["5min"]["training_job_name"]

    costs = describe_training_costs([name], aws["sagemaker"])
    # moto reports no BillableTimeInSeconds, so the start and end times are used.
    assert costs[name]["billable_source"] == "start_end_times"
    assert costs[name]["spot"] is True
    assert costs[name]["estimated_cost_usd"] >= 0.0
