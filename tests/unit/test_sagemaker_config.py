import json

import pytest

from models.config import DeepARConfig
from models.sagemaker import (
    AwsJobSettings,
    check_resource_name,
    resource_name,
    spot_inference_config,
    training_job_config,
    transform_config,
    validate_spot,
    validate_training_request,
    validate_transform_request,
)
from saodf.config import Settings
from saodf.errors import ConfigError

IMAGE = "522234722520.dkr.ecr.us-east-1.amazonaws.com/forecasting-deepar:1"
ROLE = "arn:aws:iam::123456789012:role/saodf-sagemaker"


def _job(**changes) -> AwsJobSettings:
    return AwsJobSettings(role_arn=ROLE, artifacts_url="s3://saodf-test/sm", **changes)


def _training(job=None, config=None) -> dict:
    return training_job_config(
        config or DeepARConfig(),
        job or _job(),
        "saodf-train-5min-abc-t1",
        "s3://saodf-test/prepared/groups/5min/train/",
        "s3://saodf-test/prepared/groups/5min/test/",
        IMAGE,
    )


# Every invalid managed Spot combination, with the message that names it.
INVALID_SPOT = [
    (True, 600, None, None, r"EnableManagedSpotTraining needs MaxWaitTimeInSeconds"),
    (False, 600, 900, None, r"MaxWaitTimeInSeconds=900 is set without EnableManagedSpotTraining"),
    (True, 1200, 600, None, r"MaxWaitTimeInSeconds=600 is below MaxRuntimeInSeconds=1200"),
    (True, 600, 3601, None, r"exceeds the 3600 s cap .* no CheckpointConfig is set"),
    (True, 600, 7200, "s3://b/ck", r"exceeds the 3600 s cap .* the algorithm does not checkpoint"),
    (True, 0, 600, None, r"MaxRuntimeInSeconds=0 is invalid"),
    (True, 600, 0, None, r"MaxWaitTimeInSeconds=0 is invalid"),
    (True, 600, 900.5, None, r"MaxWaitTimeInSeconds=900.5 is invalid"),
    (False, 2_419_201, None, None, r"MaxRuntimeInSeconds=2419201 exceeds the SageMaker maximum"),
    (True, "600", 900, None, r"MaxRuntimeInSeconds='600' is invalid"),
]


@pytest.mark.parametrize(("spot", "runtime", "wait", "checkpoint", "message"), INVALID_SPOT)
def test_spot_rejects_invalid(spot, runtime, wait, checkpoint, message):
    with pytest.raises(ConfigError, match=message):
        validate_spot(spot, runtime, wait, checkpoint)


@pytest.mark.parametrize(
    ("spot", "runtime", "wait"),
    [(True, 600, 600), (True, 600, 3600), (False, 86400, None), (True, 1, 1)],
)
def test_spot_accepts_valid(spot, runtime, wait):
    validate_spot(spot, runtime, wait)


def test_spot_checkpointing_lifts_cap():
    validate_spot(True, 600, 7200, "s3://b/ck", supports_checkpoints=True)


def test_job_settings_validate_spot():
    with pytest.raises(ConfigError, match=r"MaxWaitTimeInSeconds=1000 is below"):
        _job(max_runtime_seconds=2000, max_wait_seconds=1000).validate()


def test_job_settings_reject_local_artifacts():
    with pytest.raises(ConfigError, match=r"artifacts_url='/tmp/x' is not an s3:// URL"):
        AwsJobSettings(role_arn=ROLE, artifacts_url="/tmp/x").validate()


def test_job_settings_from_env():
    settings = Settings.from_env().with_overrides(lake_url="s3://saodf-lake/lake")
    job = AwsJobSettings.from_settings(
        settings,
        {
            "SAODF_SAGEMAKER_ROLE_ARN": ROLE,
            "SAODF_SAGEMAKER_MAX_RUNTIME_SECONDS": "1200",
            "SAODF_SAGEMAKER_USE_SPOT": "false",
            "SAODF_SAGEMAKER_MAX_WAIT_SECONDS": "none",
        },
    )
    assert job.artifacts_url == "s3://saodf-lake/lake/sagemaker"
    assert job.max_runtime_seconds == 1200
    assert job.use_spot is False
    assert job.max_wait_seconds is None


