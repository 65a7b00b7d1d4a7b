"""Rolling-origin backtest: several forecast windows at the end of each series.

Window ``w`` of ``W`` starts at ``len(target) - (W - w) * horizon``. The model gets the
target before that origin and is scored on the next ``horizon`` points, so the last
window ends with the series. Every model kind is scored on the same windows, and a
model is trained only on data before the first origin, so no window is in-sample.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import ModelInputError
from models.metrics import evaluate_forecasts

logger = logging.getLogger(__name__)

DEFAULT_WINDOWS = 3


@dataclass(frozen=True)
class Window:
    """One forecast origin: the contexts before it and the actual values after it."""

    index: int
    contexts: list[dict]
    actuals: list[np.ndarray]


def window_count(records: Sequence[dict], horizon: int, windows: int, min_context: int) -> int:
    """Return how many of ``windows`` fit in every series with ``min_context`` points before."""
    if windows < 1:
        raise ModelInputError(f"windows={windows} is invalid; use 1 or more")
    if not records:
        raise ModelInputError("no series to backtest; the test channel is empty")
    shortest = min(len(r["target"]) for r in records)
    fitting = (shortest - min_context) // horizon
    if fitting < 1:
        raise ModelInputError(
            f"the shortest series has {shortest} points, fewer than min_context + horizon = "
            f"{min_context + horizon}; lower prediction_length or collect more data"
        )
    return min(windows, fitting)


def rolling_windows(records: Sequence[dict], horizon: int, windows: int) -> list[Window]:
    """Cut ``windows`` consecutive origins of ``horizon`` steps from the end of each record."""
    result = []
    for index in range(windows):
        back = (windows - index) * horizon
        contexts, actuals = [], []
        for record in records:
            target = np.asarray(record["target"], dtype=float)
            cut = target.size - back
            contexts.append({**record, "target": target[:cut]})
            actuals.append(target[cut : cut + horizon])
        result.append(Window(index=index, contexts=contexts, actuals=actuals))
    return result


def training_records(records: Sequence[dict], horizon: int, windows: int) -> list[dict]:
    """Return each record cut before the first window's origin, for out-of-sample training."""
    back = windows * horizon
    return [
        {**record, "target": np.asarray(record["target"], dtype=float)[:-back]}
        for record in records
    ]


def backtest(
    forecaster: Callable[[list[dict]], list[dict]],
    windows: Sequence[Window],
    season_length: int,
    series_ids: Sequence[str] | None = None,
) -> dict:
    """Score ``forecaster`` on every window and pool the windows into one figure per metric.

    Args:
        forecaster: takes the contexts of one window and returns DeepAR output objects.
        windows: the windows of :func:`rolling_windows`.
        season_length: season in steps for MASE, capped per series at half its context.
        series_ids: names of the series in the per-series metrics; indices by default.

    Returns:
        ``metrics`` (pooled over all windows and series), ``windows`` (metrics per
        window), ``series`` (metrics per series over its windows) and ``forecasts``
        (per window, the forecasts in series order).
    """
    all_actuals, all_forecasts, all_insamples, all_seasons = [], [], [], []
    per_window, forecasts_by_window = [], []
    series_count = len(windows[0].contexts) if windows else 0
    ids = list(series_ids) if series_ids else [str(i) for i in range(series_count)]
    by_series: list[dict[str, list]] = [
        {"actuals": [], "forecasts": [], "insamples": [], "seasons": []} for _ in ids
    ]
    for window in windows:
        forecasts = forecaster(window.contexts)
        if len(forecasts) != len(window.contexts):
            raise ModelInputError(
                f"forecaster returned {len(forecasts)} forecasts for {len(window.contexts)} "
                f"series in window {window.index}"
            )
        insamples = [c["target"] for c in window.contexts]
        seasons = [min(season_length, max(1, len(x) // 2)) for x in insamples]
        per_window.append(evaluate_forecasts(window.actuals, forecasts, insamples, seasons))
        forecasts_by_window.append(forecasts)
        all_actuals += window.actuals
        all_forecasts += forecasts
        all_insamples += insamples
        all_seasons += seasons
        for position, bucket in enumerate(by_series):
            bucket["actuals"].append(window.actuals[position])
            bucket["forecasts"].append(forecasts[position])
            bucket["insamples"].append(insamples[position])
            bucket["seasons"].append(seasons[position])
    pooled = evaluate_forecasts(all_actuals, all_forecasts, all_insamples, all_seasons)
    series = {
        series_id: evaluate_forecasts(
            bucket["actuals"], bucket["forecasts"], bucket["insamples"], bucket["seasons"]
        )
        for series_id, bucket in zip(ids, by_series, strict=True)
    }
    return {
        "metrics": pooled,
        "windows": per_window,
        "series": series,
        "forecasts": forecasts_by_window,
    }


def score(metrics: Mapping[str, float] | None) -> float:
    """Return the mean wQL used to rank models, with NaN or a missing value as infinity."""
    value = (metrics or {}).get("mean_wql")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.inf
    return float(value)


def data_hash(*payloads: bytes) -> str:
    """Return the SHA-256 of the given channel files, in order, as hex."""
    digest = hashlib.sha256()
    for payload in payloads:
        digest.update(len(payload).to_bytes(8, "big"))
        digest.update(payload)
    return digest.hexdigest()
