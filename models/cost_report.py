"""Monthly cost of four serving designs for one workload, and the published claims checked.

The designs, all with one DeepAR training job per training run:

``always_on``
    A real-time SageMaker endpoint sized for the peak request rate, training on demand.
``batch``
    On-demand batch transform of every device per batch run; clients read the stored
    forecasts from S3. Training on demand.
``batch_spot``
    ``batch`` with training on managed Spot and batch inference on Spot (as a training
    job) when that prices lower.
``hybrid_cache``
    ``batch_spot`` plus a Redis cache node; cache misses are computed on a pay-per-use
    runtime priced as serverless invocations.

Every price comes from the prices file, and every workload number is an input. The
defaults are assumptions stated in :class:`Workload`, not measurements of a deployment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from models.cost import load_prices, price
from models.errors import ModelInputError

DESIGNS = ("always_on", "batch", "batch_spot", "hybrid_cache")
HOURS_PER_MONTH = 730.0
DAYS_PER_MONTH = 30.4
CLAIM_ENDPOINT_SAVING = 0.42
CLAIM_SPOT_JOB_SAVING = 0.51
# "about 42%" counts as supported within this many percentage points.
CLAIM_TOLERANCE = 0.05
PAYLOAD_SIZES_KB = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)


# Workload fields that are shares of a whole; the others are counts, sizes or durations.
SHARE_FIELDS = frozenset({"cache_hit_rate", "interruption_rate", "endpoint_utilization"})


@dataclass(frozen=True)
class Workload:
    """Request volume, job sizes and the per-request compute model of one deployment.

    ``base_inference_ms`` is close to the single-series DeepAR predict p50 measured
    locally (GluonTS torch, 100 samples, 2 CPU cores). ``inference_ms_per_kb``,
    ``startup_seconds``, ``peak_to_mean`` and the rest are assumptions.
    """

    devices: int = 500
    requests_per_day: int = 200_000
    payload_kb: float = 4.0
    batch_runs_per_day: int = 24
    training_runs_per_day: int = 1
    training_seconds: float = 600.0
    training_instance_type: str = "ml.m5.xlarge"
    endpoint_instance_type: str = "ml.m5.large"
    endpoint_min_instances: int = 1
    transform_instance_type: str = "ml.m5.large"
    base_inference_ms: float = 30.0
    inference_ms_per_kb: float = 2.0
    endpoint_utilization: float = 0.5
    peak_to_mean: float = 3.0
    startup_seconds: float = 180.0
    interruption_rate: float = 0.1
    cache_hit_rate: float = 0.94
    cache_node_type: str = "cache.t3.small"
    serverless_memory_gb: float = 1.0

    def __post_init__(self) -> None:
        """Reject negative sizes and counts and shares outside [0, 1].

        Raises:
            ModelInputError: a field is out of range, named with its value.
        """
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, str):
                continue
            if item.name in SHARE_FIELDS:
                if not 0.0 <= value <= 1.0:
                    raise ModelInputError(
                        f"{item.name}={value} is outside [0, 1]; use a share such as 0.94"
                    )
            elif not value >= 0:
                raise ModelInputError(f"{item.name}={value} is negative; use a value of 0 or more")
        if self.endpoint_utilization == 0:
            raise ModelInputError("endpoint_utilization=0 is invalid; use a share above 0")

    def request_seconds(self, payload_kb: float | None = None) -> float:
        """Return the compute seconds of one forecast for a payload of ``payload_kb``."""
        size = self.payload_kb if payload_kb is None else payload_kb
        return (self.base_inference_ms + self.inference_ms_per_kb * size) / 1000.0


def design_costs(workload: Workload, prices: Mapping[str, Mapping] | None = None) -> dict:
    """Return the monthly USD of each design, split into parts, with per-request figures.

    Returns:
        Per design: ``monthly_usd``, ``parts`` (USD per component), ``per_1000_requests``
        and ``per_batch_job_usd`` (one training plus one inference, for the batch designs).
    """
    table = load_prices() if prices is None else prices
    w = workload
    savings = price("sagemaker.spot_savings", table)
    spot_factor = (1.0 - savings) * (1.0 + w.interruption_rate)
    requests = w.requests_per_day * DAYS_PER_MONTH
    request_seconds = w.request_seconds()

    training_hour = price(f"sagemaker.training.{w.training_instance_type}", table)
    training_job = w.training_seconds / 3600.0 * training_hour
    training_runs = w.training_runs_per_day * DAYS_PER_MONTH
    inference_seconds = w.startup_seconds + w.devices * request_seconds
    transform_job = (
        inference_seconds
        / 3600.0
        * price(f"sagemaker.transform.{w.transform_instance_type}", table)
    )
    spot_inference_job = (
        inference_seconds
        / 3600.0
        * price(f"sagemaker.training.{w.transform_instance_type}", table)
        * spot_factor
    )
    batch_runs = w.batch_runs_per_day * DAYS_PER_MONTH

    peak_rps = w.requests_per_day / 86400.0 * w.peak_to_mean
    instances = max(
        w.endpoint_min_instances, math.ceil(peak_rps * request_seconds / w.endpoint_utilization)
    )
    endpoint = (
        instances * HOURS_PER_MONTH * price(f"sagemaker.hosting.{w.endpoint_instance_type}", table)
    )
    s3_reads = requests / 1000.0 * price("s3.get_requests", table)
    cache_node = HOURS_PER_MONTH * price(f"elasticache.{w.cache_node_type}", table)
    misses = requests * (1.0 - w.cache_hit_rate)
    miss_compute = misses / 1e6 * price("lambda.requests", table) + misses * (
        request_seconds * w.serverless_memory_gb * price("lambda.gb_second", table)
    )

    spot_inference = min(transform_job, spot_inference_job)
    parts = {
        "always_on": {
            "endpoint": endpoint,
            "training": training_job * training_runs,
        },
        "batch": {
            "training": training_job * training_runs,
            "batch_inference": transform_job * batch_runs,
            "s3_reads": s3_reads,
        },
        "batch_spot": {
            "training": training_job * spot_factor * training_runs,
            "batch_inference": spot_inference * batch_runs,
            "s3_reads": s3_reads,
        },
        "hybrid_cache": {
            "training": training_job * spot_factor * training_runs,
            "batch_inference": spot_inference * batch_runs,
            "cache_node": cache_node,
            "cache_miss_compute": miss_compute,
        },
    }
    # One batch job = one training plus the inference runs it serves until the next one.
    runs_per_training = max(1.0, w.batch_runs_per_day / max(1, w.training_runs_per_day))
    per_job = {
        "batch": training_job + transform_job * runs_per_training,
        "batch_spot": training_job * spot_factor + spot_inference * runs_per_training,
    }
    result = {}
    for design in DESIGNS:
        monthly = sum(parts[design].values())
        result[design] = {
            "monthly_usd": monthly,
            "parts": parts[design],
            "per_1000_requests": monthly / requests * 1000.0 if requests else math.nan,
            "per_batch_job_usd": per_job.get(design),
        }
    result["always_on"]["endpoint_instances"] = instances
    result["batch_spot"]["spot_inference_chosen"] = spot_inference_job < transform_job
    return result


def payload_sweep(
    workload: Workload,
    sizes_kb: Sequence[float] = PAYLOAD_SIZES_KB,
    prices: Mapping[str, Mapping] | None = None,
) -> dict[str, list[float]]:
    """Return the cost per 1,000 requests of each design for each payload size."""
    sweep: dict[str, list[float]] = {design: [] for design in DESIGNS}
    for size in sizes_kb:
        costs = design_costs(replace(workload, payload_kb=float(size)), prices)
        for design in DESIGNS:
            sweep[design].append(costs[design]["per_1000_requests"])
    return sweep


def spot_saving_by_discount(
    workload: Workload,
    prices: Mapping[str, Mapping],
    discounts: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
) -> dict[str, float]:
    """Return the per-batch-job Spot saving for each assumed Spot discount."""
    result = {}
    for discount in discounts:
        table = dict(prices)
        table["sagemaker.spot_savings"] = {**table["sagemaker.spot_savings"], "usd": discount}
        costs = design_costs(workload, table)
        result[f"{discount:.2f}"] = 1.0 - (
            costs["batch_spot"]["per_batch_job_usd"] / costs["batch"]["per_batch_job_usd"]
        )
    return result


def _verdict(measured: float, claim: float) -> str:
    if abs(measured - claim) <= CLAIM_TOLERANCE:
        return "supports"
    if measured > claim:
        return "does not match (the saving here is larger than claimed)"
    return "contradicts"


def _difference(saving: float) -> str:
    """Word a saving (1 - cost / reference cost) as "N% less", "N% more" or "about the same"."""
    if math.isnan(saving):
        return "an unknown amount"
    percent = round(abs(saving) * 100)
    if percent == 0:
        return "about the same"
    return f"{percent}% {'less' if saving > 0 else 'more'}"


def _compared_with(saving: float, reference: str, qualifier: str = "") -> str:
    """Return "N% less QUALIFIER than REFERENCE", "N% more ..." or "about the same ... as ..."."""
    if math.isnan(saving):
        return f"an unknown amount{qualifier} compared with {reference}"
    difference = _difference(saving)
    if difference == "about the same":
        return f"about the same{qualifier} as {reference}"
    return f"{difference}{qualifier} than {reference}"


def _hybrid_versus_batch(costs: Mapping[str, Any]) -> str:
    batch = costs["batch"]["monthly_usd"]
    hybrid = costs["hybrid_cache"]["monthly_usd"]
    saving = 1.0 - hybrid / batch if batch else math.nan
    compared = _compared_with(saving, "batch alone")
    if saving < 0:
        return (
            f"Hybrid + cache costs {compared}: the cache node and the cache-miss compute add "
            "more than Spot and the avoided S3 reads save, so the cache pays for latency, "
            "not for cost."
        )
    if saving > 0:
        return (
            f"Hybrid + cache costs {compared}: Spot and the avoided S3 reads save more than "
            "the cache node and the cache-miss compute add, so the cache pays for itself."
        )
    return f"Hybrid + cache costs {compared}."


def _spot_source(costs: Mapping[str, Any], spot_saving: float) -> str:
    if not spot_saving > 0:
        return (
            "Batch transform has no Spot option, and Spot saves nothing here, because the "
            "assumed Spot discount does not exceed the cost of rerunning interrupted jobs."
        )
    if costs["batch_spot"].get("spot_inference_chosen"):
        return (
            "Batch transform has no Spot option, so the saving comes from Spot training and "
            "Spot inference run as a training job."
        )
    return (
        "Batch transform has no Spot option, and Spot inference run as a training job "
        "prices higher than batch transform here, so the saving comes from Spot training."
    )


def check_claims(
    costs: Mapping[str, Any],
    sweep: Mapping[str, list[float]],
    spot_sensitivity: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Compare the designs' figures with the two published claims and word the verdicts.

    A measured saving within :data:`CLAIM_TOLERANCE` of the claim supports it, a lower
    one contradicts it, and a higher one does not match it either, because the claim
    then understates what this model computes. Every sentence of ``statements`` is
    worded from the figures, so a negative saving reads as a higher cost.
    """
    always_on = costs["always_on"]["monthly_usd"]
    savings = {
        design: 1.0 - costs[design]["monthly_usd"] / always_on if always_on else math.nan
        for design in ("batch", "batch_spot", "hybrid_cache")
    }
    sweep_savings = [
        1.0 - h / a for h, a in zip(sweep["hybrid_cache"], sweep["always_on"], strict=True) if a
    ]
    batch_job = costs["batch"]["per_batch_job_usd"]
    spot_job = costs["batch_spot"]["per_batch_job_usd"]
    spot_saving = 1.0 - spot_job / batch_job if batch_job else math.nan
    endpoint_verdict = _verdict(savings["hybrid_cache"], CLAIM_ENDPOINT_SAVING)
    spot_verdict = _verdict(spot_saving, CLAIM_SPOT_JOB_SAVING)
    endpoint = "an always-on endpoint"
    payload_range = ""
    if sweep_savings:
        payload_range = (
            f" Over payloads of {PAYLOAD_SIZES_KB[0]}-{PAYLOAD_SIZES_KB[-1]} KB the difference "
            f"ranges from {_difference(min(sweep_savings))} to "
            f"{_difference(max(sweep_savings))}."
        )
    hybrid_endpoint = _compared_with(savings["hybrid_cache"], endpoint)
    spot_on_demand = _compared_with(spot_saving, "on demand", qualifier=" on Spot")
    statements = [
        (
            f"Per month, hybrid + cache costs {hybrid_endpoint} for this workload."
            f"{payload_range} This {endpoint_verdict} the claim 'about 42% cheaper than "
            "always-on endpoints'."
        ),
        (
            f"Against the same endpoint, batch costs {_difference(savings['batch'])} and "
            f"batch + Spot {_difference(savings['batch_spot'])}. {_hybrid_versus_batch(costs)}"
        ),
        (
            "One batch job (one training plus the inference runs until the next training) "
            f"costs {spot_on_demand}. This {spot_verdict} "
            f"the claim 'up to 51% cheaper per batch job on Spot'. "
            f"{_spot_source(costs, spot_saving)}"
        ),
    ]
    if spot_sensitivity:
        listed = ", ".join(
            f"{float(k):.0%} gives {_difference(v)}" for k, v in spot_sensitivity.items()
        )
        statements.append(
            "The Spot figure follows the assumed Spot discount, which the Spot market sets. "
            f"Per batch job, a discount of {listed}."
        )
    return {
        "savings_vs_always_on": savings,
        "endpoint_saving": savings["hybrid_cache"],
        "endpoint_saving_range": [min(sweep_savings), max(sweep_savings)] if sweep_savings else [],
        "endpoint_claim": CLAIM_ENDPOINT_SAVING,
        "endpoint_verdict": endpoint_verdict,
        "spot_job_saving": spot_saving,
        "spot_saving_by_discount": dict(spot_sensitivity or {}),
        "spot_claim": CLAIM_SPOT_JOB_SAVING,
        "spot_verdict": spot_verdict,
        "statements": statements,
    }


