"""Operators of the ``aws`` target: Amazon provider operators fed from the run scope.

Each operator builds its request when it runs, from the scope that ``resolve_scope``
returned and the try number of its own task instance, through ``saodf.aws_pipeline``.
A retried task therefore submits jobs with new names instead of colliding with the
failed try's jobs. Submission, waiting and failure handling stay the provider's.

This module imports the Amazon provider (boto3), so the DAG imports it only when
``SAODF_TARGET=aws``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerTrainingOperator,
    SageMakerTransformOperator,
)

_JOB_ARGUMENTS = (
    "aws_conn_id",
    "wait_for_completion",
    "check_interval",
    "max_ingestion_time",
    "check_if_job_exists",
    "action_if_job_exists",
    "check_if_model_exists",
    "action_if_model_exists",
)


def _apply(operator, kwargs: Mapping[str, Any]) -> None:
    operator.config = kwargs["config"]
    for name in _JOB_ARGUMENTS:
        if name in kwargs:
            setattr(operator, name, kwargs[name])


def _skip_other_mode(kwargs, entry: Mapping[str, Any], group: str) -> None:
    if kwargs is None:
        from airflow.exceptions import AirflowSkipException

        raise AirflowSkipException(
            f"group {group} forecasts with {entry['batch_mode']}: {entry['cost']['reason']}"
        )


def _training_names(trained) -> dict[str, str]:
    return {item["group"]: item["training_job_name"] for item in trained or []}


class PrepareGlueJobOperator(GlueJobOperator):
    """Run the preprocessing script as an AWS Glue job for the devices and range of a run."""

    template_fields = (*GlueJobOperator.template_fields, "scope")

    def __init__(self, *, scope, **kwargs):
        super().__init__(update_config=True, **kwargs)
        self.scope = scope

    def execute(self, context) -> dict[str, Any]:
        from saodf import aws_pipeline, pipeline

        started = time.monotonic()
        kwargs = aws_pipeline.glue_kwargs(self.scope)
        self.job_name = kwargs["job_name"]
        self.job_desc = kwargs["job_desc"]
        self.script_location = kwargs["script_location"]
        self.iam_role_arn = kwargs["iam_role_arn"]
        self.script_args = kwargs["script_args"]
        self.create_job_kwargs = kwargs["create_job_kwargs"]
        self.aws_conn_id = kwargs["aws_conn_id"]
        job_run_id = super().execute(context)
        return {
            "job_name": self.job_name,
            "job_run_id": job_run_id,
            "prepared_url": pipeline.urls(pipeline.get_settings(), self.scope["run_key"])[
                "prepared"
            ],
            "seconds": time.monotonic() - started,
        }


class DeepARTrainingOperator(SageMakerTrainingOperator):
    """Train one group's DeepAR with SageMaker managed Spot training."""

    template_fields = (*SageMakerTrainingOperator.template_fields, "scope", "group")

    def __init__(self, *, scope, group, **kwargs):
        super().__init__(config={}, **kwargs)
        self.scope = scope
        self.group = group

    def execute(self, context) -> dict[str, Any]:
        from saodf import aws_pipeline

        started = time.monotonic()
        try_number = context["ti"].try_number
        kwargs, _ = aws_pipeline.group_job_kwargs(self.scope, "training", self.group, try_number)
        _apply(self, kwargs)
        super().execute(context)
        return {
            "group": self.group,
            "training_job_name": self.config["TrainingJobName"],
            "try_number": try_number,
            "seconds": time.monotonic() - started,
        }


