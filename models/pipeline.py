"""Training, backtest, registration and batch transform of the forecasters per frequency group.

``train_and_register`` trains DeepAR and scores it with the seasonal-naive and AutoETS
baselines on a rolling-origin backtest (several windows at the end of each test
series; DeepAR is trained only on data before the first window). It logs one MLflow
run per model under a parent run, with params, pooled and per-window metrics, the
hash of the channel files, per-series metrics and a fan chart PNG. The model with the
lowest mean weighted quantile loss becomes a new version of
``{model_prefix}-{group}``. The alias ``champion`` moves to it only when it beats the
current champion scored on the same windows.

``batch_transform`` writes, per group::

    {output_url}/{group}/output.jsonl.out   DeepAR output format, one line per series
    {output_url}/{group}/manifest.json      group, freq, model, quantiles and per series
                                            device_id, line (0-based line index in the
                                            output file) and forecast_start (ISO 8601)

Heavy libraries are imported inside the functions, so DAG files can import this module.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from models.errors import ModelInputError
from models.prepared import GroupSpec, group_specs, join_url, read_manifest, read_records

logger = logging.getLogger(__name__)

KINDS = ("deepar", "seasonal_naive", "auto_ets")
# Ties go to the simpler model: the first kind in this order with the lowest score wins.
TIE_ORDER = ("seasonal_naive", "auto_ets", "deepar")
OUTPUT_QUANTILES = ["0.1", "0.5", "0.9"]
DEFAULT_BACKTEST_WINDOWS = 3


def train_and_register(
    prepared_url: str,
    run_key: str,
    tracking_uri: str,
    workdir: Path,
    config_overrides: dict | None = None,
    experiment: str = "telemetry_pipeline",
    model_prefix: str = "saodf-forecaster",
    backtest_windows: int = DEFAULT_BACKTEST_WINDOWS,
) -> dict:
    """Train, backtest and register a forecaster for every group of a prepared dataset.

    A group whose parent run for ``run_key`` already FINISHED is not trained again: its
    stored result is returned with ``reused`` set, so a retried DAG run creates no
    duplicate runs or versions.

    Args:
        prepared_url: folder URL of the prepared dataset (``file://`` or ``s3://``).
        run_key: id of the pipeline run, stored as the ``run_key`` tag.
        tracking_uri: MLflow tracking and registry URI.
        workdir: local folder for Lightning checkpoints.
        config_overrides: DeepAR hyperparameters that replace the group defaults.
        experiment: MLflow experiment name.
        model_prefix: registered model name prefix; the group name is appended.
        backtest_windows: rolling-origin windows per series, fewer when a series is short.

    Returns:
        Per group: ``champion_kind`` and ``model_version`` (the version that the
        ``champion`` alias names after this run), ``model_name``, ``candidate_kind``,
        ``candidate_version``, ``promoted``, ``promotion_reason``,
        ``champion_metrics`` (the previous champion on this run's windows, or None),
        ``parent_run_id``, ``run_ids``, ``metrics`` and ``training_seconds`` (both keyed
        by model kind), ``backtest_windows``, ``data_hash``, ``season_length``,
        ``freq``, ``prediction_length`` and ``reused``.

    Raises:
        ModelInputError: the prepared dataset is missing or malformed.
        ConfigError: an override is not a valid DeepAR hyperparameter.
    """
    from models.registry import (
        check_filter_value,
        client_for,
        ensure_experiment,
        find_finished_parent,
        tracking,
    )

    check_filter_value("run_key", run_key)
    manifest = read_manifest(prepared_url)
    client = client_for(tracking_uri)
    experiment_id = ensure_experiment(client, experiment)
    results = {}
    for spec in group_specs(manifest):
        finished = find_finished_parent(client, experiment_id, run_key, spec.group)
        if finished is not None:
            result = _load_result(client, finished.info.run_id)
            result["reused"] = True
            logger.info(
                "reusing finished parent run %s for run_key %s group %s",
                finished.info.run_id,
                run_key,
                spec.group,
            )
            results[spec.group] = result
            continue
        with tracking(tracking_uri):
            results[spec.group] = _train_group(
                tracking_uri,
                experiment_id,
                prepared_url,
                spec,
                run_key,
                Path(workdir) / spec.group,
                config_overrides,
                f"{model_prefix}-{spec.group}",
                backtest_windows,
            )
    return results


def _train_group(
    tracking_uri: str,
    experiment_id: str,
    prepared_url: str,
    spec: GroupSpec,
    run_key: str,
    workdir: Path,
    config_overrides: dict | None,
    model_name: str,
    backtest_windows: int,
) -> dict:
    import mlflow

    from models.backtest import rolling_windows, training_records, window_count
    from models.baselines import season_length_for
    from models.config import DeepARConfig
    from models.local_deepar import train_deepar
    from models.registry import PARENT_KIND, check_filter_value

    check_filter_value("group", spec.group)
    config = DeepARConfig.from_overrides(
        {
            "prediction_length": spec.prediction_length,
            "context_length": spec.context_length,
            "time_freq": spec.freq,
        },
        config_overrides,
    )
    horizon = config.prediction_length
    test_records = read_records(prepared_url, spec.test)
    _check_test_lengths(test_records, horizon, spec)
    windows_used = window_count(test_records, horizon, backtest_windows, min_context=horizon + 1)
    windows = rolling_windows(test_records, horizon, windows_used)
    season_length = season_length_for(spec.freq)
    series_ids = [
        _device_id(spec, index) or f"series-{index}" for index in range(len(test_records))
    ]
    digest = _channel_hash(prepared_url, spec)
    base_tags = {"run_key": run_key, "group": spec.group, "data_hash": digest}

    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{run_key}/{spec.group}",
        tags={**base_tags, "model_kind": PARENT_KIND},
    ) as parent:
        mlflow.log_params(
            {
                "freq": spec.freq,
                "prediction_length": horizon,
                "series_count": len(test_records),
                "backtest_windows": windows_used,
                "data_hash": digest,
            }
        )
        trained = train_deepar(
            training_records(test_records, horizon, windows_used), spec.freq, config, workdir
        )
        backtests, seconds = _backtest_kinds(
            trained, windows, spec.freq, horizon, season_length, series_ids
        )
        params = _kind_params(config, season_length, horizon, spec.freq, windows_used)
        metrics = {kind: backtests[kind]["metrics"] for kind in KINDS}
        run_ids = {}
        for kind in KINDS:
            run_ids[kind] = _log_model_run(
                kind, base_tags, params[kind], backtests[kind], seconds[kind], windows, series_ids
            )

        result = _register_and_promote(
            tracking_uri,
            model_name,
            run_key,
            spec,
            horizon,
            season_length,
            trained,
            metrics,
            run_ids,
            windows,
            digest,
        )
        result.update(
            parent_run_id=parent.info.run_id,
            run_ids=run_ids,
            metrics=metrics,
            training_seconds=seconds,
            backtest_windows=windows_used,
            data_hash=digest,
            season_length=season_length,
            freq=spec.freq,
            prediction_length=horizon,
            reused=False,
        )
        mlflow.set_tags(
            {
                "champion_kind": result["champion_kind"],
                "model_version": result["model_version"],
                "promoted": str(result["promoted"]).lower(),
            }
        )
        mlflow.log_dict(result, "result.json")
    logger.info(
        "group %s run_key %s: candidate %s version %s %s; champion is %s version %s "
        "(mean_wql deepar %s, seasonal_naive %s, auto_ets %s)",
        spec.group,
        run_key,
        result["candidate_kind"],
        result["candidate_version"],
        "promoted" if result["promoted"] else "not promoted",
        result["champion_kind"],
        result["model_version"],
        metrics["deepar"]["mean_wql"],
        metrics["seasonal_naive"]["mean_wql"],
        metrics["auto_ets"]["mean_wql"],
    )
    return result


def _backtest_kinds(trained, windows, freq, horizon, season_length, series_ids):
    from models.backtest import backtest
    from models.baselines import forecast_baseline
    from models.local_deepar import predict_deepar

    def deepar(contexts):
        return predict_deepar(trained.predictor, contexts, freq, trained.cardinality)

    def baseline(kind):
        return lambda contexts: forecast_baseline(contexts, horizon, season_length, model=kind)

    forecasters = {"deepar": deepar, "seasonal_naive": baseline("seasonal_naive")}
    forecasters["auto_ets"] = baseline("auto_ets")
    backtests, seconds = {}, {}
    for kind in KINDS:
        started = time.perf_counter()
        backtests[kind] = backtest(forecasters[kind], windows, season_length, series_ids)
        seconds[kind] = time.perf_counter() - started
    # DeepAR's figure is its training time; the baselines fit while they forecast.
    seconds["deepar"] = trained.training_seconds
    return backtests, seconds


def _kind_params(config, season_length, horizon, freq, windows_used) -> dict[str, dict]:
    baseline = {
        "season_length": str(season_length),
        "prediction_length": str(horizon),
        "time_freq": freq,
        "interval_level": "80",
        "backtest_windows": str(windows_used),
    }
    from models.baselines import ETS_MAX_POINTS, ETS_MAX_SEASON

    return {
        "deepar": {**config.to_params(), "backtest_windows": str(windows_used)},
        "seasonal_naive": baseline,
        "auto_ets": {
            **baseline,
            "ets_max_points": str(ETS_MAX_POINTS),
            "ets_max_season": str(ETS_MAX_SEASON),
        },
    }


def pick_candidate(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Return the kind with the lowest mean wQL; NaN counts as worst and ties go to the simpler."""
    from models.backtest import score

    kinds = [kind for kind in TIE_ORDER if kind in metrics]
    return min(kinds, key=lambda kind: (score(metrics[kind]), kinds.index(kind)))


def decide_promotion(
    candidate_metrics: Mapping[str, float], champion_metrics: Mapping[str, float] | None
) -> tuple[bool, str]:
    """Return whether the candidate replaces the champion, and why.

    The candidate wins only with a strictly lower mean wQL on the same windows; a
    champion that could not be scored (None) is replaced.
    """
    from models.backtest import score

    if champion_metrics is None:
        return True, "no current champion could be scored on these windows"
    candidate, champion = score(candidate_metrics), score(champion_metrics)
    if candidate < champion:
        return True, f"candidate mean_wql {candidate:.6g} < champion {champion:.6g}"
    return False, f"candidate mean_wql {candidate:.6g} >= champion {champion:.6g}"


def _register_and_promote(
    tracking_uri,
    model_name,
    run_key,
    spec,
    horizon,
    season_length,
    trained,
    metrics,
    run_ids,
    windows,
    digest,
) -> dict:
    import mlflow

    from models.pyfunc import ForecasterModel, log_forecaster
    from models.registry import client_for, current_champion, move_champion, register_version

    candidate = pick_candidate(metrics)
    model = ForecasterModel(
        kind=candidate,
        freq=spec.freq,
        prediction_length=horizon,
        season_length=season_length,
        cardinality=trained.cardinality,
    )
    with mlflow.start_run(run_id=run_ids[candidate], nested=True):
        info = log_forecaster(model, trained.predictor if candidate == "deepar" else None)
        mlflow.set_tag("candidate", "true")
    version_tags = {
        "group": spec.group,
        "model_kind": candidate,
        "data_hash": digest,
        "backtest_windows": str(len(windows)),
        **{name: _tag_number(value) for name, value in metrics[candidate].items()},
    }
    version = register_version(
        tracking_uri, model_name, info.model_uri, run_ids[candidate], run_key, version_tags
    )
    client = client_for(tracking_uri)
    champion = current_champion(client, model_name)
    champion_metrics = None
    if champion is not None and str(champion.version) == version:
        promoted, reason = True, "the candidate is already the champion"
    else:
        if champion is not None:
            champion_metrics = score_champion(tracking_uri, model_name, champion, spec, windows)
        promoted, reason = decide_promotion(metrics[candidate], champion_metrics)
    if promoted:
        move_champion(client, model_name, version)
        champion_kind, champion_version = candidate, version
    else:
        champion_kind = champion.tags.get("model_kind", "unknown")
        champion_version = str(champion.version)
    logger.info(
        "model %s: candidate %s version %s %s because %s",
        model_name,
        candidate,
        version,
        "promoted" if promoted else "kept as a version only",
        reason,
    )
    return {
        "group": spec.group,
        "champion_kind": champion_kind,
        "model_name": model_name,
        "model_version": champion_version,
        "candidate_kind": candidate,
        "candidate_version": version,
        "promoted": promoted,
        "promotion_reason": reason,
        "champion_metrics": champion_metrics,
    }


def score_champion(tracking_uri, model_name, champion, spec, windows) -> dict | None:
    """Backtest the current champion version on this run's windows, or None if it cannot run."""
    from models.backtest import backtest
    from models.baselines import season_length_for
    from models.errors import ModelError
    from models.serving import load_model_version

    try:
        loaded = load_model_version(tracking_uri, model_name, str(champion.version))
    except ModelError as exc:
        logger.warning(
            "champion %s version %s could not be loaded (%s); it will be replaced",
            model_name,
            champion.version,
            exc,
        )
        return None
    horizon = len(windows[0].actuals[0])
    if loaded.prediction_length != horizon or not _same_freq(loaded.freq, spec.freq):
        logger.warning(
            "champion %s version %s forecasts %d steps at %s but the windows need %d at %s; "
            "it will be replaced",
            model_name,
            champion.version,
            loaded.prediction_length,
            loaded.freq,
            horizon,
            spec.freq,
        )
        return None

    def forecaster(contexts):
        return loaded.predict([_plain_record(c, spec.freq) for c in contexts])

    try:
        return backtest(forecaster, windows, season_length_for(spec.freq))["metrics"]
    except ModelError as exc:
        logger.warning(
            "champion %s version %s failed on the backtest windows (%s); it will be replaced",
            model_name,
            champion.version,
            exc,
        )
        return None


def _same_freq(left: str, right: str) -> bool:
    import pandas as pd

    return pd.tseries.frequencies.to_offset(left) == pd.tseries.frequencies.to_offset(right)


def _channel_hash(prepared_url: str, spec: GroupSpec) -> str:
    import fsspec

    from models.backtest import data_hash

    payloads = []
    for channel in (spec.train, spec.test):
        with fsspec.open(join_url(prepared_url, channel), "rb") as handle:
            payloads.append(handle.read())
    return data_hash(*payloads)


def _check_test_lengths(test_records: list[dict], horizon: int, spec: GroupSpec) -> None:
    if not test_records:
        raise ModelInputError(
            f"group {spec.group!r} has an empty test channel {spec.test}; "
            "rerun preprocessing or drop the group from the manifest"
        )
    for index, record in enumerate(test_records):
        if record["target"].size <= horizon + 1:
            raise ModelInputError(
                f"group {spec.group!r} test series {index} has {record['target'].size} points; "
                f"it needs more than prediction_length + 1 = {horizon + 1}"
            )


def _log_model_run(
    kind: str,
    base_tags: Mapping[str, str],
    params: Mapping[str, str],
    backtest_result: Mapping,
    seconds: float,
    windows,
    series_ids: list[str],
) -> str:
    import mlflow

    from models.charts import fan_chart
    from models.cost import LOCAL_REFERENCE_INSTANCE, estimate_training_cost

    spot = estimate_training_cost(seconds, LOCAL_REFERENCE_INSTANCE, spot=True)
    metrics = dict(backtest_result["metrics"])
    for index, window_metrics in enumerate(backtest_result["windows"]):
        metrics[f"window_{index}_mean_wql"] = window_metrics["mean_wql"]
    # A nested run without experiment_id lands in the active (default) experiment,
    # not in its parent's, so pass the parent's experiment.
    with mlflow.start_run(
        experiment_id=mlflow.active_run().info.experiment_id,
        run_name=f"{base_tags['group']}-{kind}",
        nested=True,
        tags={**base_tags, "model_kind": kind, "cost_instance_type": LOCAL_REFERENCE_INSTANCE},
    ) as run:
        mlflow.log_params(dict(params))
        mlflow.log_metrics(
            {
                **metrics,
                "training_seconds": seconds,
                "estimated_cost_usd": spot["estimated_cost_usd"],
                "on_demand_cost_usd": spot["on_demand_usd"],
            }
        )
        mlflow.log_dict(
            {"series": backtest_result["series"], "windows": backtest_result["windows"]},
            "backtest.json",
        )
        last = windows[-1]
        with tempfile.TemporaryDirectory(prefix="saodf-chart-") as tmp:
            path = fan_chart(
                Path(tmp) / f"fan_chart_{kind}.png",
                f"{base_tags['group']} {kind}: last backtest window",
                last.contexts,
                last.actuals,
                backtest_result["forecasts"][-1],
                series_ids,
            )
            mlflow.log_artifact(str(path), "charts")
        return run.info.run_id


def _tag_number(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.6g}"


def _load_result(client, run_id: str) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="saodf-result-") as tmp:
        path = client.download_artifacts(run_id, "result.json", tmp)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)


