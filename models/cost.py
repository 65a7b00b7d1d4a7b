"""Estimated cost of training and batch inference, priced from ``models/prices.json``.

Every figure here is an estimate, not a bill. Each price in the file carries its
source URL and the date it was taken from; none was re-checked against the live AWS
pages, and prices vary by region and change over time. Pass ``prices`` or another
prices file where accuracy matters.

A local run is priced as "what the same seconds would cost on ``ml.m5.xlarge``",
because local CPU time has no AWS price. The Spot saving is an assumed fraction of
the on-demand price (0.7 by default, from the prices file). Real savings depend on
the Spot market price and on interruptions. On AWS, :func:`billable_seconds` reads
the seconds SageMaker really billed from DescribeTrainingJob.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from models.errors import ModelInputError

logger = logging.getLogger(__name__)

PRICES_FILE = Path(__file__).with_name("prices.json")


@lru_cache(maxsize=8)
def _load_prices_cached(path: str) -> dict[str, dict[str, Any]]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelInputError(f"prices file {path} not found; pass an existing file") from None
    except json.JSONDecodeError as exc:
        raise ModelInputError(f"prices file {path} is not valid JSON: {exc}") from None
    entries = {}
    for index, entry in enumerate(document.get("prices", [])):
        missing = [k for k in ("id", "usd", "unit", "source_url", "as_of") if k not in entry]
        if missing:
            raise ModelInputError(
                f"prices file {path} entry {index} lacks {missing}; every price needs id, usd, "
                "unit, source_url and as_of"
            )
        if not isinstance(entry["usd"], (int, float)) or entry["usd"] < 0:
            raise ModelInputError(
                f"prices file {path} entry {entry['id']!r} has usd={entry['usd']!r}; "
                "use a number >= 0"
            )
        entries[entry["id"]] = entry
    return entries


def load_prices(path: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """Read a prices file and return its entries by id.

    Raises:
        ModelInputError: the file is missing or malformed, or an entry lacks its
            source URL or date.
    """
    return dict(_load_prices_cached(str(path or PRICES_FILE)))


def price(price_id: str, prices: Mapping[str, Mapping[str, Any]] | None = None) -> float:
    """Return the USD value of ``price_id`` from ``prices`` (default: the bundled file)."""
    table = load_prices() if prices is None else prices
    if price_id not in table:
        raise ModelInputError(
            f"price {price_id!r} is not in the prices file; add it or use one of "
            f"{sorted(table)[:8]}..."
        )
    return float(table[price_id]["usd"])


def _instance_prices(kind: str) -> dict[str, float]:
    prefix = f"sagemaker.{kind}."
    return {
        key[len(prefix) :]: float(entry["usd"])
        for key, entry in load_prices().items()
        if key.startswith(prefix)
    }


# USD per instance hour of on-demand SageMaker training, from the prices file.
ON_DEMAND_USD_PER_HOUR: dict[str, float] = _instance_prices("training")
PRICE_SOURCE = "models/prices.json (aws.amazon.com/sagemaker/pricing, us-east-1, 2024-06-01)"
LOCAL_REFERENCE_INSTANCE = "ml.m5.xlarge"
# Assumption, not a measurement: the fraction of the on-demand price that Spot saves.
DEFAULT_SPOT_SAVINGS = price("sagemaker.spot_savings")


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
    return estimate_training_cost(
        seconds,
        instance_type,
        spot=False,
        instance_count=instance_count,
        prices=_instance_prices("transform"),
    )


def cost_per_1000_forecasts(job_cost_usd: float, forecasts: int) -> float:
    """Return the USD cost of 1,000 forecasts when a job of ``job_cost_usd`` made ``forecasts``.

    Raises:
        ModelInputError: ``forecasts`` is below 1.
    """
    if forecasts < 1:
        raise ModelInputError(f"forecasts={forecasts} is invalid; a job makes at least 1")
    return job_cost_usd / forecasts * 1000.0


def billable_seconds(description: Mapping[str, Any]) -> tuple[float, str]:
    """Return the billed seconds of a DescribeTrainingJob response and where they came from.

    ``BillableTimeInSeconds`` is what SageMaker bills; for managed Spot it is already
    reduced by the Spot saving, so it is priced at the on-demand rate. Without it
    (moto, or a job still running) the seconds are ``TrainingEndTime -
    TrainingStartTime`` times the instance count, as Airflow's SageMaker hook counts them.

    Returns:
        The seconds and ``"BillableTimeInSeconds"`` or ``"start_end_times"``.

    Raises:
        ModelInputError: the response has neither field.
    """
    if description.get("BillableTimeInSeconds") is not None:
        return float(description["BillableTimeInSeconds"]), "BillableTimeInSeconds"
    start = description.get("TrainingStartTime")
    end = description.get("TrainingEndTime")
    if start is None or end is None:
        raise ModelInputError(
            f"training job {description.get('TrainingJobName')!r} has no billable time yet; "
            "read it after the job has finished"
        )
    if isinstance(start, str):
        start, end = datetime.fromisoformat(start), datetime.fromisoformat(end)
    count = int((description.get("ResourceConfig") or {}).get("InstanceCount", 1))
    return max(0.0, (end - start).total_seconds()) * count, "start_end_times"


def training_job_cost_from_description(
    description: Mapping[str, Any], prices: Mapping[str, float] | None = None
) -> dict:
    """Price a finished training job from its DescribeTrainingJob response.

    Returns:
        The estimate of :func:`estimate_training_cost` for the billed seconds at the
        on-demand rate, plus ``billable_source``, ``training_job_name``, ``spot`` (from
        ``EnableManagedSpotTraining``) and ``spot_savings_measured`` (1 minus billed over
        training seconds, when SageMaker reports both; NaN otherwise).
    """
    seconds, source = billable_seconds(description)
    resource = description.get("ResourceConfig") or {}
    instance_type = resource.get("InstanceType", LOCAL_REFERENCE_INSTANCE)
    # Billed seconds of a Spot job already contain the saving: price them on demand.
    estimate = estimate_training_cost(seconds, instance_type, spot=False, prices=prices)
    training_seconds = description.get("TrainingTimeInSeconds")
    measured = float("nan")
    if source == "BillableTimeInSeconds" and training_seconds:
        measured = 1.0 - seconds / float(training_seconds)
    estimate.update(
        billable_source=source,
        training_job_name=description.get("TrainingJobName"),
        spot=bool(description.get("EnableManagedSpotTraining", False)),
        spot_savings_measured=measured,
    )
    return estimate


def log_cost_summary(
    tracking_uri: str,
    run_key: str,
    stage_seconds: Mapping[str, float],
    experiment: str = "telemetry_pipeline",
    instance_type: str = LOCAL_REFERENCE_INSTANCE,
    spot_stages: tuple[str, ...] = ("train",),
    spot_savings: float = DEFAULT_SPOT_SAVINGS,
    forecast_count: int | None = None,
) -> dict:
    """Log one MLflow run with the seconds and estimated USD of each stage and the total.

    With ``forecast_count`` (series forecast by the run) the run also gets
    ``cost_per_1000_forecasts_usd``, the total cost per 1,000 forecasts.

    Stages named in ``spot_stages`` are priced with the Spot saving, the others at the
    on-demand price. Metrics are ``{stage}_seconds``, ``{stage}_cost_usd``,
    ``total_seconds`` and ``total_cost_usd``; the run is tagged ``run_key`` and
    ``model_kind=cost_summary``. A repeated call for the same ``run_key`` (a retried or
    cleared task) logs into the existing run instead of adding one.

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
    if forecast_count:
        metrics["forecasts"] = float(forecast_count)
        metrics["cost_per_1000_forecasts_usd"] = cost_per_1000_forecasts(total_cost, forecast_count)
    for stage, estimate in stages.items():
        metrics[f"{stage}_seconds"] = estimate["seconds"]
        metrics[f"{stage}_cost_usd"] = estimate["estimated_cost_usd"]

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    run = _cost_run(client, experiment_id, run_key)
    if run is None:
        run = client.create_run(
            experiment_id,
            run_name=f"cost-{run_key}",
            tags={"run_key": run_key, "model_kind": "cost_summary"},
        )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    # A reused run accepts the same param values again, but MLflow (3.17) raises MlflowException
    # when a value changed (for example another instance type).
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
        "cost_per_1000_forecasts_usd": metrics.get("cost_per_1000_forecasts_usd"),
        "stages": stages,
        "total_seconds": total_seconds,
        "total_cost_usd": total_cost,
    }


def _cost_run(client, experiment_id: str, run_key: str):
    """Return the newest cost summary run of ``run_key`` in the experiment, or None."""
    from models.registry import check_filter_value

    check_filter_value("run_key", run_key)
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.run_key = '{run_key}' and tags.model_kind = 'cost_summary'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name)
