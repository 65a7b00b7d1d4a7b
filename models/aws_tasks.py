"""Operator arguments of the ``aws`` target: one SageMaker training and inference per group.

:func:`aws_task_configs` reads the prepared manifest and returns keyword arguments for
``SageMakerTrainingOperator`` and, per group, either ``SageMakerTransformOperator`` or
a second ``SageMakerTrainingOperator`` that runs batch inference on managed Spot,
whichever :func:`choose_batch_inference` prices lower. :func:`scoring_job_kwargs`
builds the same two kinds of job for the forecasts that promotion scores. Nothing is
submitted here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from models.config import DeepARConfig
from models.cost import load_prices, price
from models.errors import ModelInputError
from models.prepared import group_specs, join_url, read_manifest
from models.sagemaker import (
    AwsJobSettings,
    deepar_image_uri,
    resource_name,
    spot_inference_config,
    training_job_config,
    transform_config,
)
from saodf.errors import ConfigError

logger = logging.getLogger(__name__)

# Estimates, not measurements: container start plus model load of one inference job,
# and DeepAR CPU time per series with 100 sample paths. Pass measured values where known.
DEFAULT_STARTUP_SECONDS = 180.0
DEFAULT_SECONDS_PER_SERIES = 0.05
# Assumed share of Spot jobs that are interrupted and rerun from the start, because
# built-in DeepAR does not checkpoint.
DEFAULT_INTERRUPTION_RATE = 0.1
# The two models that a scoring job forecasts the backtest input with.
SCORING_ROLES = ("candidate", "champion")


def choose_batch_inference(
    series_count: int,
    job: AwsJobSettings,
    prices: Mapping[str, Mapping[str, Any]] | None = None,
    startup_seconds: float = DEFAULT_STARTUP_SECONDS,
    seconds_per_series: float = DEFAULT_SECONDS_PER_SERIES,
    interruption_rate: float = DEFAULT_INTERRUPTION_RATE,
) -> dict[str, Any]:
    """Price one group's batch inference as a transform job and as a Spot training job.

    Spot wins when its expected cost, including reruns after interruptions, is lower
    and the estimated run fits ``job.inference_max_runtime_seconds``. A forced
    ``job.batch_inference`` mode is returned as is, with both prices for the record.

    Returns:
        ``mode`` (``transform`` or ``spot_training``), ``reason``, ``estimated_seconds``,
        ``transform_usd`` and ``spot_training_usd``.
    """
    if series_count < 1:
        raise ModelInputError(f"series_count={series_count} is invalid; a group has 1 or more")
    if not 0.0 <= interruption_rate < 1.0:
        raise ModelInputError(f"interruption_rate={interruption_rate} is outside [0, 1)")
    table = load_prices() if prices is None else prices
    seconds = startup_seconds + series_count * seconds_per_series
    instance = job.transform_instance_type
    transform_usd = (
        seconds / 3600.0 * price(f"sagemaker.transform.{instance}", table)
    ) * job.transform_instance_count
    savings = price("sagemaker.spot_savings", table)
    spot_usd = (
        seconds
        / 3600.0
        * price(f"sagemaker.training.{instance}", table)
        * (1.0 - savings)
        * (1.0 + interruption_rate)
    )
    if job.batch_inference != "auto":
        mode, reason = job.batch_inference, f"batch_inference={job.batch_inference} is set"
    elif seconds > job.inference_max_runtime_seconds:
        mode = "transform"
        reason = (
            f"estimated {seconds:.0f} s exceed the Spot job's MaxRuntimeInSeconds="
            f"{job.inference_max_runtime_seconds}"
        )
    elif spot_usd < transform_usd:
        mode, reason = "spot_training", "Spot training job is priced lower"
    else:
        mode, reason = "transform", "transform job is priced lower or equal"
    return {
        "mode": mode,
        "reason": reason,
        "estimated_seconds": seconds,
        "transform_usd": transform_usd,
        "spot_training_usd": spot_usd,
    }


def aws_task_configs(
    prepared_url: str,
    run_key: str,
    try_number: int,
    settings,
    training_job_names: Mapping[str, str] | None = None,
    config_overrides: dict | None = None,
    job: AwsJobSettings | None = None,
) -> dict[str, Any]:
    """Build the SageMaker operator keyword arguments of every group of a prepared dataset.

    Call it in the task that submits the jobs, with that task's ``try_number``: names
    embed it, so a retried task creates new jobs instead of colliding with the names
    of the failed try.

    Args:
        prepared_url: S3 folder of the prepared dataset.
        run_key: id of the pipeline run (data interval or window).
        try_number: Airflow try number of the submitting task, from 1.
        settings: the SAODF settings; job settings come from ``SAODF_SAGEMAKER_*``.
        training_job_names: per group, the training job whose model to use for
            inference, for an inference task that runs after a retried training
            task; by default the training job of this ``try_number``.
        config_overrides: DeepAR hyperparameters that replace the group defaults.
        job: job settings; read from ``settings`` when omitted.

    Returns:
        ``training``, ``transform`` and ``spot_inference``: lists of operator kwargs
        (``config`` plus wait and name-clash options) for ``SageMakerTrainingOperator``,
        ``SageMakerTransformOperator`` and ``SageMakerTrainingOperator``; ``groups``: per
        group the job names, ``batch_mode``, its cost comparison and the S3 output URL;
        and ``image_uri``, ``run_key``, ``try_number``.

    Raises:
        ConfigError: a setting or Spot combination is invalid, or a hyperparameter is.
        ModelInputError: the prepared manifest is missing or malformed.
    """
    if not prepared_url.startswith("s3://"):
        raise ConfigError(
            f"prepared_url={prepared_url!r} is not an s3:// URL; SageMaker reads channels "
            "only from S3, so set SAODF_LAKE_URL to an s3:// lake for the aws target"
        )
    job = job or AwsJobSettings.from_settings(settings)
    image = job.image_uri or deepar_image_uri(job.region)
    manifest = read_manifest(prepared_url)
    tags = {"saodf:run_key": run_key, "saodf:try": str(try_number)}
    result: dict[str, Any] = {
        "run_key": run_key,
        "try_number": try_number,
        "image_uri": image,
        "training": [],
        "transform": [],
        "spot_inference": [],
        "groups": {},
    }
    for spec in group_specs(manifest):
        config = DeepARConfig.from_overrides(
            {
                "prediction_length": spec.prediction_length,
                "context_length": spec.context_length,
                "time_freq": spec.freq,
            },
            config_overrides,
        )
        group_tags = {**tags, "saodf:group": spec.group}
        training_name = resource_name("training", run_key, spec.group, try_number, job.name_prefix)
        train_url = _folder(join_url(prepared_url, spec.train))
        test_url = _folder(join_url(prepared_url, spec.test))
        result["training"].append(
            _operator_kwargs(
                job,
                training_job_config(
                    config, job, training_name, train_url, test_url, image, group_tags
                ),
                job.max_wait_seconds or job.max_runtime_seconds,
            )
        )

        # TODO: forecasts come from this run's model even when it did not become the
        # champion; the local backend forecasts with the champion.
        source_training = (training_job_names or {}).get(spec.group, training_name)
        output_url = join_url(job.artifacts_url, "forecasts", run_key, spec.group) + "/"
        choice = choose_batch_inference(max(1, len(spec.series)), job)
        entry = {
            "training_job_name": training_name,
            "inference_model_from": source_training,
            "batch_mode": choice["mode"],
            "cost": choice,
            "output_url": output_url,
            "hyperparameters": config.to_sagemaker_hyperparameters(),
        }
        if choice["mode"] == "spot_training":
            name = resource_name("spot_inference", run_key, spec.group, try_number, job.name_prefix)
            request = spot_inference_config(
                job, name, source_training, test_url, output_url, image, group_tags
            )
            result["spot_inference"].append(
                _operator_kwargs(job, request, job.inference_max_wait_seconds)
            )
            entry["spot_inference_job_name"] = name
        else:
            model_name = resource_name("model", run_key, spec.group, try_number, job.name_prefix)
            transform_name = resource_name(
                "transform", run_key, spec.group, try_number, job.name_prefix
            )
            config_pair = transform_config(
                job,
                model_name,
                transform_name,
                source_training,
                test_url,
                output_url,
                image,
                group_tags,
            )
            kwargs = _operator_kwargs(job, config_pair, job.inference_max_runtime_seconds)
            kwargs.update(check_if_model_exists=True, action_if_model_exists="fail")
            result["transform"].append(kwargs)
            entry.update(model_name=model_name, transform_job_name=transform_name)
        result["groups"][spec.group] = entry
        logger.info(
            "planned SageMaker jobs for run_key %s group %s try %d: training %s, inference %s",
            run_key,
            spec.group,
            try_number,
            training_name,
            choice["mode"],
        )
    return result


def scoring_job_kwargs(
    request: Mapping[str, Any], run_key: str, try_number: int, job: AwsJobSettings
) -> dict[str, Any]:
    """Build the operator arguments of one scoring job: one model's forecasts of a backtest input.

    The job runs in the group's inference mode and is named after the request's role,
    so the candidate's and the champion's jobs of one group and try never clash.

    Args:
        request: one entry of ``saodf.aws_scoring.plan_scoring``: ``group``, ``role``
            (``candidate`` or ``champion``), ``mode`` (``transform`` or
            ``spot_training``), ``training_job_name``, ``model_data_url``, ``input_url``
            and ``output_url``.
        run_key: id of the pipeline run (data interval or window).
        try_number: Airflow try number of the submitting task, from 1.
        job: the job settings.

    Returns:
        ``mode``, ``job_name``, ``model_name`` (None for Spot) and ``kwargs``: ``config``
        plus the wait and name-clash options of ``SageMakerTransformOperator`` (transform)
        or ``SageMakerTrainingOperator`` (Spot).

    Raises:
        ConfigError: the role or mode is invalid, or a setting makes the request invalid.
    """
    role, group, mode = request["role"], request["group"], request["mode"]
    if role not in SCORING_ROLES:
        raise ConfigError(f"scoring role {role!r} is invalid; use one of {SCORING_ROLES}")
    image = job.image_uri or deepar_image_uri(job.region)
    tags = {
        "saodf:run_key": run_key,
        "saodf:try": str(try_number),
        "saodf:group": group,
        "saodf:scoring": role,
    }
    if mode == "spot_training":
        name = resource_name(f"{role}_spot_inference", run_key, group, try_number, job.name_prefix)
        config = spot_inference_config(
            job,
            name,
            request["training_job_name"],
            request["input_url"],
            request["output_url"],
            image,
            tags,
            model_data_url=request["model_data_url"],
        )
        kwargs = _operator_kwargs(job, config, job.inference_max_wait_seconds)
        return {"mode": mode, "job_name": name, "model_name": None, "kwargs": kwargs}
    if mode != "transform":
        raise ConfigError(f"scoring mode {mode!r} is invalid; use 'transform' or 'spot_training'")
    model_name = resource_name(f"{role}_model", run_key, group, try_number, job.name_prefix)
    name = resource_name(f"{role}_transform", run_key, group, try_number, job.name_prefix)
    config = transform_config(
        job,
        model_name,
        name,
        request["training_job_name"],
        request["input_url"],
        request["output_url"],
        image,
        tags,
        model_data_url=request["model_data_url"],
    )
    kwargs = _operator_kwargs(job, config, job.inference_max_runtime_seconds)
    kwargs.update(check_if_model_exists=True, action_if_model_exists="fail")
    return {"mode": mode, "job_name": name, "model_name": model_name, "kwargs": kwargs}


def _operator_kwargs(job: AwsJobSettings, config: dict, max_seconds: int) -> dict[str, Any]:
    return {
        "config": config,
        "aws_conn_id": job.aws_conn_id,
        "wait_for_completion": True,
        "check_interval": job.check_interval_seconds,
        # The job has at most its wait time (Spot) or run time, plus upload margin.
        "max_ingestion_time": int(max_seconds) + 600,
        "check_if_job_exists": True,
        "action_if_job_exists": "fail",
    }


def _folder(channel_file_url: str) -> str:
    # Channels are S3 prefixes: the folder of the channel's data.jsonl.
    return channel_file_url.rsplit("/", 1)[0] + "/"


def describe_training_costs(job_names: list[str], client) -> dict[str, dict]:
    """Price finished training jobs from DescribeTrainingJob, keyed by job name.

    Args:
        job_names: training job names, Spot inference jobs included.
        client: a boto3 SageMaker client.
    """
    from models.cost import training_job_cost_from_description

    costs = {}
    for name in job_names:
        description = client.describe_training_job(TrainingJobName=name)
        costs[name] = training_job_cost_from_description(description)
        logger.info(
            "training job %s billed %.0f s (%s): %.6f USD",
            name,
            costs[name]["seconds"],
            costs[name]["billable_source"],
            costs[name]["estimated_cost_usd"],
        )
    return costs
