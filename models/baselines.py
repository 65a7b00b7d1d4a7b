"""Statistical baselines via statsforecast: seasonal naive and AutoETS.

Forecasts come back in the DeepAR output format. The 0.1 and 0.9 quantiles are the
bounds of statsforecast's 80% prediction interval, which assumes normal residuals,
and the 0.5 quantile and the mean are the point forecast.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from models.errors import ModelInputError

logger = logging.getLogger(__name__)

BASELINE_MODELS = {"seasonal_naive": "SeasonalNaive", "auto_ets": "AutoETS"}
# AutoETS fits only the last ETS_MAX_POINTS points, and seasonal ETS only for seasons up
# to ETS_MAX_SEASON steps, as R's ets() does. Measured with statsforecast 2.1 on 2 CPU
# cores: a 288-step season on 5,000 points took ~125 s per series, non-seasonal ETS on
# 5,000 points ~3 s, and non-seasonal ETS on 500 points ~0.1 s.
ETS_MAX_POINTS = 500
ETS_MAX_SEASON = 24
# AutoETS searches additive-error models only ("AZZ"). With multiplicative errors allowed
# ("ZZZ"), the 80% intervals on the shared 5-minute group blew up: pooled mean wQL 5,149
# against 1.15 with "AZZ" (statsforecast 2.1, same windows), and the search ran 2x slower.
ETS_MODEL = "AZZ"


def season_length_for(freq: str, series_length: int | None = None) -> int:
    """Return the season length in steps for data at ``freq``, capped by the series length.

    Sub-minute data uses one minute of steps (60 for ``1s``), data from one minute up
    to below one day uses one day of steps (288 for ``5min``, 24 for ``h``), daily
    data 7, weekly 52 and monthly 12. Other multi-day steps use 1. With
    ``series_length`` the result is at most ``series_length // 2``, so every series
    contains at least two seasons. The result is never below 1.
    """
    offset = pd.tseries.frequencies.to_offset(freq)
    name = offset.name.split("-")[0]
    if name in ("W",):
        season = 52
    elif name in ("ME", "MS", "M"):
        season = 12
    else:
        try:
            step = pd.Timedelta(offset)
        except ValueError:
            raise ModelInputError(
                f"freq={freq!r} has no fixed step; use a frequency such as '5min', 'h' or 'D'"
            ) from None
        if step < pd.Timedelta(minutes=1):
            season = max(1, round(pd.Timedelta(minutes=1) / step))
        elif step < pd.Timedelta(days=1):
            season = max(1, round(pd.Timedelta(days=1) / step))
        else:
            season = 7 if step == pd.Timedelta(days=1) else 1
    if series_length is not None:
        season = min(season, max(1, series_length // 2))
    return int(season)


def fill_gaps(target: np.ndarray) -> np.ndarray:
    """Fill NaN by linear interpolation and the edges by the nearest known value.

    Raises:
        ModelInputError: every value is NaN.
    """
    values = pd.Series(np.asarray(target, dtype=float))
    if values.isna().all():
        raise ModelInputError("target has no known value; a baseline needs at least one")
    return values.interpolate(limit_direction="both").to_numpy()


def forecast_baseline(
    records: Sequence[dict],
    horizon: int,
    season_length: int,
    model: str = "seasonal_naive",
) -> list[dict]:
    """Forecast ``horizon`` steps after each record's target, in input order.

    Each series uses ``season_length`` capped at half its length. NaN gaps are filled
    by :func:`fill_gaps` first, because statsforecast rejects missing values.
    ``auto_ets`` fits only the last :data:`ETS_MAX_POINTS` points and drops seasons
    longer than :data:`ETS_MAX_SEASON` steps, so it stays fast on long, finely sampled
    series.

    Args:
        records: DeepAR records with a float ``target`` array.
        horizon: number of steps to forecast.
        season_length: season length in steps, usually from :func:`season_length_for`.
        model: ``seasonal_naive`` or ``auto_ets``.

    Returns:
        One DeepAR output object (``mean`` and quantiles ``0.1``, ``0.5``, ``0.9``) per record.
    """
    if model not in BASELINE_MODELS:
        raise ModelInputError(
            f"baseline model {model!r} is unknown; use one of {list(BASELINE_MODELS)}"
        )
    if horizon < 1:
        raise ModelInputError(f"horizon={horizon} is invalid; use a positive number of steps")
    by_season: dict[int, list[int]] = {}
    filled = []
    for index, record in enumerate(records):
        target = np.asarray(record["target"], dtype=float)
        if target.size < 2:
            raise ModelInputError(
                f"series {index} has {target.size} points; a baseline needs at least 2"
            )
        try:
            filled.append(fill_gaps(target))
        except ModelInputError as exc:
            raise ModelInputError(f"series {index}: {exc}") from None
        effective = min(season_length, max(1, target.size // 2))
        if model == "auto_ets":
            filled[-1] = filled[-1][-ETS_MAX_POINTS:]
            effective = min(effective, max(1, filled[-1].size // 2))
            if effective > ETS_MAX_SEASON:
                effective = 1
        by_season.setdefault(effective, []).append(index)

    results: list[dict | None] = [None] * len(records)
    for season, indices in by_season.items():
        frame = _long_frame([filled[i] for i in indices], indices)
        for index, forecast in _run_statsforecast(frame, horizon, season, model).items():
            results[index] = forecast
    logger.debug(
        "forecast %d series with %s over %d season lengths", len(records), model, len(by_season)
    )
    return [r for r in results if r is not None]


def _long_frame(targets: list[np.ndarray], indices: list[int]) -> pd.DataFrame:
    # Integer time stamps avoid calendar arithmetic; statsforecast accepts them with freq=1.
    return pd.DataFrame(
        {
            "unique_id": np.concatenate(
                [np.full(t.size, i) for t, i in zip(targets, indices, strict=True)]
            ),
            "ds": np.concatenate([np.arange(t.size) for t in targets]),
            "y": np.concatenate(targets),
        }
    )


def _run_statsforecast(
    frame: pd.DataFrame, horizon: int, season: int, model: str
) -> dict[int, dict]:
    from statsforecast import StatsForecast
    from statsforecast import models as sf_models

    name = BASELINE_MODELS[model]
    if model == "auto_ets":
        estimator = sf_models.AutoETS(season_length=season, model=ETS_MODEL)
    else:
        estimator = getattr(sf_models, name)(season_length=season)
    forecaster = StatsForecast(models=[estimator], freq=1, n_jobs=1)
    output = forecaster.forecast(df=frame, h=horizon, level=[80])
    results = {}
    for unique_id, rows in output.groupby("unique_id", sort=False):
        rows = rows.sort_values("ds")
        point = rows[name].to_numpy(dtype=float).tolist()
        results[int(unique_id)] = {
            "mean": point,
            "quantiles": {
                "0.1": rows[f"{name}-lo-80"].to_numpy(dtype=float).tolist(),
                "0.5": list(point),
                "0.9": rows[f"{name}-hi-80"].to_numpy(dtype=float).tolist(),
            },
        }
    return results