def batch_transform(
    prepared_url: str,
    output_url: str,
    tracking_uri: str,
    models: Mapping[str, tuple[str, str | int]],
) -> dict:
    """Forecast the steps after each test series with registered models and write the outputs.

    Args:
        prepared_url: folder URL of the prepared dataset.
        output_url: folder URL that receives one subfolder per group.
        tracking_uri: MLflow tracking and registry URI.
        models: per group, the registered model name and a version number or alias.

    Returns:
        Per group: ``output`` and ``manifest`` URLs, ``series`` count, ``model_name``,
        resolved ``model_version`` and ``seconds`` spent predicting.

    Raises:
        ModelInputError: a group is not in the prepared manifest, or its series list and
            test channel differ in length.
        RegistryError: a model version or alias does not exist.
    """
    from models.output import write_forecast_lines, write_text_atomic
    from models.serving import load_model_version

    specs = {spec.group: spec for spec in group_specs(read_manifest(prepared_url))}
    results = {}
    for group, (name, version_or_alias) in models.items():
        spec = specs.get(group)
        if spec is None:
            raise ModelInputError(
                f"group {group!r} is not in the prepared manifest; known groups: {sorted(specs)}"
            )
        model = load_model_version(tracking_uri, name, version_or_alias)
        records = read_records(prepared_url, spec.test)
        if spec.series and len(spec.series) != len(records):
            raise ModelInputError(
                f"group {group!r} lists {len(spec.series)} series but its test channel has "
                f"{len(records)} lines; rerun preprocessing"
            )
        started = time.perf_counter()
        forecasts = model.predict([_plain_record(r, spec.freq) for r in records])
        seconds = time.perf_counter() - started
        if len(forecasts) != len(records):
            raise ModelInputError(
                f"model {name} version {model.version} returned {len(forecasts)} forecasts "
                f"for {len(records)} series"
            )
        output = join_url(output_url, group, "output.jsonl.out")
        manifest_url = join_url(output_url, group, "manifest.json")
        write_forecast_lines(output, forecasts)
        manifest = forecast_manifest(spec, records, name, model.version, model.prediction_length)
        # The manifest is written last, so its presence marks a complete output.
        write_text_atomic(manifest_url, json.dumps(manifest, indent=2))
        logger.info(
            "batch transform of group %s with %s version %s: %d series in %.2f s to %s",
            group,
            name,
            model.version,
            len(records),
            seconds,
            output,
        )
        results[group] = {
            "output": output,
            "manifest": manifest_url,
            "series": len(records),
            "model_name": name,
            "model_version": model.version,
            "seconds": seconds,
        }
    return results