def test_job_settings_spot_off_alone():
    settings = Settings.from_env().with_overrides(lake_url="s3://saodf-lake/lake")
    job = AwsJobSettings.from_settings(
        settings, {"SAODF_SAGEMAKER_ROLE_ARN": ROLE, "SAODF_SAGEMAKER_USE_SPOT": "false"}
    )
    request = _training(job=job)
    assert job.use_spot is False
    assert job.max_wait_seconds is None
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"]


def test_job_settings_spot_wait_default():
    settings = Settings.from_env().with_overrides(lake_url="s3://saodf-lake/lake")
    job = AwsJobSettings.from_settings(settings, {"SAODF_SAGEMAKER_ROLE_ARN": ROLE})
    assert job.use_spot is True
    assert job.max_wait_seconds == 3600


def test_job_settings_wait_without_spot():
    settings = Settings.from_env().with_overrides(lake_url="s3://saodf-lake/lake")
    environ = {
        "SAODF_SAGEMAKER_ROLE_ARN": ROLE,
        "SAODF_SAGEMAKER_USE_SPOT": "false",
        "SAODF_SAGEMAKER_MAX_WAIT_SECONDS": "3600",
    }
    with pytest.raises(ConfigError, match=r"MaxWaitTimeInSeconds=3600 is set without"):
        AwsJobSettings.from_settings(settings, environ)


def test_job_settings_need_role():
    with pytest.raises(ConfigError, match=r"SAODF_SAGEMAKER_ROLE_ARN is not set"):
        AwsJobSettings.from_settings(Settings.from_env(), {})


def test_job_settings_extra_wins():
    settings = Settings.from_env().with_overrides(
        extra={"role_arn": ROLE, "artifacts_url": "s3://other/sm"}
    )
    job = AwsJobSettings.from_settings(
        settings, {"SAODF_SAGEMAKER_ROLE_ARN": "arn:aws:iam::1:role/env"}
    )
    assert job.role_arn == ROLE
    assert job.artifacts_url == "s3://other/sm"


def test_names_deterministic_per_interval():
    first = resource_name("training", "interval-20240101T0000-20240101T0100", "5min", 1)
    again = resource_name("training", "interval-20240101T0000-20240101T0100", "5min", 1)
    assert first == again


def test_names_unique_per_try():
    run_key = "interval-20240101T0000-20240101T0100"
    names = {resource_name("training", run_key, "5min", n) for n in range(1, 6)}
    assert len(names) == 5


STAGES = (
    "training",
    "model",
    "transform",
    "spot_inference",
    "candidate_model",
    "candidate_transform",
    "candidate_spot_inference",
    "champion_model",
    "champion_transform",
    "champion_spot_inference",
)


def test_names_unique_per_interval_group_stage():
    names = {
        resource_name(stage, run_key, group, 1)
        for stage in STAGES
        for run_key in ("interval-20240101T0000-20240101T0100", "window-0123456789abcdef")
        for group in ("5min", "1s", "h")
    }
    assert len(names) == len(STAGES) * 2 * 3


@pytest.mark.parametrize("stage", STAGES)
def test_names_valid_for_every_stage(stage):
    name = resource_name(stage, "window-" + "f" * 200, "Weird Group.Name_2", 99, "saodf-tenant1")
    assert check_resource_name(name) == name
    assert len(name) <= 63


def test_names_valid_for_sagemaker():
    name = resource_name("spot_inference", "window-" + "f" * 200, "Weird Group.Name_2", 99)
    assert check_resource_name(name) == name
    assert len(name) <= 63


def test_names_reject_bad_try():
    with pytest.raises(ConfigError, match=r"try_number=0 is invalid"):
        resource_name("training", "run", "5min", 0)


def test_names_reject_bad_characters():
    with pytest.raises(ConfigError, match=r"SageMaker name 'bad_name' is invalid"):
        check_resource_name("bad_name")


def test_training_config_exact():
    config = DeepARConfig(prediction_length=12, context_length=48, time_freq="5min")
    request = _training(config=config)
    assert request == {
        "TrainingJobName": "saodf-train-5min-abc-t1",
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {
            "prediction_length": "12",
            "context_length": "48",
            "time_freq": "5min",
            "epochs": "5",
            "num_cells": "40",
            "num_layers": "2",
            "likelihood": "student-T",
            "dropout_rate": "0.1",
            "learning_rate": "0.001",
            "mini_batch_size": "32",
            "embedding_dimension": "10",
            "num_eval_samples": "100",
            "num_dynamic_feat": "ignore",
        },
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"s3://saodf-test/prepared/groups/5min/{channel}/",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "CompressionType": "None",
            }
            for channel in ("train", "test")
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://saodf-test/sm/models"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 10,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3000, "MaxWaitTimeInSeconds": 3600},
        "EnableManagedSpotTraining": True,
        "Tags": [],
    }