def cost_chart(path: Path, sweep: Mapping[str, list[float]], sizes_kb=PAYLOAD_SIZES_KB) -> Path:
    """Draw the cost per 1,000 requests of each design against payload size into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for design in DESIGNS:
        axis.plot(list(sizes_kb), sweep[design], marker="o", markersize=3, label=design)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("payload per request (KB)")
    axis.set_ylabel("USD per 1,000 requests")
    axis.set_title("Estimated cost per 1,000 forecast requests")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def build_report(workload: Workload, prices_path: Path | None = None) -> dict[str, Any]:
    """Return the workload, the costs of each design, the payload sweep and the claim checks."""
    prices = load_prices(prices_path)
    costs = design_costs(workload, prices)
    sweep = payload_sweep(workload, prices=prices)
    return {
        "workload": asdict(workload),
        "prices_file": str(prices_path or "models/prices.json"),
        "costs": costs,
        "payload_kb": list(PAYLOAD_SIZES_KB),
        "sweep_per_1000_requests": sweep,
        "claims": check_claims(costs, sweep, spot_saving_by_discount(workload, prices)),
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """Format a report of :func:`build_report` as Markdown."""
    lines = ["# Cost report", "", "Estimates from the prices file; not a bill.", ""]
    lines += ["| design | USD per month | USD per 1,000 requests | USD per batch job |"]
    lines += ["|---|---:|---:|---:|"]
    for design in DESIGNS:
        entry = report["costs"][design]
        job = entry["per_batch_job_usd"]
        lines.append(
            f"| {design} | {entry['monthly_usd']:.2f} | {entry['per_1000_requests']:.4f} | "
            f"{'-' if job is None else f'{job:.4f}'} |"
        )
    lines += ["", "## Claims", ""]
    lines += [f"- {statement}" for statement in report["claims"]["statements"]]
    lines += ["", "## Workload", ""]
    lines += [f"- {key}: {value}" for key, value in report["workload"].items()]
    return "\n".join(lines) + "\n"
