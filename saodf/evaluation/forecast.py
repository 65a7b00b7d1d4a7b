"""Rolling-origin backtest of DeepAR and the baselines on a dataset in the NAB or SKAB layout.

Each file is one series: its target metric (``value``, else ``temperature``, else the
first metric by name) is cleaned and resampled by the preprocessing job's
``prepare_series`` at the file's inferred frequency. With ``folds`` origins spaced one
horizon apart, fold ``k`` forecasts ``target[o_k : o_k + horizon]`` from ``target[:o_k]``,
where ``o_k = n - (folds - k) * horizon``.

DeepAR (GluonTS, the pipeline's model) is trained once per frequency group on every
series cut at its first origin, so the training data contains no actual of any fold. The
baselines (``models.baselines``) are refitted at every origin. The champion is the model
with the lowest pooled mean weighted quantile loss, the rule the pipeline uses to pick
its registered champion. Metrics come from ``models.metrics``: wQL at 0.1/0.5/0.9,
MASE against the seasonal-naive in-sample error, and coverage of the 80% interval.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saodf.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

MODELS = ("deepar", "seasonal_naive", "auto_ets")
DEFAULT_MODELS = ("deepar", "seasonal_naive")
METRIC_NAMES = ("wql_0.1", "wql_0.5", "wql_0.9", "mean_wql", "mase", "coverage_80")


@dataclass
class Series:
    """One regular series of a dataset file."""

    name: str
    metric: str
    freq: str
    start: pd.Timestamp
    target: np.ndarray


@dataclass
class BacktestConfig:
    """Settings of one backtest."""

    horizon: int = 12
    folds: int = 3
    models: tuple[str, ...] = DEFAULT_MODELS
    context_length: int = 48
    epochs: int = 5
    num_batches_per_epoch: int = 20
    max_series: int | None = None
    charts: int = 8
    seed: int = 42

    def validate(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"models {list(self.models)} are invalid; use some of {list(MODELS)}")
        for name in ("horizon", "folds", "context_length", "epochs", "num_batches_per_epoch"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name}={getattr(self, name)} is invalid; use a positive integer"
                )


@dataclass
class Backtest:
    """Per-series and pooled metrics of every model, with the forecasts of the last fold."""

    dataset: str
    config: BacktestConfig
    series: list[Series]
    skipped: list[str]
    per_series: dict[str, dict[str, dict[str, float]]]
    aggregate: dict[str, dict[str, float]]
    champion: str
    seconds: dict[str, float]
    last_fold: dict[str, dict[str, dict]] = field(default_factory=dict)


def load_series(
    root: Path | str, groups: list[str] | None = None
) -> tuple[list[Series], list[str]]:
    """Read every file of a NAB- or SKAB-layout folder as one regular series.

    Returns the series and the names of files skipped, each with its reason.
    """
    from etl.glue_job import choose_target_metric
    from etl.readers import read_nab_series, read_skab_file
    from etl.transforms import prepare_series
    from saodf.evaluation.datasets import SKAB, detect_layout

    root = Path(root)
    layout = detect_layout(root)
    series, skipped = [], []
    group_dirs = sorted(p for p in (root / "data").iterdir() if p.is_dir())
    if groups is not None:
        group_dirs = [p for p in group_dirs if p.name in groups]
        if not group_dirs:
            raise DatasetError(f"none of the groups {groups} exists in {root / 'data'}")
    for group_dir in group_dirs:
        for path in sorted(group_dir.glob("*.csv")):
            name = f"{group_dir.name}/{path.name}"
            frame, _ = read_skab_file(path) if layout == SKAB else read_nab_series(path)
            metrics = [c for c in frame.columns if c not in ("timestamp", "anomaly", "changepoint")]
            metric = choose_target_metric(metrics, "auto")
            if metric is None or frame.empty:
                skipped.append(f"{name}: no metric")
                continue
            try:
                prepared = prepare_series(
                    frame["timestamp"], frame[metric], freq="auto", max_gap=12
                )
            except DatasetError as exc:
                skipped.append(f"{name}: {exc}")
                continue
            target = prepared.frame["target"].to_numpy(dtype=float)
            series.append(
                Series(
                    name,
                    metric,
                    prepared.freq,
                    pd.Timestamp(prepared.frame["timestamp"].iloc[0]),
                    target,
                )
            )
    return series, skipped


def _fold_origins(length: int, config: BacktestConfig) -> list[int]:
    return [length - (config.folds - k) * config.horizon for k in range(config.folds)]


def _record(series: Series, end: int) -> dict:
    return {
        "start": series.start.tz_localize(None).strftime("%Y-%m-%d %H:%M:%S"),
        "target": series.target[:end],
    }


def _forecast_deepar(
    group: list[Series], config: BacktestConfig, workdir: Path
) -> tuple[dict, float]:
    from models.config import DeepARConfig
    from models.local_deepar import predict_deepar, train_deepar

    freq = group[0].freq
    deepar_config = DeepARConfig.from_overrides(
        {
            "prediction_length": config.horizon,
            "context_length": config.context_length,
            "time_freq": freq,
        },
        {
            "epochs": config.epochs,
            "num_batches_per_epoch": config.num_batches_per_epoch,
            "seed": config.seed,
        },
    )
    train = [_record(s, _fold_origins(s.target.size, config)[0]) for s in group]
    trained = train_deepar(train, freq, deepar_config, workdir / f"deepar-{freq}")
    forecasts: dict[str, list[dict]] = {}
    for fold in range(config.folds):
        contexts = [_record(s, _fold_origins(s.target.size, config)[fold]) for s in group]
        outputs = predict_deepar(
            trained.predictor, contexts, freq, trained.cardinality, seed=config.seed
        )
        for item, output in zip(group, outputs, strict=True):
            forecasts.setdefault(item.name, []).append(output)
    return forecasts, trained.training_seconds


def _forecast_baseline(
    group: list[Series], config: BacktestConfig, model: str
) -> tuple[dict, float]:
    from models.baselines import forecast_baseline, season_length_for

    season = season_length_for(group[0].freq)
    forecasts: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for fold in range(config.folds):
        contexts = [_record(s, _fold_origins(s.target.size, config)[fold]) for s in group]
        outputs = forecast_baseline(contexts, config.horizon, season, model)
        for item, output in zip(group, outputs, strict=True):
            forecasts.setdefault(item.name, []).append(output)
    return forecasts, time.perf_counter() - started


def _metrics(
    series: Sequence[Series], forecasts: dict[str, list[dict]], config: BacktestConfig
) -> dict:
    from models.baselines import season_length_for
    from models.metrics import evaluate_forecasts

    actuals, outputs, insamples, seasons = [], [], [], []
    for item in series:
        for fold, origin in enumerate(_fold_origins(item.target.size, config)):
            actuals.append(item.target[origin : origin + config.horizon])
            outputs.append(forecasts[item.name][fold])
            insamples.append(item.target[:origin])
            seasons.append(min(season_length_for(item.freq), max(1, origin // 2)))
    return evaluate_forecasts(actuals, outputs, insamples, seasons)


def backtest(
    series: list[Series], config: BacktestConfig, workdir: Path, dataset: str = "", skipped=None
) -> Backtest:
    """Backtest every model of ``config`` on ``series`` and pool the metrics per model."""
    config.validate()
    skipped = list(skipped or [])
    minimum = config.folds * config.horizon + max(config.context_length, 2 * config.horizon)
    usable = []
    for item in series:
        if item.target.size < minimum:
            skipped.append(f"{item.name}: {item.target.size} steps, needs {minimum}")
        elif np.isnan(item.target).all():
            skipped.append(f"{item.name}: no known value")
        else:
            usable.append(item)
    if config.max_series is not None:
        skipped += [
            f"{s.name}: beyond max_series={config.max_series}" for s in usable[config.max_series :]
        ]
        usable = usable[: config.max_series]
    if not usable:
        raise DatasetError(
            f"no series of {dataset or 'the dataset'} is long enough for {config.folds} folds of "
            f"{config.horizon} steps; lower --folds or --horizon"
        )
    groups: dict[str, list[Series]] = {}
    for item in usable:
        groups.setdefault(item.freq, []).append(item)

    forecasts: dict[str, dict[str, list[dict]]] = {model: {} for model in config.models}
    seconds: dict[str, float] = {model: 0.0 for model in config.models}
    for freq, group in groups.items():
        for model in config.models:
            if model == "deepar":
                result, spent = _forecast_deepar(group, config, workdir)
            else:
                result, spent = _forecast_baseline(group, config, model)
            forecasts[model].update(result)
            seconds[model] += spent
            logger.info(
                "backtested %s on %d series at %s in %.1f s", model, len(group), freq, spent
            )

    per_series = {
        item.name: {model: _metrics([item], forecasts[model], config) for model in config.models}
        for item in usable
    }
    aggregate = {model: _metrics(usable, forecasts[model], config) for model in config.models}
    champion = min(config.models, key=lambda m: _nan_last(aggregate[m]["mean_wql"]))
    last_fold = {
        item.name: {model: forecasts[model][item.name][-1] for model in config.models}
        for item in usable
    }
    return Backtest(
        dataset, config, usable, skipped, per_series, aggregate, champion, seconds, last_fold
    )


def _nan_last(value: float) -> float:
    return math.inf if value is None or math.isnan(value) else value


def fan_chart(item: Series, forecasts: dict[str, dict], config: BacktestConfig, path: Path) -> Path:
    """Draw the last fold of one series: history, actuals, and each model's median and 80% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    origin = _fold_origins(item.target.size, config)[-1]
    history = max(config.context_length, 3 * config.horizon)
    steps = np.arange(origin - history, origin + config.horizon)
    figure, axes = plt.subplots(figsize=(8, 3.2))
    axes.plot(
        steps, item.target[steps[0] : origin + config.horizon], color="black", lw=1, label="actual"
    )
    future = np.arange(origin, origin + config.horizon)
    for index, (model, output) in enumerate(forecasts.items()):
        colour = f"C{index}"
        quantiles = output["quantiles"]
        axes.fill_between(future, quantiles["0.1"], quantiles["0.9"], color=colour, alpha=0.2)
        axes.plot(future, quantiles["0.5"], color=colour, lw=1.5, label=f"{model} median, 10-90%")
    axes.axvline(origin, color="grey", ls="--", lw=0.8)
    axes.set_title(f"{item.name} ({item.metric}, {item.freq})", fontsize=9)
    axes.set_xlabel(f"step ({item.freq})")
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _cell(value: float) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.4f}"
    )


