"""Drift of device telemetry against the data the champion was trained on.

Each device gets two input-distribution scores and a residual score. The first is the
population stability index (PSI) over quantile bins of the training data, the second
the two-sample Kolmogorov-Smirnov statistic. The residual score is the mean error of the
cached forecast over the recent readings it covers, in training standard deviations. A device drifts when any
score crosses its limit; the ``drift_monitor`` DAG then requests a retraining run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from saodf.config import Settings, get_settings
from saodf.errors import ConfigError
from saodf.telemetry import format_timestamp

logger = logging.getLogger(__name__)

# PSI above 0.25 is the usual threshold for a significant population shift in credit
# scoring practice. The KS and residual limits are starting points to tune per fleet.
DEFAULT_PSI_LIMIT = 0.25
DEFAULT_KS_LIMIT = 0.3
DEFAULT_RESIDUAL_LIMIT = 3.0
MIN_POINTS = 30


@dataclass(frozen=True)
class DriftLimits:
    psi: float = DEFAULT_PSI_LIMIT
    ks: float = DEFAULT_KS_LIMIT
    residual: float = DEFAULT_RESIDUAL_LIMIT

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"drift limit {name}={value!r} is invalid; use a positive number")


@dataclass
class DeviceDrift:
    device_id: str
    psi: float | None
    ks: float | None
    ks_pvalue: float | None
    residual: float | None
    reference_points: int
    recent_points: int
    drifted: bool = False
    reasons: list[str] = field(default_factory=list)


def _finite(values) -> np.ndarray:
    array = np.asarray(values, dtype="float64")
    return array[np.isfinite(array)]


def population_stability_index(reference, recent, bins: int = 10) -> float:
    """PSI of ``recent`` against quantile bins of ``reference``; 0 means the same distribution."""
    expected = _finite(reference)
    actual = _finite(recent)
    if expected.size == 0 or actual.size == 0:
        raise ValueError("PSI needs finite values in both samples")
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        # A constant reference: any value away from it is a full shift.
        same = np.isclose(actual, expected[0]).mean()
        expected_share = np.array([1.0, 0.0])
        actual_share = np.array([same, 1.0 - same])
    else:
        edges[0], edges[-1] = -np.inf, np.inf
        expected_share = np.histogram(expected, edges)[0] / expected.size
        actual_share = np.histogram(actual, edges)[0] / actual.size
    # A small floor keeps empty bins from giving an infinite PSI.
    expected_share = np.clip(expected_share, 1e-4, None)
    actual_share = np.clip(actual_share, 1e-4, None)
    return float(np.sum((actual_share - expected_share) * np.log(actual_share / expected_share)))


def ks_statistic(reference, recent) -> tuple[float, float]:
    """Return the two-sample Kolmogorov-Smirnov statistic and its p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(_finite(reference), _finite(recent))
    return float(result.statistic), float(result.pvalue)


def residual_score(reference, actual, forecast_mean) -> float | None:
    """Mean forecast error over the covered readings, in reference standard deviations."""
    # NOTE: the scale is the training series' spread, not the champion's residual spread at
    # training time, because models.pipeline logs per-series backtest metrics but no residuals.
    actual = np.asarray(actual, dtype="float64")
    predicted = np.asarray(forecast_mean, dtype="float64")
    mask = np.isfinite(actual) & np.isfinite(predicted)
    scale = float(np.nanstd(_finite(reference)))
    if mask.sum() == 0 or scale == 0.0:
        return None
    return float(abs(np.mean(actual[mask] - predicted[mask])) / scale)


def evaluate_device(
    device_id: str,
    reference,
    recent,
    limits: DriftLimits | None = None,
    residual: float | None = None,
) -> DeviceDrift:
    """Score one device; too few points on either side gives no scores and no drift."""
    limits = limits or DriftLimits()
    expected = _finite(reference)
    actual = _finite(recent)
    if expected.size < MIN_POINTS or actual.size < MIN_POINTS:
        return DeviceDrift(device_id, None, None, None, residual, expected.size, actual.size)
    psi = population_stability_index(expected, actual)
    ks, pvalue = ks_statistic(expected, actual)
    result = DeviceDrift(device_id, psi, ks, pvalue, residual, expected.size, actual.size)
    if psi >= limits.psi:
        result.reasons.append(f"PSI {psi:.3f} >= {limits.psi}")
    if ks >= limits.ks:
        result.reasons.append(f"KS {ks:.3f} >= {limits.ks}")
    if residual is not None and residual >= limits.residual:
        result.reasons.append(f"residual {residual:.2f} sd >= {limits.residual}")
    result.drifted = bool(result.reasons)
    return result


_iso = format_timestamp


def retrain_request(
    results: list[DeviceDrift], end: datetime, start: datetime | None = None
) -> dict[str, Any] | None:
    """Build the asset-event payload that requests retraining, or None without drift.

    The payload has the fields of a window event, with ``[start, end)`` the recent data
    that was scored.
    """
    drifted = sorted(r.device_id for r in results if r.drifted)
    if not drifted:
        return None
    digest = hashlib.sha1(json.dumps([drifted, end.isoformat()]).encode()).hexdigest()[:16]
    return {
        "window_id": f"drift-{digest}",
        "devices": drifted,
        "start": _iso(start or end),
        "end": _iso(end),
        "message_count": 0,
        "reasons": {r.device_id: r.reasons for r in results if r.drifted},
    }