def forecast_manifest(
    spec: GroupSpec,
    records: Sequence[Mapping],
    model_name: str,
    model_version: str | int,
    prediction_length: int,
) -> dict:
    """Describe one group's forecast output: the model, and per line its device and start."""
    return {
        "group": spec.group,
        "freq": spec.freq,
        "model_name": model_name,
        "model_version": model_version,
        "prediction_length": prediction_length,
        "quantiles": OUTPUT_QUANTILES,
        "series": [
            {
                "device_id": _device_id(spec, index),
                "line": index,
                "forecast_start": _forecast_start(record, spec.freq),
            }
            for index, record in enumerate(records)
        ],
    }


def _plain_record(record: Mapping, freq: str) -> dict:
    plain = {
        "start": record["start"],
        "target": [None if math.isnan(v) else float(v) for v in record["target"]],
        "freq": freq,
    }
    if "cat" in record:
        plain["cat"] = list(record["cat"])
    return plain


def _device_id(spec: GroupSpec, index: int) -> str | None:
    if index < len(spec.series):
        return spec.series[index].get("device_id")
    return None


def _forecast_start(record: Mapping, freq: str) -> str:
    import pandas as pd

    offset = pd.tseries.frequencies.to_offset(freq)
    return (pd.Timestamp(record["start"]) + len(record["target"]) * offset).isoformat()