def write_report(result: Backtest, out_dir: Path) -> Path:
    """Write ``forecast.md``, ``forecast.json`` and fan chart PNGs under ``out_dir``."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    config = result.config
    lines = [
        f"# Forecast backtest: {result.dataset}",
        "",
        f"{len(result.series)} series, {config.folds} rolling origins one horizon apart, horizon "
        f"{config.horizon} steps, DeepAR context {config.context_length} steps and {config.epochs} "
        f"epochs of {config.num_batches_per_epoch} batches, trained once per frequency on the data "
        "before the first origin. Champion (lowest pooled mean wQL): "
        f"**{result.champion}**.",
        "",
        "## Pooled over series and folds",
        "",
        "| model | " + " | ".join(METRIC_NAMES) + " | seconds |",
        "|---|" + "---|" * (len(METRIC_NAMES) + 1),
    ]
    for model, metrics in result.aggregate.items():
        cells = " | ".join(_cell(metrics[name]) for name in METRIC_NAMES)
        lines.append(f"| {model} | {cells} | {result.seconds[model]:.1f} |")
    lines += [
        "",
        "wQL is the quantile loss divided by the sum of |actual| (lower is better); MASE divides "
        "the MAE of the median by the in-sample seasonal-naive error; coverage_80 is the share "
        "of actuals inside the 0.1-0.9 quantile band (0.8 is calibrated).",
        "",
        "## Per series (mean wQL / MASE / coverage_80)",
        "",
        "| series | freq | " + " | ".join(config.models) + " |",
        "|---|---|" + "---|" * len(config.models),
    ]
    for item in result.series:
        cells = []
        for model in config.models:
            m = result.per_series[item.name][model]
            cells.append(f"{_cell(m['mean_wql'])} / {_cell(m['mase'])} / {_cell(m['coverage_80'])}")
        lines.append(f"| {item.name} | {item.freq} | " + " | ".join(cells) + " |")
    lines += ["", "## Fan charts (last fold)", ""]
    for item in result.series[: config.charts]:
        file_name = "charts/" + item.name.replace("/", "__").removesuffix(".csv") + ".png"
        fan_chart(item, result.last_fold[item.name], config, out_dir / file_name)
        lines.append(f"![{item.name}]({file_name})")
    if result.skipped:
        lines += ["", "## Skipped", ""] + [f"- {reason}" for reason in result.skipped]
    path = out_dir / "forecast.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    document: dict[str, Any] = {
        "dataset": result.dataset,
        "config": {**config.__dict__, "models": list(config.models)},
        "champion": result.champion,
        "aggregate": result.aggregate,
        "per_series": result.per_series,
        "seconds": result.seconds,
        "skipped": result.skipped,
    }
    (out_dir / "forecast.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def evaluate_forecast(
    dataset_path: Path | str, config: BacktestConfig, workdir: Path, groups: list[str] | None = None
) -> Backtest:
    """Load a dataset folder and backtest it."""
    series, skipped = load_series(dataset_path, groups)
    return backtest(series, config, workdir, str(dataset_path), skipped)