def champion_references(settings: Settings) -> dict[str, dict[str, Any]]:
    """Map each device of a current champion to its training-time series and forecast.

    Reads, per registered model ``{prefix}-{group}`` (local target) or ``{prefix}_{group}``
    (aws target), the ``champion`` version's run key tag, then that run's prepared test
    channel and batch-transform output. A champion whose prepared data is gone is
    logged and left out.
    """
    import fsspec

    from models.output import read_forecast_lines
    from models.registry import client_for
    from saodf import pipeline

    client = client_for(settings.mlflow_tracking_uri)
    references: dict[str, dict[str, Any]] = {}
    prefix = settings.registered_model_prefix
    for model in client.search_registered_models(f"name LIKE '{prefix}%'"):
        if model.name[len(prefix) : len(prefix) + 1] not in ("-", "_"):
            continue
        try:
            version = client.get_model_version_by_alias(model.name, "champion")
        except Exception:  # noqa: BLE001 - a model without a champion is not monitored
            logger.info("registered model %s has no champion alias: not monitored", model.name)
            continue
        run_key = version.tags.get("run_key")
        if not run_key:
            continue
        paths = pipeline.urls(settings, run_key)
        try:
            with fsspec.open(paths["prepared"] + "/manifest.json", "r") as handle:
                manifest = json.load(handle)
        except FileNotFoundError as exc:
            logger.warning(
                "champion %s v%s of run_key %s is not monitored: prepared data not found (%s)",
                model.name,
                version.version,
                run_key,
                exc,
            )
            continue
        for group in manifest["groups"]:
            test_url = f"{paths['prepared']}/{group['test']}"
            with fsspec.open(test_url, "r") as handle:
                lines = [json.loads(line) for line in handle if line.strip()]
            forecasts_url = f"{paths['forecasts']}/{group['group']}/output.jsonl.out"
            try:
                forecasts = read_forecast_lines(forecasts_url)
            except Exception:  # noqa: BLE001 - drift on inputs still works without forecasts
                forecasts = []
            for index, series in enumerate(group["series"]):
                record = lines[index]
                target = [float("nan") if v == "NaN" else float(v) for v in record["target"]]
                references[series["device_id"]] = {
                    "target": target,
                    "metric": series["target_metric"],
                    "freq": group["freq"],
                    "end": series["end"],
                    "forecast": forecasts[index] if index < len(forecasts) else None,
                    "model": f"{model.name} v{version.version}",
                }
    return references


def check_fleet(
    end: datetime,
    window_hours: float = 24.0,
    limits: DriftLimits | None = None,
    settings: Settings | None = None,
) -> tuple[list[DeviceDrift], dict[str, Any] | None]:
    """Score every champion device on its raw readings in ``[end - window_hours, end)``."""
    import pandas as pd

    from saodf import lake

    settings = settings or get_settings()
    references = champion_references(settings)
    if not references:
        return [], None
    start = end - timedelta(hours=window_hours)
    raw = lake.read_raw(settings.lake_url, sorted(references), start, end)
    results = []
    for device_id, reference in sorted(references.items()):
        rows = raw[(raw["device_id"] == device_id) & (raw["metric"] == reference["metric"])]
        recent = rows["value"].to_numpy()
        residual = None
        forecast = reference["forecast"]
        if forecast is not None and len(rows):
            steps = pd.date_range(
                pd.Timestamp(reference["end"]).tz_localize("UTC")
                if pd.Timestamp(reference["end"]).tzinfo is None
                else pd.Timestamp(reference["end"]),
                periods=len(forecast["mean"]) + 1,
                freq=reference["freq"],
            )[1:]
            actual = (
                rows.set_index("timestamp")["value"]
                .resample(reference["freq"])
                .mean()
                .reindex(steps)
            )
            residual = residual_score(reference["target"], actual.to_numpy(), forecast["mean"])
        results.append(evaluate_device(device_id, reference["target"], recent, limits, residual))
    return results, retrain_request(results, end, start)


def log_scores(results: list[DeviceDrift], end: datetime, settings: Settings | None = None) -> str:
    """Record the scores in the MLflow experiment ``drift_monitor``; return the run id."""
    import mlflow

    from models.registry import client_for, ensure_experiment, tracking

    settings = settings or get_settings()
    # An experiment id per run, not mlflow.set_experiment: that one stays active in the
    # process and makes later start_run(run_id=...) calls of other experiments fail.
    experiment_id = ensure_experiment(client_for(settings.mlflow_tracking_uri), "drift_monitor")
    with tracking(settings.mlflow_tracking_uri):
        with mlflow.start_run(
            experiment_id=experiment_id, run_name=f"drift-{end:%Y%m%dT%H%M}"
        ) as run:
            mlflow.set_tags({"end": end.isoformat(), "devices": str(len(results))})
            metrics = {"drifted_devices": float(sum(r.drifted for r in results))}
            for r in results:
                for name in ("psi", "ks", "residual"):
                    value = getattr(r, name)
                    if value is not None:
                        metrics[f"{name}.{r.device_id}"] = float(value)
            mlflow.log_metrics(metrics)
            mlflow.log_dict([asdict(r) for r in results], "drift.json")
            return run.info.run_id