def _prepare_inference(operator, context, stage: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Fill ``operator`` with its group's inference request; skip a group of the other mode."""
    from saodf import aws_pipeline

    names = _training_names(operator.trained)
    kwargs, entry = aws_pipeline.group_job_kwargs(
        operator.scope,
        stage,
        operator.group,
        context["ti"].try_number,
        training_job_names=names,
    )
    _skip_other_mode(kwargs, entry, operator.group)
    _apply(operator, kwargs)
    return entry, names


def _inference_result(group, mode, job_name, model_name, entry, started) -> dict[str, Any]:
    from saodf import aws_pipeline

    return {
        "group": group,
        "mode": mode,
        "job_name": job_name,
        "model_name": model_name,
        "output": aws_pipeline.inference_output_url(entry, mode, job_name),
        "seconds": time.monotonic() - started,
    }


class DeepARTransformOperator(SageMakerTransformOperator):
    """Forecast one group with a SageMaker batch transform job of its trained model."""

    template_fields = (*SageMakerTransformOperator.template_fields, "scope", "group", "trained")

    def __init__(self, *, scope, group, trained, **kwargs):
        super().__init__(config={}, **kwargs)
        self.scope = scope
        self.group = group
        self.trained = trained

    def execute(self, context) -> dict[str, Any]:
        started = time.monotonic()
        entry, _ = _prepare_inference(self, context, "transform")
        super().execute(context)
        return _inference_result(
            self.group,
            "transform",
            self.config["Transform"]["TransformJobName"],
            self.config["Model"]["ModelName"],
            entry,
            started,
        )


class SpotInferenceOperator(SageMakerTrainingOperator):
    """Forecast one group with a managed Spot training job that runs DeepAR inference."""

    template_fields = (*SageMakerTrainingOperator.template_fields, "scope", "group", "trained")

    def __init__(self, *, scope, group, trained, **kwargs):
        super().__init__(config={}, **kwargs)
        self.scope = scope
        self.group = group
        self.trained = trained

    def execute(self, context) -> dict[str, Any]:
        started = time.monotonic()
        entry, names = _prepare_inference(self, context, "spot_inference")
        super().execute(context)
        return _inference_result(
            self.group,
            "spot_training",
            self.config["TrainingJobName"],
            names.get(self.group, entry["inference_model_from"]),
            entry,
            started,
        )


class _ScoringMixin:
    """Run one scoring job of ``saodf.aws_promotion.plan_scoring``'s ``request``."""

    scoring_mode = ""

    def _prepare_scoring(self, context) -> dict[str, Any]:
        from saodf import aws_promotion

        built = aws_promotion.scoring_job(self.scope, self.request, context["ti"].try_number)
        if built["mode"] != self.scoring_mode:
            from airflow.sdk.exceptions import AirflowSkipException

            group, mode = self.request["group"], built["mode"]
            raise AirflowSkipException(f"group {group} scores with {mode}, not {self.scoring_mode}")
        _apply(self, built["kwargs"])
        return built


class ScoringTransformOperator(_ScoringMixin, SageMakerTransformOperator):
    """Forecast one group's backtest input with the candidate's or the champion's model."""

    template_fields = (*SageMakerTransformOperator.template_fields, "scope", "request")
    scoring_mode = "transform"

    def __init__(self, *, scope, request, **kwargs):
        super().__init__(config={}, **kwargs)
        self.scope = scope
        self.request = request

    def execute(self, context) -> dict[str, Any]:
        from saodf import aws_promotion

        started = time.monotonic()
        built = self._prepare_scoring(context)
        super().execute(context)
        return aws_promotion.scoring_result(self.request, built, started)


class ScoringSpotInferenceOperator(_ScoringMixin, SageMakerTrainingOperator):
    """Forecast one group's backtest input with a model in a managed Spot inference job."""

    template_fields = (*SageMakerTrainingOperator.template_fields, "scope", "request")
    scoring_mode = "spot_training"

    def __init__(self, *, scope, request, **kwargs):
        super().__init__(config={}, **kwargs)
        self.scope = scope
        self.request = request

    def execute(self, context) -> dict[str, Any]:
        from saodf import aws_promotion

        started = time.monotonic()
        built = self._prepare_scoring(context)
        super().execute(context)
        return aws_promotion.scoring_result(self.request, built, started)


def pull_results(ti, task_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Return the results of ``task_ids``, one per map index, leaving out skipped ones."""
    results = []
    for task_id in task_ids:
        pulled = ti.xcom_pull(task_ids=task_id)
        if isinstance(pulled, dict):
            results.append(pulled)
        elif pulled:
            results.extend(item for item in pulled if item)
    return results
