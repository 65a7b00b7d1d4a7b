"""Estimated cost of training and batch inference, priced as SageMaker instance time.

Every figure here is an estimate, not a bill. The on-demand prices are approximate
SageMaker training list prices for us-east-1 in 2024, the source being the AWS page
https://aws.amazon.com/sagemaker/pricing/. They were not re-checked against the live
page, and prices vary by region and change over time. Pass ``prices`` where accuracy
matters.

A local run is priced as "what the same seconds would cost on ``ml.m5.xlarge``",
because local CPU time has no AWS price. The Spot saving is an assumed fraction of
the on-demand price (0.7 by default). Real savings depend on the Spot market price
and on interruptions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from models.errors import ModelInputError

logger = logging.getLogger(__name__)

# USD per instance hour, on-demand SageMaker training, us-east-1, 2024 list prices (estimate).
ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.g4dn.xlarge": 0.736,
    "ml.p3.2xlarge": 3.825,
}
PRICE_SOURCE = "aws.amazon.com/sagemaker/pricing, us-east-1 on-demand training, 2024 (estimate)"
LOCAL_REFERENCE_INSTANCE = "ml.m5.xlarge"
# Assumption, not a measurement: the fraction of the on-demand price that Spot saves.
DEFAULT_SPOT_SAVINGS = 0.7


def estimate_training_cost(
    seconds: float,
    instance_type: str = LOCAL_REFERENCE_INSTANCE,
    spot: bool = False,
    instance_count: int = 1,
    spot_savings: float = DEFAULT_SPOT_SAVINGS,
    prices: Mapping[str, float] | None = None,
) -> dict:
    """Estimate the USD cost of ``seconds`` of instance time.

    SageMaker bills training per second, so the estimate is linear in ``seconds``.

    Returns:
        ``seconds``, ``instance_type``, ``instance_count``, ``spot``, ``usd_per_hour``,
        ``on_demand_usd``, ``estimated_cost_usd`` (after the Spot saving when ``spot``),
        ``spot_savings`` and ``price_source``.

    Raises:
        ModelInputError: ``seconds`` is negative, the instance type has no price, or
            ``spot_savings`` is outside [0, 1).
    """
    table = ON_DEMAND_USD_PER_HOUR if prices is None else prices
    if seconds < 0:
        raise ModelInputError(f"seconds={seconds} is negative; pass the measured duration")
    if instance_count < 1:
        raise ModelInputError(f"instance_count={instance_count} is invalid; use 1 or more")
    if not 0.0 <= spot_savings < 1.0:
        raise ModelInputError(f"spot_savings={spot_savings} is outside [0, 1)")
    if instance_type not in table:
        raise ModelInputError(
            f"instance type {instance_type!r} has no price; use one of {sorted(table)} "
            "or pass prices"
        )
    rate = float(table[instance_type])
    on_demand = seconds / 3600.0 * rate * instance_count
    estimated = on_demand * (1.0 - spot_savings) if spot else on_demand
    return {
        "seconds": float(seconds),
        "instance_type": instance_type,
        "instance_count": instance_count,
        "spot": spot,
        "usd_per_hour": rate,
        "on_demand_usd": on_demand,
        "estimated_cost_usd": estimated,
        "spot_savings": spot_savings if spot else 0.0,
        "price_source": PRICE_SOURCE,
    }


def estimate_batch_inference_cost(
    seconds: float, instance_type: str = LOCAL_REFERENCE_INSTANCE, instance_count: int = 1
) -> dict:
    """Estimate the USD cost of a batch transform job, always at the on-demand price.

    SageMaker's CreateTransformJob has no Spot option, so no Spot saving applies.
    """
    return estimate_training_cost(seconds, instance_type, spot=False, instance_count=instance_count)


def log_cost_summary(
    tracking_uri: str,
    run_key: str,
    stage_seconds: Mapping[str, float],
    experiment: str = "telemetry_pipeline",
    instance_type: str = LOCAL_REFERENCE_INSTANCE,
    spot_stages: tuple[str, ...] = ("train",),
    spot_savings: float = DEFAULT_SPOT_SAVINGS,
) -> dict:
    """Log one MLflow run with the seconds and estimated USD of each stage and the total.

    Stages named in ``spot_stages`` are priced with the Spot saving, the others at the
    on-demand price. Metrics are ``{stage}_seconds``, ``{stage}_cost_usd``,
    ``total_seconds`` and ``total_cost_usd``; the run is tagged ``run_key`` and
    ``model_kind=cost_summary``.

    Returns:
        ``run_id``, ``stages`` (each stage's estimate), ``total_seconds`` and
        ``total_cost_usd``.
    """
    import mlflow

    stages = {
        stage: estimate_training_cost(
            float(seconds),
            instance_type,
            spot=stage in spot_stages,
            spot_savings=spot_savings,
        )
        for stage, seconds in stage_seconds.items()
    }
    total_seconds = sum(s["seconds"] for s in stages.values())
    total_cost = sum(s["estimated_cost_usd"] for s in stages.values())
    metrics = {"total_seconds": total_seconds, "total_cost_usd": total_cost}
    for stage, estimate in stages.items():
        metrics[f"{stage}_seconds"] = estimate["seconds"]
        metrics[f"{stage}_cost_usd"] = estimate["estimated_cost_usd"]

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    run = client.create_run(
        experiment_id,
        run_name=f"cost-{run_key}",
        tags={"run_key": run_key, "model_kind": "cost_summary"},
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[mlflow.entities.Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[
            mlflow.entities.Param("instance_type", instance_type),
            mlflow.entities.Param("spot_stages", ",".join(spot_stages)),
            mlflow.entities.Param("spot_savings_assumed", str(spot_savings)),
            mlflow.entities.Param("price_source", PRICE_SOURCE),
        ],
    )
    client.set_terminated(run_id, "FINISHED")
    logger.info(
        "logged cost summary run %s for run_key %s: %.6f USD over %.1f s",
        run_id,
        run_key,
        total_cost,
        total_seconds,
    )
    return {
        "run_id": run_id,
        "stages": stages,
        "total_seconds": total_seconds,
        "total_cost_usd": total_cost,
    }


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)
