"""Forecast accuracy metrics: weighted quantile loss, MASE and interval coverage.

Definitions follow GluonTS's ``Evaluator``. Points whose actual value is NaN are left
out of every sum and count. Series-level inputs are lists of equal-length arrays,
one per series, so several series are pooled in one figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from models.errors import ModelInputError

QUANTILES = ("0.1", "0.5", "0.9")


def quantile_loss(actual: np.ndarray, forecast: np.ndarray, level: float) -> float:
    """Return ``2 * sum(|(y - q) * (1{y <= q} - level)|)`` over the non-NaN actuals."""
    actual, forecast = _aligned(actual, forecast)
    mask = ~np.isnan(actual)
    error = actual[mask] - forecast[mask]
    indicator = (actual[mask] <= forecast[mask]).astype(float)
    return float(2.0 * np.sum(np.abs(error * (indicator - level))))


def weighted_quantile_loss(
    actuals: Sequence[np.ndarray], forecasts: Sequence[np.ndarray], level: float
) -> float:
    """Return the quantile loss of all series divided by the sum of ``|y|``.

    Returns NaN when no actual value is known or all known values are 0.
    """
    _check_pairs(actuals, forecasts)
    loss = sum(quantile_loss(a, f, level) for a, f in zip(actuals, forecasts, strict=True))
    scale = sum(float(np.nansum(np.abs(np.asarray(a, dtype=float)))) for a in actuals)
    return loss / scale if scale > 0 else math.nan


def seasonal_error(insample: np.ndarray, seasonality: int) -> float:
    """Return the mean ``|y[t] - y[t - m]|`` of the in-sample series, skipping NaN pairs.

    When the series is not longer than ``m``, the lag-1 difference is used instead, as
    GluonTS does. Returns NaN when no pair of known values exists.
    """
    if seasonality < 1:
        raise ModelInputError(f"seasonality={seasonality} is invalid; use a positive integer")
    values = np.asarray(insample, dtype=float)
    lag = seasonality if len(values) > seasonality else 1
    diffs = np.abs(values[lag:] - values[:-lag])
    diffs = diffs[~np.isnan(diffs)]
    return float(np.mean(diffs)) if diffs.size else math.nan


def mase(
    actuals: Sequence[np.ndarray],
    forecasts: Sequence[np.ndarray],
    insamples: Sequence[np.ndarray],
    seasonality: int | Sequence[int],
) -> float:
    """Return the mean over series of MAE divided by the in-sample seasonal error.

    ``seasonality`` is one season length for all series or one per series. Series
    without a known actual or with a seasonal error of 0 or NaN are left out, and NaN
    is returned when no series remains.
    """
    _check_pairs(actuals, forecasts)
    if len(insamples) != len(actuals):
        raise ModelInputError(
            f"got {len(insamples)} in-sample series for {len(actuals)} actual series; "
            "pass one in-sample series per forecast"
        )
    if isinstance(seasonality, int):
        seasonalities = [seasonality] * len(actuals)
    else:
        seasonalities = list(seasonality)
        if len(seasonalities) != len(actuals):
            raise ModelInputError(
                f"got {len(seasonalities)} seasonalities for {len(actuals)} series; "
                "pass one int or one per series"
            )
    scores = []
    for actual, forecast, insample, season in zip(
        actuals, forecasts, insamples, seasonalities, strict=True
    ):
        actual, forecast = _aligned(actual, forecast)
        mask = ~np.isnan(actual)
        scale = seasonal_error(insample, season)
        if not mask.any() or not scale > 0:
            continue
        scores.append(float(np.mean(np.abs(actual[mask] - forecast[mask]))) / scale)
    return float(np.mean(scores)) if scores else math.nan


def interval_coverage(
    actuals: Sequence[np.ndarray], lowers: Sequence[np.ndarray], uppers: Sequence[np.ndarray]
) -> float:
    """Return the fraction of known actuals with ``lower <= y <= upper``, NaN if none is known."""
    _check_pairs(actuals, lowers)
    _check_pairs(actuals, uppers)
    inside = 0
    known = 0
    for actual, lower, upper in zip(actuals, lowers, uppers, strict=True):
        actual, lower = _aligned(actual, lower)
        _, upper = _aligned(actual, upper)
        mask = ~np.isnan(actual)
        known += int(mask.sum())
        inside += int(((lower[mask] <= actual[mask]) & (actual[mask] <= upper[mask])).sum())
    return inside / known if known else math.nan


def evaluate_forecasts(
    actuals: Sequence[np.ndarray],
    forecasts: Sequence[Mapping],
    insamples: Sequence[np.ndarray],
    seasonality: int | Sequence[int],
) -> dict[str, float]:
    """Compute the metrics that the pipeline logs from DeepAR output objects.

    MASE uses the 0.5 quantile as the point forecast, and the 80% interval runs from
    the 0.1 to the 0.9 quantile.

    Returns:
        ``wql_0.1``, ``wql_0.5``, ``wql_0.9``, ``mean_wql``, ``mase`` and ``coverage_80``.
    """
    by_level = {
        key: [np.asarray(f["quantiles"][key], dtype=float) for f in forecasts] for key in QUANTILES
    }
    result = {
        f"wql_{key}": weighted_quantile_loss(actuals, by_level[key], float(key))
        for key in QUANTILES
    }
    result["mean_wql"] = float(np.mean([result[f"wql_{key}"] for key in QUANTILES]))
    result["mase"] = mase(actuals, by_level["0.5"], insamples, seasonality)
    result["coverage_80"] = interval_coverage(actuals, by_level["0.1"], by_level["0.9"])
    return result


def _aligned(actual, forecast) -> tuple[np.ndarray, np.ndarray]:
    actual = np.asarray(actual, dtype=float)
    forecast = np.asarray(forecast, dtype=float)
    if actual.shape != forecast.shape:
        raise ModelInputError(
            f"actual shape {actual.shape} differs from forecast shape {forecast.shape}; "
            "compare forecasts with the same number of steps as the actuals"
        )
    return actual, forecast


def _check_pairs(actuals: Sequence, forecasts: Sequence) -> None:
    if len(actuals) != len(forecasts):
        raise ModelInputError(
            f"got {len(forecasts)} forecasts for {len(actuals)} actual series; "
            "pass one forecast per series"
        )
