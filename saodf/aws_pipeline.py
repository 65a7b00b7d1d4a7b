"""Task logic of the ``telemetry_pipeline`` DAG on the ``aws`` target.

On ``SAODF_TARGET=aws`` the DAG runs the preprocessing script as an AWS Glue job, trains
DeepAR with SageMaker managed Spot training and forecasts with batch transform or a Spot
inference job. This module builds the exact requests of those jobs from the run scope
and maps their S3 outputs back onto the layout that ``populate_cache`` reads, so the
operators in ``saodf_airflow.aws`` only submit and wait. ``saodf.aws_promotion``
decides whether a trained model becomes the ``champion``.

Outputs on S3 (``{artifacts}`` is ``SAODF_SAGEMAKER_ARTIFACTS_URL``)::

    {artifacts}/forecasts/{run_key}/{group}/data.jsonl.out     batch transform output
    {artifacts}/forecasts/{run_key}/{group}/{job}/output/output.tar.gz   Spot inference
    {lake}/forecasts/{run_key}/{group}/output.jsonl.out         collected, one line per series
    {lake}/forecasts/{run_key}/{group}/manifest.json            written last
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

from saodf.config import PROJECT_ROOT, Settings, get_settings
from saodf.errors import ConfigError, SaodfError

logger = logging.getLogger(__name__)

STAGES = ("training", "transform", "spot_inference")
# PyPI packages that the Glue job installs on top of the Glue 5 runtime, which ships pandas
# and pyarrow. The project's own packages travel in the code zip.
GLUE_PYTHON_MODULES = ("orjson", "fsspec", "s3fs")
CODE_PACKAGES = ("etl", "saodf")
# SageMaker DeepAR's finest time_freq: finer series are resampled to it.
SAGEMAKER_MIN_FREQ = "1min"
TRANSFORM_OUTPUT_FILE = "data.jsonl.out"


class AwsOutputError(SaodfError):
    """A SageMaker job finished but its output is missing or does not match its input."""


@dataclass(frozen=True)
class GlueSettings:
    """Locations, role and capacity of the Glue preprocessing job."""

    role_arn: str
    code_url: str
    job_name: str = "saodf-prepare"
    aws_conn_id: str = "aws_default"
    glue_version: str = "5.0"
    worker_type: str = "G.1X"
    workers: int = 2
    engine: str = "pandas"

    @property
    def script_url(self) -> str:
        return f"{self.code_url}/glue_job.py"

    @property
    def package_url(self) -> str:
        return f"{self.code_url}/saodf_code.zip"

    @classmethod
    def from_env(cls, settings: Settings, environ: Mapping[str, str] | None = None):
        """Read ``SAODF_GLUE_*`` variables; the code folder defaults to ``{lake}/code/glue``.

        Raises:
            ConfigError: the role is missing, the code folder is not on S3, or a number is
                invalid.
        """
        environ = os.environ if environ is None else environ
        role = environ.get("SAODF_GLUE_ROLE_ARN", "")
        if not role:
            raise ConfigError(
                "SAODF_GLUE_ROLE_ARN is not set; set it to the IAM role ARN that the Glue "
                "preprocessing job assumes"
            )
        lake = settings.lake_url.rstrip("/")
        default_code = f"{lake}/code/glue" if lake.startswith("s3://") else ""
        code_url = environ.get("SAODF_GLUE_CODE_URL", default_code).rstrip("/")
        if not code_url.startswith("s3://"):
            raise ConfigError(
                f"SAODF_GLUE_CODE_URL={code_url!r} is not an s3:// folder; Glue runs scripts "
                "only from S3, so set it or put the lake on S3"
            )
        workers_text = environ.get("SAODF_GLUE_WORKERS", "2")
        try:
            workers = int(workers_text)
        except ValueError:
            raise ConfigError(
                f"SAODF_GLUE_WORKERS={workers_text!r} is not a whole number; use 2 or more"
            ) from None
        engine = environ.get("SAODF_GLUE_ENGINE", "pandas")
        if engine not in ("pandas", "spark"):
            raise ConfigError(f"SAODF_GLUE_ENGINE={engine!r} is invalid; use 'pandas' or 'spark'")
        return cls(
            role_arn=role,
            code_url=code_url,
            job_name=environ.get("SAODF_GLUE_JOB_NAME", "saodf-prepare"),
            aws_conn_id=environ.get("SAODF_GLUE_AWS_CONN_ID", "aws_default"),
            glue_version=environ.get("SAODF_GLUE_VERSION", "5.0"),
            worker_type=environ.get("SAODF_GLUE_WORKER_TYPE", "G.1X"),
            workers=workers,
            engine=engine,
        )


def require_s3_lake(settings: Settings) -> None:
    """Raise ConfigError unless the lake is on S3, which every AWS job reads and writes."""
    if not settings.lake_url.startswith("s3://"):
        raise ConfigError(
            f"SAODF_LAKE_URL={settings.lake_url!r} is not an s3:// URL; the aws target reads "
            "and writes the lake on S3, so set SAODF_LAKE_URL=s3://BUCKET/PREFIX"
        )


def glue_kwargs(scope: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Return the ``GlueJobOperator`` arguments that prepare the run's devices and range."""
    from etl.glue_job import glue_operator_kwargs
    from saodf import pipeline

    settings = settings or get_settings()
    require_s3_lake(settings)
    glue = GlueSettings.from_env(settings)
    config = pipeline.prepare_config(
        scope, settings, engine=glue.engine, min_freq=SAGEMAKER_MIN_FREQ
    )
    kwargs = glue_operator_kwargs(
        config,
        script_location=glue.script_url,
        iam_role_arn=glue.role_arn,
        extra_py_files=[glue.package_url],
        additional_python_modules=GLUE_PYTHON_MODULES,
        job_name=glue.job_name,
        glue_version=glue.glue_version,
        worker_type=glue.worker_type,
        number_of_workers=glue.workers,
    )
    kwargs["aws_conn_id"] = glue.aws_conn_id
    return kwargs