def test_training_config_on_demand_has_no_wait():
    request = _training(job=_job(use_spot=False, max_wait_seconds=None))
    assert request["EnableManagedSpotTraining"] is False
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3000}


def test_training_config_rejects_bad_hyperparameter():
    with pytest.raises(ConfigError, match=r"num_cells=10 is out of range"):
        _training(config=DeepARConfig(num_cells=10))


def test_training_request_checked_before_call():
    request = _training()
    request["StoppingCondition"]["MaxWaitTimeInSeconds"] = 100
    with pytest.raises(ConfigError, match=r"MaxWaitTimeInSeconds=100 is below"):
        validate_training_request(request)


def test_training_request_custom_image_may_checkpoint():
    request = _training()
    request["AlgorithmSpecification"]["TrainingImage"] = "1.dkr.ecr.x/custom:1"
    request["StoppingCondition"]["MaxWaitTimeInSeconds"] = 7200
    request["CheckpointConfig"] = {"S3Uri": "s3://b/ck"}
    validate_training_request(request)


def test_transform_config_exact():
    config = transform_config(
        _job(),
        "saodf-model-5min-abc-t1",
        "saodf-xform-5min-abc-t1",
        "saodf-train-5min-abc-t1",
        "s3://saodf-test/prepared/groups/5min/test/",
        "s3://saodf-test/sm/forecasts/run/5min/",
        IMAGE,
    )
    transform = config["Transform"]
    assert config["Model"]["PrimaryContainer"] == {
        "Image": IMAGE,
        "ModelDataUrl": "s3://saodf-test/sm/models/saodf-train-5min-abc-t1/output/model.tar.gz",
    }
    assert transform["BatchStrategy"] == "SingleRecord"
    assert transform["TransformInput"]["SplitType"] == "Line"
    assert transform["TransformOutput"]["AssembleWith"] == "Line"
    assert transform["ModelName"] == "saodf-model-5min-abc-t1"
    assert json.loads(transform["Environment"]["DEEPAR_INFERENCE_CONFIG"]) == {
        "num_samples": 100,
        "output_types": ["mean", "quantiles"],
        "quantiles": ["0.1", "0.5", "0.9"],
    }


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("Transform", "BatchStrategy"), "MultiRecord", r"BatchStrategy='MultiRecord' is invalid"),
        (("Transform", "TransformInput", "SplitType"), "None", r"SplitType='None' is invalid"),
        (("Transform", "TransformOutput", "AssembleWith"), None, r"AssembleWith=None is invalid"),
        (("Transform", "ModelName"), "other-model", r"transform ModelName 'other-model' differs"),
        (("Transform", "Environment"), {}, r"Environment has no DEEPAR_INFERENCE_CONFIG"),
    ],
)
def test_transform_request_rejects(path, value, message):
    config = transform_config(_job(), "m-1", "x-1", "t-1", "s3://b/in/", "s3://b/out/", IMAGE)
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        validate_transform_request(config)


def test_spot_inference_config_exact():
    request = spot_inference_config(
        _job(),
        "saodf-spinf-5min-abc-t1",
        "saodf-train-5min-abc-t1",
        "s3://saodf-test/prepared/groups/5min/test/",
        "s3://saodf-test/sm/forecasts/run/5min/",
        IMAGE,
    )
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in request["InputDataConfig"]
    }
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 1800,
        "MaxWaitTimeInSeconds": 3600,
    }
    assert request["AlgorithmSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "/opt/ml/input/data/code/spot_batch_inference.py",
    ]
    assert channels == {
        "model": "s3://saodf-test/sm/models/saodf-train-5min-abc-t1/output/model.tar.gz",
        "input": "s3://saodf-test/prepared/groups/5min/test/",
        "code": "s3://saodf-test/sm/code/spot-inference/",
    }
    assert "DEEPAR_INFERENCE_CONFIG" in request["Environment"]


def test_spot_inference_rejects_long_wait():
    with pytest.raises(ConfigError, match=r"MaxWaitTimeInSeconds=5000 exceeds the 3600 s cap"):
        _job(inference_max_wait_seconds=5000).validate()
