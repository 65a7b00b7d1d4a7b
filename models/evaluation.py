"""Offline accuracy of local DeepAR against the baselines on the shared NAB and SKAB series.

:func:`prepare_shared_series` runs the preprocessing job's pandas engine on the files
read in place (nothing is copied into the project) and writes the prepared layout to a
folder. :func:`backtest_prepared` trains DeepAR per frequency group and scores it with
seasonal naive and AutoETS on the same rolling windows, without MLflow, so benchmarks
and reports can run it on any machine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models.errors import ModelInputError

logger = logging.getLogger(__name__)

KINDS = ("deepar", "seasonal_naive", "auto_ets")


def shared_raw_frame(data_dir: Path, datasets: Sequence[str] = ("nab", "skab")) -> pd.DataFrame:
    """Read every series of ``datasets`` under ``data_dir`` into the raw zone's long format.

    Returns:
        Columns ``device_id``, ``timestamp``, ``metric`` and ``value``, one row per reading.
    """
    from etl.readers import iter_dataset

    frames = []
    for dataset in datasets:
        for series, _report in iter_dataset(dataset, data_dir):
            # NAB frames have a metric named "value", so melt into temporary names.
            long = series.frame.melt(
                id_vars=["timestamp"], var_name="_metric", value_name="_value"
            ).rename(columns={"_metric": "metric", "_value": "value"})
            long = long.dropna(subset=["value"])
            frames.append(long.assign(device_id=series.device_id))
    if not frames:
        raise ModelInputError(f"no series of {list(datasets)} found under {data_dir}")
    return pd.concat(frames, ignore_index=True)[["device_id", "timestamp", "metric", "value"]]


def prepare_shared_series(
    data_dir: Path,
    folder: Path,
    datasets: Sequence[str] = ("nab", "skab"),
    prediction_length: int = 12,
    context_length: int = 48,
    devices: Sequence[str] | None = None,
) -> tuple[str, dict]:
    """Prepare the shared series with the preprocessing job and return the URL and summary."""
    from etl.glue_job import PrepareConfig, prepare_devices_pandas, write_outputs

    raw = shared_raw_frame(Path(data_dir), datasets)
    if devices is not None:
        raw = raw[raw["device_id"].isin(list(devices))]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = PrepareConfig(
        raw_url=folder.as_uri(),
        output_url=(folder / "prepared").as_uri(),
        prediction_length=prediction_length,
        context_length=context_length,
        run_key="shared-series",
    )
    results = prepare_devices_pandas(raw, config)
    summary = write_outputs(results, config)
    return config.output_url, summary


def backtest_prepared(
    prepared_url: str,
    workdir: Path,
    config_overrides: dict | None = None,
    windows: int = 3,
) -> dict:
    """Train DeepAR per group and backtest it with both baselines on the same windows.

    Returns:
        ``groups`` (per group: series count, windows, DeepAR training seconds, points
        seen, metrics per kind), ``pooled`` (metrics per kind over every window of every
        group) and ``training_seconds`` (DeepAR, summed over groups).
    """
    from models.backtest import backtest, rolling_windows, training_records, window_count
    from models.baselines import forecast_baseline, season_length_for
    from models.config import DeepARConfig
    from models.local_deepar import predict_deepar, train_deepar
    from models.metrics import evaluate_forecasts
    from models.prepared import group_specs, read_manifest, read_records

    groups = {}
    pooled = {
        kind: {"actuals": [], "forecasts": [], "insamples": [], "seasons": []} for kind in KINDS
    }
    total_training = 0.0
    for spec in group_specs(read_manifest(prepared_url)):
        config = DeepARConfig.from_overrides(
            {
                "prediction_length": spec.prediction_length,
                "context_length": spec.context_length,
                "time_freq": spec.freq,
            },
            config_overrides,
        )
        horizon = config.prediction_length
        records = read_records(prepared_url, spec.test)
        used = window_count(records, horizon, windows, min_context=horizon + 1)
        cut = rolling_windows(records, horizon, used)
        season = season_length_for(spec.freq)
        train = training_records(records, horizon, used)
        trained = train_deepar(train, spec.freq, config, Path(workdir) / spec.group)
        total_training += trained.training_seconds

        forecasters = {
            "deepar": lambda c, t=trained, f=spec.freq: predict_deepar(
                t.predictor, c, f, t.cardinality
            ),
            "seasonal_naive": lambda c, h=horizon, s=season: forecast_baseline(c, h, s),
            "auto_ets": lambda c, h=horizon, s=season: forecast_baseline(c, h, s, model="auto_ets"),
        }
        group_result = {
            "series": len(records),
            "windows": used,
            "freq": spec.freq,
            "deepar_training_seconds": trained.training_seconds,
            "train_points": int(sum(len(r["target"]) for r in train)),
            "metrics": {},
            "seconds": {},
        }
        for kind in KINDS:
            started = time.perf_counter()
            result = backtest(forecasters[kind], cut, season)
            group_result["seconds"][kind] = time.perf_counter() - started
            group_result["metrics"][kind] = result["metrics"]
            group_result.setdefault("series_mean_wql", {})[kind] = [
                metrics["mean_wql"] for metrics in result["series"].values()
            ]
            for window, forecasts in zip(cut, result["forecasts"], strict=True):
                insamples = [c["target"] for c in window.contexts]
                pooled[kind]["actuals"] += window.actuals
                pooled[kind]["forecasts"] += forecasts
                pooled[kind]["insamples"] += insamples
                pooled[kind]["seasons"] += [min(season, max(1, len(x) // 2)) for x in insamples]
        groups[spec.group] = group_result
        logger.info(
            "group %s: %d series, %d windows, mean_wql deepar %.4f naive %.4f ets %.4f",
            spec.group,
            len(records),
            used,
            group_result["metrics"]["deepar"]["mean_wql"],
            group_result["metrics"]["seasonal_naive"]["mean_wql"],
            group_result["metrics"]["auto_ets"]["mean_wql"],
        )
    pooled_metrics = {
        kind: evaluate_forecasts(
            values["actuals"], values["forecasts"], values["insamples"], values["seasons"]
        )
        for kind, values in pooled.items()
    }
    return {
        "groups": groups,
        "pooled": pooled_metrics,
        "per_series": _per_series_summary(groups),
        "training_seconds": total_training,
    }


def _per_series_summary(groups: dict) -> dict:
    """Return scale-free views: median per-series mean wQL and DeepAR's per-series win rate.

    Pooled wQL divides summed losses by summed ``|y|``, so series with large values
    dominate it. The median and the win rate weigh every series equally.
    """
    scores = {kind: [] for kind in KINDS}
    for info in groups.values():
        for kind in KINDS:
            scores[kind] += info["series_mean_wql"][kind]
    arrays = {kind: np.asarray(values, dtype=float) for kind, values in scores.items()}
    summary = {f"{kind}_median_series_wql": float(np.nanmedian(arrays[kind])) for kind in KINDS}
    for kind in ("seasonal_naive", "auto_ets"):
        known = ~np.isnan(arrays["deepar"]) & ~np.isnan(arrays[kind])
        wins = arrays["deepar"][known] < arrays[kind][known]
        summary[f"deepar_wins_vs_{kind}"] = float(wins.mean()) if known.any() else float("nan")
    return summary


def relative_gap(model: float, baseline: float) -> float:
    """Return how much lower ``model`` is than ``baseline`` as a fraction of the baseline."""
    if not np.isfinite(model) or not np.isfinite(baseline) or baseline == 0:
        return float("nan")
    return 1.0 - model / baseline
