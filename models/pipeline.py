"""Training, evaluation, registration and batch transform of the forecasters per frequency group.

``train_and_register`` trains DeepAR and the seasonal-naive baseline on each group's
train channel and scores both on the last ``prediction_length`` points of the test
channel. It logs one MLflow run per model under a parent run. The model with the lower
mean weighted quantile loss is registered as ``{model_prefix}-{group}`` with the alias
``champion``.

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
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from models.errors import ModelInputError
from models.prepared import GroupSpec, group_specs, join_url, read_manifest, read_records

logger = logging.getLogger(__name__)

KINDS = ("deepar", "seasonal_naive")
OUTPUT_QUANTILES = ["0.1", "0.5", "0.9"]


def train_and_register(
    prepared_url: str,
    run_key: str,
    tracking_uri: str,
    workdir: Path,
    config_overrides: dict | None = None,
    experiment: str = "telemetry_pipeline",
    model_prefix: str = "saodf-forecaster",
) -> dict:
    """Train, evaluate and register a champion forecaster for every group of a prepared dataset.

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

    Returns:
        Per group: ``champion_kind``, ``model_name``, ``model_version``,
        ``parent_run_id``, ``run_ids``, ``metrics`` and ``training_seconds`` (both keyed
        by model kind), ``season_length``, ``freq``, ``prediction_length`` and ``reused``.

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
) -> dict:
    import mlflow

    from models.baselines import forecast_baseline, season_length_for
    from models.config import DeepARConfig
    from models.local_deepar import predict_deepar, train_deepar
    from models.metrics import evaluate_forecasts
    from models.pyfunc import ForecasterModel, log_forecaster
    from models.registry import PARENT_KIND, check_filter_value, register_champion

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
    train_records = read_records(prepared_url, spec.train)
    test_records = read_records(prepared_url, spec.test)
    contexts, actuals = _split_test(test_records, horizon, spec)
    season_length = season_length_for(spec.freq)
    seasonalities = [min(season_length, max(1, len(c["target"]) // 2)) for c in contexts]
    insamples = [c["target"] for c in contexts]
    base_tags = {"run_key": run_key, "group": spec.group}

    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{run_key}/{spec.group}",
        tags={**base_tags, "model_kind": PARENT_KIND},
    ) as parent:
        mlflow.log_params(
            {"freq": spec.freq, "prediction_length": horizon, "series_count": len(contexts)}
        )

        trained = train_deepar(train_records, spec.freq, config, workdir)
        deepar_forecasts = predict_deepar(
            trained.predictor, contexts, spec.freq, trained.cardinality
        )
        started = time.perf_counter()
        baseline_forecasts = forecast_baseline(contexts, horizon, season_length)
        baseline_seconds = time.perf_counter() - started

        seconds = {"deepar": trained.training_seconds, "seasonal_naive": baseline_seconds}
        forecasts = {"deepar": deepar_forecasts, "seasonal_naive": baseline_forecasts}
        params = {
            "deepar": config.to_params(),
            "seasonal_naive": {
                "season_length": str(season_length),
                "prediction_length": str(horizon),
                "time_freq": spec.freq,
                "interval_level": "80",
            },
        }
        metrics = {}
        run_ids = {}
        for kind in KINDS:
            metrics[kind] = evaluate_forecasts(actuals, forecasts[kind], insamples, seasonalities)
            run_ids[kind] = _log_model_run(
                kind, base_tags, params[kind], metrics[kind], seconds[kind]
            )

        champion = _pick_champion(metrics)
        champion_model = ForecasterModel(
            kind=champion,
            freq=spec.freq,
            prediction_length=horizon,
            season_length=season_length,
            cardinality=trained.cardinality,
        )
        with mlflow.start_run(run_id=run_ids[champion], nested=True):
            info = log_forecaster(
                champion_model, trained.predictor if champion == "deepar" else None
            )
            mlflow.set_tag("champion", "true")
        version_tags = {
            "group": spec.group,
            "model_kind": champion,
            **{name: _tag_number(value) for name, value in metrics[champion].items()},
        }
        version = register_champion(
            tracking_uri, model_name, info.model_uri, run_ids[champion], run_key, version_tags
        )
        result = {
            "group": spec.group,
            "champion_kind": champion,
            "model_name": model_name,
            "model_version": version,
            "parent_run_id": parent.info.run_id,
            "run_ids": run_ids,
            "metrics": metrics,
            "training_seconds": seconds,
            "season_length": season_length,
            "freq": spec.freq,
            "prediction_length": horizon,
            "reused": False,
        }
        mlflow.set_tags({"champion_kind": champion, "model_version": version})
        mlflow.log_dict(result, "result.json")
    logger.info(
        "group %s run_key %s: champion %s registered as %s version %s (mean_wql %s vs %s)",
        spec.group,
        run_key,
        champion,
        model_name,
        version,
        metrics["deepar"]["mean_wql"],
        metrics["seasonal_naive"]["mean_wql"],
    )
    return result


def _split_test(
    test_records: list[dict], horizon: int, spec: GroupSpec
) -> tuple[list[dict], list[np.ndarray]]:
    if not test_records:
        raise ModelInputError(
            f"group {spec.group!r} has an empty test channel {spec.test}; "
            "rerun preprocessing or drop the group from the manifest"
        )
    contexts, actuals = [], []
    for index, record in enumerate(test_records):
        target = record["target"]
        if target.size <= horizon + 1:
            raise ModelInputError(
                f"group {spec.group!r} test series {index} has {target.size} points; "
                f"it needs more than prediction_length + 1 = {horizon + 1}"
            )
        contexts.append({**record, "target": target[:-horizon]})
        actuals.append(target[-horizon:])
    return contexts, actuals


def _log_model_run(
    kind: str,
    base_tags: Mapping[str, str],
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    seconds: float,
) -> str:
    import mlflow

    from models.cost import LOCAL_REFERENCE_INSTANCE, estimate_training_cost

    spot = estimate_training_cost(seconds, LOCAL_REFERENCE_INSTANCE, spot=True)
    with mlflow.start_run(
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
        return run.info.run_id


def _pick_champion(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """Return the kind with the lower mean wQL; NaN counts as worst and ties go to the baseline."""

    def score(kind: str) -> float:
        value = metrics[kind]["mean_wql"]
        return math.inf if value is None or math.isnan(value) else value

    return "deepar" if score("deepar") < score("seasonal_naive") else "seasonal_naive"


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
        manifest = {
            "group": group,
            "freq": spec.freq,
            "model_name": name,
            "model_version": model.version,
            "prediction_length": model.prediction_length,
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
