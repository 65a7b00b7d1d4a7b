"""SageMaker backend: built-in DeepAR training on managed Spot and batch inference configs.

Every request is built from one :class:`~models.config.DeepARConfig` and checked by
:func:`validate_training_request` before any AWS call, because SageMaker rejects an
invalid Spot combination only after the job was submitted and emulators such as
moto accept it silently.

Job and model names are ``{prefix}-{stage}-{group}-{digest}-t{try}``. The digest is a
hash of the run key (one data interval or window) and the group, so a rerun of the
same interval gets the same names, and the try number makes every Airflow try
distinct. The operators get ``action_if_job_exists="fail"``, so a name clash fails the
task instead of silently renaming the job.

SageMaker has no Spot capacity for batch transform (CreateTransformJob has no Spot
field). Spot batch inference therefore runs the DeepAR container as a managed Spot
training job whose entry point serves the model inside the job and writes the
forecasts. ``models.aws_tasks.choose_batch_inference`` picks it per group when the
price table prices it lower and the job fits the Spot wait cap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.config import DeepARConfig
from saodf.errors import ConfigError

logger = logging.getLogger(__name__)

DEEPAR_FRAMEWORK = "forecasting-deepar"
# ``model_kind`` tag of the MLflow runs and model versions of SageMaker training jobs.
MODEL_KIND = "deepar_sagemaker"
# CreateTrainingJob limit on StoppingCondition.MaxRuntimeInSeconds (28 days).
MAX_RUNTIME_LIMIT_SECONDS = 28 * 24 * 3600
# SageMaker caps MaxWaitTimeInSeconds (Spot wait plus run time) at one hour for
# built-in algorithms that do not checkpoint, as its managed Spot training guide states.
BUILTIN_SPOT_WAIT_CAP_SECONDS = 3600
# NOTE: DeepAR is not known to checkpoint, so the one-hour cap applies to it even
# with CheckpointConfig. Set this to True if AWS documents checkpoint support.
DEEPAR_SUPPORTS_CHECKPOINTS = False
OUTPUT_QUANTILES = ("0.1", "0.5", "0.9")
SPOT_INFERENCE_SCRIPT = "spot_batch_inference.py"
BATCH_MODES = ("auto", "transform", "spot_training")
# SageMaker resource names: 1-63 letters, digits and single or repeated hyphens.
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_STAGES = {
    "training": "train",
    "model": "model",
    "transform": "xform",
    "spot_inference": "spinf",
    # Scoring jobs: the candidate's and the champion's forecasts of the backtest input.
    "candidate_model": "cand-model",
    "candidate_transform": "cand-xform",
    "candidate_spot_inference": "cand-spinf",
    "champion_model": "champ-model",
    "champion_transform": "champ-xform",
    "champion_spot_inference": "champ-spinf",
}


@dataclass(frozen=True)
class AwsJobSettings:
    """Role, S3 locations, instances and Spot limits of the SageMaker jobs of one pipeline."""

    role_arn: str
    artifacts_url: str
    region: str = "us-east-1"
    aws_conn_id: str = "aws_default"
    training_instance_type: str = "ml.m5.xlarge"
    training_instance_count: int = 1
    volume_size_gb: int = 10
    max_runtime_seconds: int = 3000
    use_spot: bool = True
    max_wait_seconds: int | None = 3600
    checkpoint_s3_uri: str | None = None
    transform_instance_type: str = "ml.m5.large"
    transform_instance_count: int = 1
    max_payload_mb: int = 6
    inference_max_runtime_seconds: int = 1800
    inference_max_wait_seconds: int = 3600
    batch_inference: str = "auto"
    num_samples: int = 100
    kms_key_id: str | None = None
    image_uri: str | None = None
    name_prefix: str = "saodf"
    check_interval_seconds: int = 30
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings, environ: Mapping[str, str] | None = None) -> AwsJobSettings:
        """Read the job settings from ``settings.extra`` and ``SAODF_SAGEMAKER_*`` variables.

        Keys of ``settings.extra`` win over the environment. ``artifacts_url`` defaults
        to ``{lake_url}/sagemaker`` when the lake is on S3. ``max_wait_seconds``
        defaults to 3600 with Spot training and to none (``"none"``) without it.

        Raises:
            ConfigError: the role ARN or an S3 artifacts URL is missing, or a number is invalid.
        """
        environ = os.environ if environ is None else environ
        extra = dict(getattr(settings, "extra", {}) or {})

        def value(name: str, default: str | None = None) -> str | None:
            key = name.lower()
            if key in extra and extra[key] not in (None, ""):
                return str(extra[key])
            raw = environ.get(f"SAODF_SAGEMAKER_{name.upper()}")
            return default if raw in (None, "") else raw

        role = value("role_arn")
        if not role:
            raise ConfigError(
                "SAODF_SAGEMAKER_ROLE_ARN is not set; set it to the IAM role ARN that "
                "SageMaker assumes for training and inference"
            )
        lake = str(getattr(settings, "lake_url", ""))
        default_artifacts = f"{lake.rstrip('/')}/sagemaker" if lake.startswith("s3://") else None
        artifacts = value("artifacts_url", default_artifacts)
        if not artifacts:
            raise ConfigError(
                f"SAODF_SAGEMAKER_ARTIFACTS_URL is not set and the lake {lake!r} is not on S3; "
                "set it to an s3:// folder for model artifacts, code and forecasts"
            )
        use_spot = _bool_setting("use_spot", value("use_spot", "true"))
        # The wait time exists only for Spot, so it defaults to the cap only when Spot is on.
        max_wait = value(
            "max_wait_seconds", str(BUILTIN_SPOT_WAIT_CAP_SECONDS) if use_spot else "none"
        )
        job = cls(
            role_arn=role,
            artifacts_url=artifacts.rstrip("/"),
            region=value("region", getattr(settings, "aws_region", "us-east-1")),
            aws_conn_id=value("aws_conn_id", "aws_default"),
            training_instance_type=value("training_instance_type", "ml.m5.xlarge"),
            training_instance_count=_int_setting("training_instance_count", value, 1),
            volume_size_gb=_int_setting("volume_size_gb", value, 10),
            max_runtime_seconds=_int_setting("max_runtime_seconds", value, 3000),
            use_spot=use_spot,
            max_wait_seconds=None if max_wait in ("none", "") else _to_int("max_wait", max_wait),
            checkpoint_s3_uri=value("checkpoint_s3_uri"),
            transform_instance_type=value("transform_instance_type", "ml.m5.large"),
            transform_instance_count=_int_setting("transform_instance_count", value, 1),
            max_payload_mb=_int_setting("max_payload_mb", value, 6),
            inference_max_runtime_seconds=_int_setting(
                "inference_max_runtime_seconds", value, 1800
            ),
            inference_max_wait_seconds=_int_setting("inference_max_wait_seconds", value, 3600),
            batch_inference=value("batch_inference", "auto"),
            num_samples=_int_setting("num_samples", value, 100),
            kms_key_id=value("kms_key_id"),
            image_uri=value("image_uri"),
            name_prefix=value("name_prefix", "saodf"),
            check_interval_seconds=_int_setting("check_interval_seconds", value, 30),
        )
        job.validate()
        return job

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that SageMaker would reject."""
        if not self.artifacts_url.startswith("s3://"):
            raise ConfigError(
                f"artifacts_url={self.artifacts_url!r} is not an s3:// URL; SageMaker reads "
                "and writes only S3"
            )
        if self.batch_inference not in BATCH_MODES:
            raise ConfigError(
                f"batch_inference={self.batch_inference!r} is invalid; use one of {BATCH_MODES}"
            )
        for name in (
            "training_instance_count",
            "transform_instance_count",
            "volume_size_gb",
            "max_payload_mb",
            "num_samples",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; use 1 or more")
        if not 0 <= self.max_payload_mb <= 100:
            raise ConfigError(f"max_payload_mb={self.max_payload_mb} is outside [0, 100]")
        validate_spot(
            self.use_spot,
            self.max_runtime_seconds,
            self.max_wait_seconds,
            self.checkpoint_s3_uri,
            DEEPAR_SUPPORTS_CHECKPOINTS,
        )
        validate_spot(
            True, self.inference_max_runtime_seconds, self.inference_max_wait_seconds, None, False
        )


def validate_spot(
    use_spot: bool,
    max_runtime_seconds: object,
    max_wait_seconds: object,
    checkpoint_s3_uri: str | None = None,
    supports_checkpoints: bool = DEEPAR_SUPPORTS_CHECKPOINTS,
) -> None:
    """Check the managed Spot fields of a training job as SageMaker does, and the wait cap.

    Raises:
        ConfigError: ``MaxWaitTimeInSeconds`` is missing with Spot, set without Spot,
            below ``MaxRuntimeInSeconds``, or above the one-hour cap of a built-in
            algorithm without checkpoints; or a limit is not a positive integer.
    """
    _check_seconds("MaxRuntimeInSeconds", max_runtime_seconds, MAX_RUNTIME_LIMIT_SECONDS)
    if not use_spot:
        if max_wait_seconds is not None:
            raise ConfigError(
                f"MaxWaitTimeInSeconds={max_wait_seconds} is set without "
                "EnableManagedSpotTraining; SageMaker accepts it only for managed Spot "
                "training, so enable Spot or unset the wait time"
            )
        return
    if max_wait_seconds is None:
        raise ConfigError(
            "EnableManagedSpotTraining needs MaxWaitTimeInSeconds; set it to at least "
            f"MaxRuntimeInSeconds={max_runtime_seconds}"
        )
    _check_seconds("MaxWaitTimeInSeconds", max_wait_seconds, None)
    if max_wait_seconds < max_runtime_seconds:
        raise ConfigError(
            f"MaxWaitTimeInSeconds={max_wait_seconds} is below "
            f"MaxRuntimeInSeconds={max_runtime_seconds}; the wait time includes the run "
            "time, so raise the wait time or lower the run time"
        )
    checkpointed = bool(checkpoint_s3_uri) and supports_checkpoints
    if not checkpointed and max_wait_seconds > BUILTIN_SPOT_WAIT_CAP_SECONDS:
        reason = (
            "the algorithm does not checkpoint"
            if checkpoint_s3_uri
            else "no CheckpointConfig is set"
        )
        raise ConfigError(
            f"MaxWaitTimeInSeconds={max_wait_seconds} exceeds the "
            f"{BUILTIN_SPOT_WAIT_CAP_SECONDS} s cap of built-in algorithms on Spot because "
            f"{reason}; lower it to {BUILTIN_SPOT_WAIT_CAP_SECONDS} or less"
        )


def validate_training_request(request: Mapping[str, Any]) -> None:
    """Check the Spot fields of a CreateTrainingJob request dict before it is sent.

    Raises:
        ConfigError: the name is invalid or the Spot combination is one that SageMaker
            rejects (see :func:`validate_spot`).
    """
    check_resource_name(str(request.get("TrainingJobName", "")))
    stopping = request.get("StoppingCondition") or {}
    validate_spot(
        bool(request.get("EnableManagedSpotTraining", False)),
        stopping.get("MaxRuntimeInSeconds", 86400),
        stopping.get("MaxWaitTimeInSeconds"),
        (request.get("CheckpointConfig") or {}).get("S3Uri"),
        _supports_checkpoints(request),
    )


def validate_transform_request(config: Mapping[str, Any]) -> None:
    """Check a ``{"Model", "Transform"}`` config for the DeepAR batch transform settings.

    Raises:
        ConfigError: a name is invalid, or the split, batch strategy or inference
            configuration differs from what DeepAR's batch transform needs.
    """
    transform = config["Transform"]
    check_resource_name(transform["TransformJobName"])
    check_resource_name(config["Model"]["ModelName"])
    if transform["ModelName"] != config["Model"]["ModelName"]:
        raise ConfigError(
            f"transform ModelName {transform['ModelName']!r} differs from the model "
            f"{config['Model']['ModelName']!r} created with it"
        )
    expected = {
        "BatchStrategy": transform.get("BatchStrategy"),
        "SplitType": transform["TransformInput"].get("SplitType"),
        "AssembleWith": transform["TransformOutput"].get("AssembleWith"),
    }
    wanted = {"BatchStrategy": "SingleRecord", "SplitType": "Line", "AssembleWith": "Line"}
    for key, value in expected.items():
        if value != wanted[key]:
            raise ConfigError(
                f"{key}={value!r} is invalid for DeepAR JSON Lines; set {key}={wanted[key]!r}"
            )
    if "DEEPAR_INFERENCE_CONFIG" not in (transform.get("Environment") or {}):
        raise ConfigError(
            "Environment has no DEEPAR_INFERENCE_CONFIG; set it to the JSON of num_samples, "
            "output_types and quantiles"
        )


def check_resource_name(name: str) -> str:
    """Return ``name`` if SageMaker accepts it as a job or model name, else raise ConfigError."""
    if not _NAME.match(name):
        raise ConfigError(
            f"SageMaker name {name!r} is invalid; use 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return name


def resource_name(
    stage: str, run_key: str, group: str, try_number: int, prefix: str = "saodf"
) -> str:
    """Return the job or model name of ``stage`` for one run key, group and Airflow try.

    The same arguments always give the same name; another run key, group or try
    gives another one.

    Raises:
        ConfigError: the stage is unknown, the try number is below 1, or the prefix
            makes the name invalid.
    """
    if stage not in _STAGES:
        raise ConfigError(f"stage {stage!r} is unknown; use one of {sorted(_STAGES)}")
    if isinstance(try_number, bool) or not isinstance(try_number, int) or try_number < 1:
        raise ConfigError(f"try_number={try_number!r} is invalid; Airflow tries start at 1")
    digest = hashlib.sha256(f"{run_key}\x00{group}".encode()).hexdigest()[:12]
    group_part = re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-")[:12] or "g"
    name = f"{prefix}-{_STAGES[stage]}-{group_part}-{digest}-t{try_number}"
    return check_resource_name(name)


def deepar_image_uri(region: str) -> str:
    """Return the built-in DeepAR image URI of ``region`` from the SageMaker Python SDK."""
    from sagemaker.core import image_uris

    try:
        return image_uris.retrieve(DEEPAR_FRAMEWORK, region=region)
    except ValueError as exc:
        raise ConfigError(
            f"the SageMaker SDK has no DeepAR image for region {region!r}: {exc}"
        ) from None


def deepar_inference_config(num_samples: int) -> str:
    """Return the ``DEEPAR_INFERENCE_CONFIG`` JSON: mean and the 0.1, 0.5, 0.9 quantiles."""
    return json.dumps(
        {
            "num_samples": num_samples,
            "output_types": ["mean", "quantiles"],
            "quantiles": list(OUTPUT_QUANTILES),
        },
        separators=(",", ":"),
    )


def deepar_hyperparameters(config: DeepARConfig) -> dict[str, str]:
    """Return the CreateTrainingJob hyperparameters of ``config`` for built-in DeepAR.

    ``num_dynamic_feat=ignore`` matches the local backend, which ignores
    ``dynamic_feat``, and lets batch inference read the test channel, whose
    ``dynamic_feat`` covers only the observed steps.
    """
    hyperparameters = config.to_sagemaker_hyperparameters()
    hyperparameters["num_dynamic_feat"] = "ignore"
    return hyperparameters


def training_job_config(
    config: DeepARConfig,
    job: AwsJobSettings,
    name: str,
    train_url: str,
    test_url: str,
    image_uri: str,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the CreateTrainingJob request of built-in DeepAR and validate it.

    Args:
        config: the DeepAR hyperparameters.
        job: instances, role, Spot limits and S3 locations.
        name: the training job name from :func:`resource_name`.
        train_url: S3 folder of the train channel.
        test_url: S3 folder of the test channel.
        image_uri: the DeepAR image of the job's region.
        tags: extra tags of the job.
    """
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image_uri, "TrainingInputMode": "File"},
        "RoleArn": job.role_arn,
        "HyperParameters": deepar_hyperparameters(config),
        "InputDataConfig": [_channel("train", train_url), _channel("test", test_url)],
        "OutputDataConfig": _output_config(f"{job.artifacts_url}/models", job.kms_key_id),
        "ResourceConfig": {
            "InstanceType": job.training_instance_type,
            "InstanceCount": job.training_instance_count,
            "VolumeSizeInGB": job.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": job.max_runtime_seconds},
        "EnableManagedSpotTraining": job.use_spot,
        "Tags": _tags(job, tags),
    }
    if job.use_spot:
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = job.max_wait_seconds
    if job.checkpoint_s3_uri:
        request["CheckpointConfig"] = {"S3Uri": job.checkpoint_s3_uri}
    validate_training_request(request)
    return request


def model_artifact_url(job: AwsJobSettings, training_job_name: str) -> str:
    """Return where SageMaker writes ``model.tar.gz`` of a training job of ``job``."""
    return f"{job.artifacts_url}/models/{training_job_name}/output/model.tar.gz"


def transform_config(
    job: AwsJobSettings,
    model_name: str,
    transform_job_name: str,
    training_job_name: str,
    input_url: str,
    output_url: str,
    image_uri: str,
    tags: Mapping[str, str] | None = None,
    model_data_url: str | None = None,
) -> dict[str, Any]:
    """Build the ``{"Model", "Transform"}`` config of ``SageMakerTransformOperator``.

    One JSON line is one record (``SplitType=Line``, ``BatchStrategy=SingleRecord``)
    and the output keeps one forecast line per input line (``AssembleWith=Line``).
    ``model_data_url`` replaces the artifact of ``training_job_name``, for a model
    that another run trained.
    """
    config = {
        "Model": {
            "ModelName": model_name,
            "PrimaryContainer": {
                "Image": image_uri,
                "ModelDataUrl": model_data_url or model_artifact_url(job, training_job_name),
            },
            "ExecutionRoleArn": job.role_arn,
            "Tags": _tags(job, tags),
        },
        "Transform": {
            "TransformJobName": transform_job_name,
            "ModelName": model_name,
            "BatchStrategy": "SingleRecord",
            "MaxPayloadInMB": job.max_payload_mb,
            "MaxConcurrentTransforms": 1,
            "Environment": {"DEEPAR_INFERENCE_CONFIG": deepar_inference_config(job.num_samples)},
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_url}},
                "ContentType": "application/jsonlines",
                "CompressionType": "None",
                "SplitType": "Line",
            },
            "TransformOutput": {
                "S3OutputPath": output_url,
                "Accept": "application/jsonlines",
                "AssembleWith": "Line",
                **({"KmsKeyId": job.kms_key_id} if job.kms_key_id else {}),
            },
            "TransformResources": {
                "InstanceType": job.transform_instance_type,
                "InstanceCount": job.transform_instance_count,
            },
            "Tags": _tags(job, tags),
        },
    }
    validate_transform_request(config)
    return config


def spot_inference_config(
    job: AwsJobSettings,
    name: str,
    training_job_name: str,
    input_url: str,
    output_url: str,
    image_uri: str,
    tags: Mapping[str, str] | None = None,
    model_data_url: str | None = None,
) -> dict[str, Any]:
    """Build a managed Spot CreateTrainingJob request that runs DeepAR batch inference.

    The job starts the DeepAR image with :data:`SPOT_INFERENCE_SCRIPT` from the
    ``code`` channel as its entry point. The script unpacks the ``model`` channel,
    serves it inside the container and writes one forecast line per line of the
    ``input`` channel to ``/opt/ml/output/data``, which SageMaker uploads as
    ``{output_url}/{name}/output/output.tar.gz``. ``model_data_url`` replaces the
    artifact of ``training_job_name`` as the ``model`` channel.

    NOTE: this path was checked against moto only, which never starts a container;
    it assumes the DeepAR image ships ``python3`` and its ``serve`` command.
    """
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": image_uri,
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3", f"/opt/ml/input/data/code/{SPOT_INFERENCE_SCRIPT}"],
        },
        "RoleArn": job.role_arn,
        "InputDataConfig": [
            _channel("model", model_data_url or model_artifact_url(job, training_job_name)),
            _channel("input", input_url),
            _channel("code", spot_inference_code_url(job)),
        ],
        "OutputDataConfig": _output_config(output_url, job.kms_key_id),
        "ResourceConfig": {
            "InstanceType": job.transform_instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": job.volume_size_gb,
        },
        "StoppingCondition": {
            "MaxRuntimeInSeconds": job.inference_max_runtime_seconds,
            "MaxWaitTimeInSeconds": job.inference_max_wait_seconds,
        },
        "EnableManagedSpotTraining": True,
        "Environment": {"DEEPAR_INFERENCE_CONFIG": deepar_inference_config(job.num_samples)},
        "Tags": _tags(job, tags),
    }
    validate_training_request(request)
    return request


def spot_inference_code_url(job: AwsJobSettings) -> str:
    """Return the S3 folder that contains the Spot inference entry point."""
    return f"{job.artifacts_url}/code/spot-inference/"


def stage_spot_inference_code(job: AwsJobSettings, storage_options: dict | None = None) -> str:
    """Upload :data:`SPOT_INFERENCE_SCRIPT` to the code folder and return its S3 URL."""
    import fsspec

    source = Path(__file__).with_name(SPOT_INFERENCE_SCRIPT)
    url = spot_inference_code_url(job) + SPOT_INFERENCE_SCRIPT
    with fsspec.open(url, "wb", **(storage_options or {})) as handle:
        handle.write(source.read_bytes())
    logger.info("staged the Spot inference entry point at %s", url)
    return url


def _channel(name: str, url: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": url,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "CompressionType": "None",
    }


def _output_config(url: str, kms_key_id: str | None) -> dict[str, str]:
    output = {"S3OutputPath": url}
    if kms_key_id:
        output["KmsKeyId"] = kms_key_id
    return output


def _tags(job: AwsJobSettings, tags: Mapping[str, str] | None) -> list[dict[str, str]]:
    merged = {**job.tags, **(tags or {})}
    return [{"Key": key, "Value": str(value)} for key, value in sorted(merged.items())]


def _supports_checkpoints(request: Mapping[str, Any]) -> bool:
    image = (request.get("AlgorithmSpecification") or {}).get("TrainingImage", "")
    if f"/{DEEPAR_FRAMEWORK}:" in image:
        return DEEPAR_SUPPORTS_CHECKPOINTS
    # Custom images decide themselves whether they checkpoint.
    return True


def _check_seconds(name: str, value: object, maximum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} is invalid; use a whole number of seconds >= 1")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} exceeds the SageMaker maximum of {maximum} s")


def _to_int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"SAODF_SAGEMAKER_{name.upper()}={text!r} is not an integer; set a whole number"
        ) from None


def _int_setting(name: str, value, default: int) -> int:
    return _to_int(name, value(name, str(default)))


def _bool_setting(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"SAODF_SAGEMAKER_{name.upper()}={text!r} is invalid; use true or false")