def code_zip() -> bytes:
    """Zip the ``etl`` and ``saodf`` packages for the Glue job's ``--extra-py-files``.

    Entries are sorted and carry a fixed timestamp, so the same sources give the same
    bytes and an unchanged upload can be skipped.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in CODE_PACKAGES:
            root = PROJECT_ROOT / package
            for path in sorted(root.rglob("*.py")):
                info = zipfile.ZipInfo(
                    path.relative_to(PROJECT_ROOT).as_posix(), (2020, 1, 1, 0, 0, 0)
                )
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _upload_if_changed(url: str, payload: bytes, storage_options: dict) -> bool:
    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(path):
        with fs.open(path, "rb") as handle:
            if hashlib.sha256(handle.read()).digest() == hashlib.sha256(payload).digest():
                return False
    with fs.open(path, "wb") as handle:
        handle.write(payload)
    return True


def stage_code(
    settings: Settings | None = None, storage_options: dict | None = None
) -> dict[str, Any]:
    """Upload the Glue script, the code zip and the Spot inference script when they changed.

    Returns:
        Per uploaded object its S3 URL and whether it was written (False: unchanged).
    """
    from models.sagemaker import SPOT_INFERENCE_SCRIPT, AwsJobSettings, spot_inference_code_url

    settings = settings or get_settings()
    require_s3_lake(settings)
    options = dict(storage_options or {})
    glue = GlueSettings.from_env(settings)
    job = AwsJobSettings.from_settings(settings)
    objects = {
        glue.script_url: (PROJECT_ROOT / "etl" / "glue_job.py").read_bytes(),
        glue.package_url: code_zip(),
        spot_inference_code_url(job) + SPOT_INFERENCE_SCRIPT: (
            PROJECT_ROOT / "models" / SPOT_INFERENCE_SCRIPT
        ).read_bytes(),
    }
    written = {url: _upload_if_changed(url, payload, options) for url, payload in objects.items()}
    logger.info(
        "staged job code: %d of %d objects uploaded (%s)",
        sum(written.values()),
        len(written),
        ", ".join(written),
    )
    return {"objects": written}


def plan_jobs(scope: dict[str, Any], settings: Settings | None = None) -> list[str]:
    """Return the frequency groups of the run's prepared dataset, one SageMaker job each.

    Each group's choice between batch transform and Spot inference comes from the cost
    model (``models.aws_tasks.choose_batch_inference``); it does not depend on the try
    number, so every task of the group sees the same choice.
    """
    configs = task_configs(scope, try_number=1, settings=settings)
    for group, entry in sorted(configs["groups"].items()):
        logger.info(
            "run %s group %s: %s (%s)",
            scope["run_key"],
            group,
            entry["batch_mode"],
            entry["cost"]["reason"],
        )
    return sorted(configs["groups"])


def task_configs(
    scope: dict[str, Any],
    try_number: int,
    settings: Settings | None = None,
    training_job_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return ``models.aws_tasks.aws_task_configs`` for the run's prepared dataset."""
    from models.aws_tasks import aws_task_configs
    from saodf import pipeline

    settings = settings or get_settings()
    require_s3_lake(settings)
    prepared_url = pipeline.urls(settings, scope["run_key"])["prepared"]
    return aws_task_configs(
        prepared_url,
        scope["run_key"],
        try_number,
        settings,
        training_job_names=dict(training_job_names or {}),
    )


def group_job_kwargs(
    scope: dict[str, Any],
    stage: str,
    group: str,
    try_number: int,
    settings: Settings | None = None,
    training_job_names: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Return one group's operator arguments for ``stage`` and the group's plan entry.

    The arguments are None when the group has no job of that stage, because it
    forecasts with the other inference mode.

    Raises:
        ConfigError: ``stage`` is unknown or the group is not in the prepared dataset.
    """
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r} is invalid; use one of {STAGES}")
    configs = task_configs(scope, try_number, settings, training_job_names)
    entry = configs["groups"].get(group)
    if entry is None:
        raise ConfigError(
            f"group {group!r} is not in the prepared dataset of run {scope['run_key']}; "
            f"known groups: {sorted(configs['groups'])}"
        )
    name_key = {
        "training": ("TrainingJobName",),
        "transform": ("Transform", "TransformJobName"),
        "spot_inference": ("TrainingJobName",),
    }[stage]
    wanted = {
        "training": entry["training_job_name"],
        "transform": entry.get("transform_job_name"),
        "spot_inference": entry.get("spot_inference_job_name"),
    }[stage]
    for kwargs in configs[stage]:
        value: Any = kwargs["config"]
        for key in name_key:
            value = value[key]
        if value == wanted:
            return kwargs, entry
    return None, entry


def _read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as handle:
        return handle.read()


def read_text(url: str) -> str:
    """Return the UTF-8 text of the object or file at ``url``."""
    return _read_bytes(url).decode("utf-8")


def spot_output_lines(archive_url: str) -> bytes:
    """Return the forecast lines inside a Spot inference job's ``output.tar.gz``.

    Raises:
        AwsOutputError: the archive is missing or holds no ``*.out`` file.
    """
    try:
        payload = _read_bytes(archive_url)
    except FileNotFoundError:
        raise AwsOutputError(
            f"Spot inference output {archive_url} not found; check the job's logs in CloudWatch"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        members = sorted(
            (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".out")),
            key=lambda member: member.name,
        )
        if not members:
            raise AwsOutputError(
                f"Spot inference output {archive_url} holds no .out file; the entry point "
                "writes one per input file"
            )
        return b"".join(archive.extractfile(member).read() for member in members)


def job_output_lines(mode: str, output_url: str, job_name: str) -> list[str]:
    """Return the non-empty forecast lines of a transform or Spot inference job's output.

    Raises:
        AwsOutputError: the output is missing, or a Spot archive contains no ``.out`` file.
    """
    if mode == "transform":
        try:
            payload = _read_bytes(output_url)
        except FileNotFoundError:
            raise AwsOutputError(
                f"batch transform output {output_url} not found; check transform "
                f"job {job_name} in the SageMaker console"
            ) from None
    else:
        payload = spot_output_lines(output_url)
    return [line for line in payload.decode("utf-8").splitlines() if line.strip()]


def inference_output_url(entry: Mapping[str, Any], mode: str, job_name: str) -> str:
    """Return where a group's inference job leaves its forecast lines."""
    base = entry["output_url"].rstrip("/")
    if mode == "transform":
        # Batch transform names each output after its input object plus ".out".
        return f"{base}/{TRANSFORM_OUTPUT_FILE}"
    return f"{base}/{job_name}/output/output.tar.gz"


def collect_forecasts(
    scope: dict[str, Any],
    inference: Sequence[Mapping[str, Any]],
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Copy each group's SageMaker output to the lake layout that ``populate_cache`` reads.

    Args:
        scope: the run scope.
        inference: one result per group from the inference tasks: ``group``, ``mode``,
            ``job_name``, ``output`` (S3 URL of the output file) and ``model_name``.

    Raises:
        AwsOutputError: an output is missing, unreadable, or has a line count that differs
            from the group's series.
    """
    from models.output import parse_forecast_line, write_text_atomic
    from models.pipeline import forecast_manifest
    from models.prepared import group_specs, read_manifest, read_records
    from saodf import pipeline

    settings = settings or get_settings()
    paths = pipeline.urls(settings, scope["run_key"])
    specs = {spec.group: spec for spec in group_specs(read_manifest(paths["prepared"]))}
    collected = {}
    for result in inference:
        group = result["group"]
        spec = specs.get(group)
        if spec is None:
            raise AwsOutputError(
                f"inference result for group {group!r} has no group in the prepared manifest "
                f"{paths['prepared']}; known groups: {sorted(specs)}"
            )
        lines = job_output_lines(result["mode"], result["output"], result["job_name"])
        records = read_records(paths["prepared"], spec.test)
        if len(lines) != len(records):
            raise AwsOutputError(
                f"{result['mode']} job {result['job_name']} wrote {len(lines)} forecast lines "
                f"for the {len(records)} series of group {group!r}; rerun the inference task"
            )
        forecasts = [parse_forecast_line(line) for line in lines]
        horizon = len(forecasts[0]["mean"]) if forecasts else spec.prediction_length
        folder = f"{paths['forecasts'].rstrip('/')}/{group}"
        write_text_atomic(f"{folder}/output.jsonl.out", "\n".join(lines) + "\n")
        manifest = forecast_manifest(
            spec, records, result["model_name"], result["job_name"], horizon
        )
        write_text_atomic(f"{folder}/manifest.json", json.dumps(manifest, indent=2))
        collected[group] = {"series": len(lines), "folder": folder, "source": result["output"]}
        logger.info(
            "collected %d forecasts of group %s for run %s from %s",
            len(lines),
            group,
            scope["run_key"],
            result["output"],
        )
    return {"forecasts_url": paths["forecasts"], "groups": collected}


def record_training(
    scope: dict[str, Any],
    trained: Sequence[Mapping[str, Any]],
    sagemaker_client,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Log each SageMaker training job to MLflow, register its model and decide on ``champion``.

    One MLflow run per group gets the hyperparameters, the final metrics that DeepAR
    reports on the test channel (``test:mean_wQuantileLoss``, ``test:RMSE``), the billed
    seconds and their price. The model artifact on S3 becomes a version of the group's
    registered model. Against a champion trained on the same data, ``champion`` moves
    when the candidate's ``test:mean_wQuantileLoss`` is lower. Against a champion
    trained on other data, the group's result gets ``promoted=None`` and a
    ``comparison`` entry, and ``saodf.aws_promotion`` scores both models on this run's
    windows before it decides. A champion that cannot be scored on these windows is
    replaced at once, as in the local backend.
    """
    from models.backtest import data_hash
    from models.cost import training_job_cost_from_description
    from models.registry import (
        client_for,
        current_champion,
        ensure_experiment,
        move_champion,
    )
    from models.sagemaker import MODEL_KIND
    from saodf import pipeline
    from saodf.aws_promotion import champion_comparison, decide_by_test_metric, tag_decision

    settings = settings or get_settings()
    client = client_for(settings.mlflow_tracking_uri)
    experiment_id = ensure_experiment(client, settings.mlflow_experiment)
    prepared = pipeline.urls(settings, scope["run_key"])["prepared"]
    results = {}
    for item in trained:
        group, name = item["group"], item["training_job_name"]
        description = sagemaker_client.describe_training_job(TrainingJobName=name)
        cost = training_job_cost_from_description(description)
        metrics = {
            entry["MetricName"]: float(entry["Value"])
            for entry in description.get("FinalMetricDataList") or []
        }
        digest = data_hash(_read_bytes(f"{prepared}/groups/{group}/test/data.jsonl"))
        run = client.create_run(
            experiment_id,
            run_name=f"{scope['run_key']}-{group}-sagemaker",
            tags={
                "run_key": scope["run_key"],
                "group": group,
                "model_kind": MODEL_KIND,
                "training_job_name": name,
                "data_hash": digest,
            },
        )
        run_id = run.info.run_id
        for key, value in (description.get("HyperParameters") or {}).items():
            client.log_param(run_id, key, value)
        for key, value in metrics.items():
            client.log_metric(run_id, key.replace(":", "_"), value)
        client.log_metric(run_id, "billable_seconds", float(cost["seconds"]))
        client.log_metric(run_id, "training_cost_usd", float(cost["estimated_cost_usd"]))
        client.set_terminated(run_id, "FINISHED")

        model_name = f"{settings.registered_model_prefix}_{group}"
        artifact = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts", "")
        version = _register_sagemaker_model(
            client, model_name, artifact, run_id, scope["run_key"], digest, metrics, name
        )
        champion = current_champion(client, model_name)
        decision = decide_by_test_metric(champion, version, digest, metrics)
        comparison = None
        if decision is None:
            comparison = champion_comparison(
                client, champion, description.get("HyperParameters") or {}
            )
            if comparison["scorer"] is None:
                decision = (True, f"{comparison['reason']}, so it is replaced")
                comparison = None
        if decision is None:
            promoted = None
            reason = (
                f"pending: champion version {champion.version} trained on other data, so "
                "both models are scored on this run's windows"
            )
        else:
            promoted, reason = decision
            if promoted:
                move_champion(client, model_name, version)
        champion = current_champion(client, model_name)
        results[group] = {
            "training_job_name": name,
            "mlflow_run_id": run_id,
            "model_name": model_name,
            "model_version": version,
            "model_artifact": artifact,
            "champion_version": str(champion.version) if champion else None,
            "promoted": promoted,
            "promotion_reason": reason,
            "comparison": comparison,
            "metrics": metrics,
            "cost": {k: cost[k] for k in ("seconds", "estimated_cost_usd", "billable_source")},
        }
        if promoted is not None and champion is not None:
            tag_decision(
                client,
                results[group],
                promoted,
                reason,
                champion.version,
                champion.tags.get("model_kind", ""),
            )
        logger.info(
            "recorded SageMaker job %s of run %s group %s: version %s of %s, %s (%s)",
            name,
            scope["run_key"],
            group,
            version,
            model_name,
            {True: "promoted", False: "not promoted", None: "promotion pending"}[promoted],
            reason,
        )
    return {"groups": results}


def inference_cost(result: Mapping[str, Any], sagemaker_client) -> dict[str, Any]:
    """Price one group's inference job from its Describe response.

    A transform job is billed on demand from ``TransformStartTime`` to
    ``TransformEndTime`` per instance; a Spot inference job like a training job.
    """
    from models.cost import estimate_batch_inference_cost, training_job_cost_from_description

    if result["mode"] == "transform":
        description = sagemaker_client.describe_transform_job(TransformJobName=result["job_name"])
        start, end = description.get("TransformStartTime"), description.get("TransformEndTime")
        if start is None or end is None:
            raise AwsOutputError(
                f"transform job {result['job_name']} reports no start or end time; price it "
                "after it has finished"
            )
        resources = description.get("TransformResources") or {}
        count = int(resources.get("InstanceCount", 1))
        estimate = estimate_batch_inference_cost(
            max(0.0, (end - start).total_seconds()) * count,
            resources.get("InstanceType", "ml.m5.large"),
        )
    else:
        description = sagemaker_client.describe_training_job(TrainingJobName=result["job_name"])
        estimate = training_job_cost_from_description(description)
    return {
        "seconds": float(estimate["seconds"]),
        "estimated_cost_usd": float(estimate["estimated_cost_usd"]),
    }


def log_inference_costs(
    inference: Sequence[Mapping[str, Any]],
    collected: Mapping[str, Any],
    recorded: Mapping[str, Any],
    sagemaker_client,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Log each group's inference cost and cost per 1,000 forecasts to its training run.

    Args:
        inference: the inference tasks' results (see :func:`collect_forecasts`).
        collected: the return value of :func:`collect_forecasts`.
        recorded: the return value of :func:`record_training`, for the MLflow run ids.
    """
    from models.cost import cost_per_1000_forecasts
    from models.registry import client_for

    settings = settings or get_settings()
    client = client_for(settings.mlflow_tracking_uri)
    costs = {}
    for result in inference:
        group = result["group"]
        cost = inference_cost(result, sagemaker_client)
        forecasts = int(collected["groups"][group]["series"])
        cost["forecasts"] = forecasts
        cost["cost_per_1000_forecasts_usd"] = cost_per_1000_forecasts(
            cost["estimated_cost_usd"], forecasts
        )
        run_id = (recorded.get("groups", {}).get(group) or {}).get("mlflow_run_id")
        if run_id:
            client.log_param(run_id, "batch_mode", result["mode"])
            client.log_metric(run_id, "inference_seconds", cost["seconds"])
            client.log_metric(run_id, "inference_cost_usd", cost["estimated_cost_usd"])
            client.log_metric(
                run_id, "inference_cost_per_1000_forecasts_usd", cost["cost_per_1000_forecasts_usd"]
            )
        logger.info(
            "inference job %s of group %s (%s): %.0f s, %.6f USD for %d forecasts",
            result["job_name"],
            group,
            result["mode"],
            cost["seconds"],
            cost["estimated_cost_usd"],
            forecasts,
        )
        costs[group] = cost
    return costs


def _register_sagemaker_model(client, name, artifact, run_id, run_key, digest, metrics, job):
    from models.registry import find_version_for_run_key

    existing = find_version_for_run_key(client, name, run_key)
    if existing is not None:
        return str(existing.version)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - MLflow raises its own exception type for "not found"
        client.create_registered_model(name)
    from models.sagemaker import MODEL_KIND

    tags = {
        "run_key": run_key,
        "model_kind": MODEL_KIND,
        "training_job_name": job,
        "data_hash": digest,
    }
    if "test:mean_wQuantileLoss" in metrics:
        tags["test_mean_wquantileloss"] = repr(metrics["test:mean_wQuantileLoss"])
    created = client.create_model_version(name, artifact, run_id=run_id, tags=tags)
    return str(created.version)


def sagemaker_client(aws_conn_id: str):
    """Return a boto3 SageMaker client of an Airflow AWS connection."""
    from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

    return SageMakerHook(aws_conn_id=aws_conn_id).get_conn()
