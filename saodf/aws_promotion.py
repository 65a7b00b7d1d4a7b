"""Promotion on the ``aws`` target: ``champion`` moves only when the candidate scores better.

SageMaker reports ``test:mean_wQuantileLoss`` of a training job on that job's own test
channel, so two jobs' figures are comparable only when both trained on the same data
(equal ``data_hash`` tags). :func:`decide_by_test_metric` compares them in that case.
When the champion trained on other data, ``record_training`` leaves the decision open
and the DAG scores both models on this run's windows:

1. :func:`plan_scoring` writes the group's backtest input (each test series without its
   last ``prediction_length`` points) and the held-out points, and returns one scoring
   request per model that SageMaker runs.
2. One scoring job per request (``saodf_airflow.aws``) forecasts the input with the
   candidate's or the champion's model, as a transform job or a Spot inference job,
   whichever the group forecasts with.
3. :func:`promote` scores both outputs against the held-out points with
   ``models.backtest`` and the same mean wQL as the local backend, and moves
   ``champion`` only when the candidate's is lower.

The held-out points are the ones that the candidate's train channel leaves out, so
the window is out of sample for the candidate. A champion that SageMaker cannot run
but the local backend registered is scored in the Airflow worker instead. A champion
that neither can score on these windows is replaced, as in the local backend.

Files on S3 (``{artifacts}`` is ``SAODF_SAGEMAKER_ARTIFACTS_URL``)::

    {artifacts}/scoring/{run_key}/{group}/input/data.jsonl     backtest input
    {artifacts}/scoring/{run_key}/{group}/held_out.jsonl       {"target": [...]} per series
    {artifacts}/scoring/{run_key}/{group}/{role}/...           job output, as for forecasts
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from saodf.config import Settings, get_settings

logger = logging.getLogger(__name__)

TEST_METRIC = "test:mean_wQuantileLoss"
# Hyperparameters that must match for the champion's forecasts to cover the windows.
MATCHING_HYPERPARAMETERS = ("prediction_length", "time_freq")


def decide_by_test_metric(
    champion, version: str, digest: str, metrics: Mapping[str, float]
) -> tuple[bool, str] | None:
    """Return whether the candidate replaces the champion by SageMaker's test metric, and why.

    Args:
        champion: the current ``champion`` model version, or None.
        version: the candidate's model version.
        digest: the ``data_hash`` of the candidate's channels.
        metrics: the candidate's final metrics from DescribeTrainingJob.

    Returns:
        None when the champion trained on other data, because the two test metrics
        then come from different test channels and :func:`plan_scoring` must score
        both models on the same windows.
    """
    if champion is None:
        return True, "no current champion"
    if str(champion.version) == version:
        return True, "the candidate is already the champion"
    if champion.tags.get("data_hash") != digest:
        return None
    candidate = metrics.get(TEST_METRIC)
    champion_loss = champion.tags.get("test_mean_wquantileloss")
    if candidate is None or champion_loss is None:
        return False, f"{TEST_METRIC} is missing, so the champion stays"
    if candidate < float(champion_loss):
        return True, f"{TEST_METRIC} {candidate:.6g} < champion {float(champion_loss):.6g}"
    return False, f"{TEST_METRIC} {candidate:.6g} >= champion {float(champion_loss):.6g}"


def champion_comparison(client, champion, hyperparameters: Mapping[str, str]) -> dict[str, Any]:
    """Find how the champion can be scored on the candidate's windows.

    Args:
        client: an ``MlflowClient``.
        champion: the current ``champion`` model version, trained on other data.
        hyperparameters: the candidate's training job hyperparameters.

    Returns:
        ``champion_version``, ``champion_kind``, ``champion_model_url``,
        ``champion_training_job_name``, ``scorer`` and ``reason``. ``scorer`` is
        ``sagemaker`` (a scoring job runs the champion's S3 artifact), ``mlflow`` (a
        model of the local backend, loaded in the worker) or None when neither can
        forecast these windows.
    """
    from models.pyfunc import MODEL_KINDS as LOCAL_KINDS
    from models.sagemaker import MODEL_KIND

    version = str(champion.version)
    kind = champion.tags.get("model_kind", "")
    result = {
        "champion_version": version,
        "champion_kind": kind,
        "champion_model_url": champion.source,
        "champion_training_job_name": champion.tags.get("training_job_name", ""),
    }
    if kind in LOCAL_KINDS:
        return {**result, "scorer": "mlflow", "reason": f"a {kind} model of the local backend"}
    if kind != MODEL_KIND:
        reason = (
            f"champion version {version} has model_kind={kind!r}, which neither SageMaker "
            "nor the local backend can run"
        )
        return {**result, "scorer": None, "reason": reason}
    if not str(champion.source).startswith("s3://"):
        reason = (
            f"champion version {version} has no S3 model artifact (source "
            f"{champion.source!r}), so SageMaker cannot run it"
        )
        return {**result, "scorer": None, "reason": reason}
    params = _run_params(client, champion.run_id)
    for name in MATCHING_HYPERPARAMETERS:
        trained_with, needed = params.get(name), hyperparameters.get(name)
        if trained_with is not None and needed is not None and trained_with != needed:
            reason = (
                f"champion version {version} was trained with {name}={trained_with} but "
                f"this run's windows need {name}={needed}"
            )
            return {**result, "scorer": None, "reason": reason}
    return {**result, "scorer": "sagemaker", "reason": "a SageMaker DeepAR model"}


def _run_params(client, run_id: str | None) -> dict[str, str]:
    import mlflow

    if not run_id:
        return {}
    try:
        return dict(client.get_run(run_id).data.params)
    except mlflow.exceptions.MlflowException as exc:
        # Without the params the scoring job runs anyway, and promote() checks the
        # length of the champion's forecasts.
        logger.warning("MLflow run %s of the champion could not be read: %s", run_id, exc)
        return {}


def backtest_lines(test_lines: Sequence[str], horizon: int) -> tuple[list[str], list[str]]:
    """Cut each DeepAR JSON line of a test channel before its last ``horizon`` points.

    ``dynamic_feat`` stays whole, so it covers the forecast steps as DeepAR requires
    of a model that uses dynamic features. Other fields are copied as they are.

    Returns:
        The input lines and the held-out lines (``{"target": [...]}``), in input order.

    Raises:
        ModelInputError: a line is not a JSON object with a target longer than ``horizon``.
    """
    from models.errors import ModelInputError

    inputs, held_out = [], []
    for number, line in enumerate(test_lines, start=1):
        record = json.loads(line)
        target = record.get("target") if isinstance(record, dict) else None
        if not isinstance(target, list) or len(target) <= horizon:
            size = len(target) if isinstance(target, list) else "no"
            raise ModelInputError(
                f"test line {number} has {size} target points; a backtest needs more than "
                f"prediction_length={horizon}"
            )
        inputs.append(json.dumps({**record, "target": target[:-horizon]}))
        held_out.append(json.dumps({"target": target[-horizon:]}))
    return inputs, held_out


def scoring_folder(artifacts_url: str, run_key: str, group: str) -> str:
    """Return the S3 folder of one group's backtest input and scoring outputs."""
    return f"{artifacts_url.rstrip('/')}/scoring/{run_key}/{group}"


def plan_scoring(
    scope: dict[str, Any], recorded: Mapping[str, Any], settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Write the backtest input of each group whose promotion is open and list its scoring jobs.

    Args:
        scope: the run scope.
        recorded: the return value of ``saodf.aws_pipeline.record_training``. A group
            with a ``comparison`` entry waits for scoring.

    Returns:
        One request per scoring job: ``group``, ``role``, ``mode``, ``model_version``,
        ``training_job_name``, ``model_data_url``, ``input_url``, ``output_url``,
        ``series`` and ``prediction_length``. The candidate's job is always listed, and
        the champion's when ``scorer`` is ``sagemaker``.
    """
    from models.output import write_text_atomic
    from models.prepared import group_specs, join_url, read_manifest
    from models.sagemaker import AwsJobSettings
    from saodf import aws_pipeline, pipeline

    settings = settings or get_settings()
    job = AwsJobSettings.from_settings(settings)
    prepared = pipeline.urls(settings, scope["run_key"])["prepared"]
    specs = {spec.group: spec for spec in group_specs(read_manifest(prepared))}
    configs = aws_pipeline.task_configs(scope, 1, settings)
    requests = []
    for group, result in sorted(recorded.get("groups", {}).items()):
        comparison = result.get("comparison")
        if not comparison:
            continue
        entry = configs["groups"][group]
        horizon = int(entry["hyperparameters"]["prediction_length"])
        test_text = aws_pipeline.read_text(join_url(prepared, specs[group].test))
        inputs, held_out = backtest_lines(
            [line for line in test_text.splitlines() if line.strip()], horizon
        )
        # NOTE: the input keeps this run's ``cat`` indices. A device that joined after the
        # champion trained has an index the champion never saw. How SageMaker DeepAR
        # handles that is unverified (moto runs no job), and a failed job fails its task.
        folder = scoring_folder(job.artifacts_url, scope["run_key"], group)
        write_text_atomic(f"{folder}/input/data.jsonl", "\n".join(inputs) + "\n")
        write_text_atomic(f"{folder}/held_out.jsonl", "\n".join(held_out) + "\n")
        common = {
            "group": group,
            "mode": entry["batch_mode"],
            "input_url": f"{folder}/input/",
            "series": len(inputs),
            "prediction_length": horizon,
        }
        requests.append(
            {
                **common,
                "role": "candidate",
                "model_version": result["model_version"],
                "training_job_name": result["training_job_name"],
                "model_data_url": result["model_artifact"],
                "output_url": f"{folder}/candidate/",
            }
        )
        if comparison["scorer"] == "sagemaker":
            requests.append(
                {
                    **common,
                    "role": "champion",
                    "model_version": comparison["champion_version"],
                    "training_job_name": comparison["champion_training_job_name"],
                    "model_data_url": comparison["champion_model_url"],
                    "output_url": f"{folder}/champion/",
                }
            )
        logger.info(
            "run %s group %s: wrote the backtest input of %d series; champion version %s "
            "is scored by %s",
            scope["run_key"],
            group,
            len(inputs),
            comparison["champion_version"],
            comparison["scorer"],
        )
    return requests


def scoring_job(
    scope: dict[str, Any],
    request: Mapping[str, Any],
    try_number: int,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Return ``models.aws_tasks.scoring_job_kwargs`` of one request for this task's try."""
    from models.aws_tasks import scoring_job_kwargs
    from models.sagemaker import AwsJobSettings

    settings = settings or get_settings()
    job = AwsJobSettings.from_settings(settings)
    return scoring_job_kwargs(request, scope["run_key"], try_number, job)


def scoring_result(
    request: Mapping[str, Any], built: Mapping[str, Any], started: float
) -> dict[str, Any]:
    """Return what a scoring task passes to :func:`promote` after its job finished."""
    from saodf.aws_pipeline import inference_output_url

    return {
        "group": request["group"],
        "role": request["role"],
        "mode": built["mode"],
        "job_name": built["job_name"],
        "model_version": request["model_version"],
        "output": inference_output_url(
            {"output_url": request["output_url"]}, built["mode"], built["job_name"]
        ),
        "seconds": time.monotonic() - started,
    }


def promote(
    scope: dict[str, Any],
    recorded: Mapping[str, Any],
    scored: Sequence[Mapping[str, Any]],
    sagemaker_client,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Score the open groups' forecasts, move ``champion`` where the candidate wins, log both.

    Each scored group's MLflow run gets the candidate's metrics under the local
    backend's names (``mean_wql`` and the rest), the champion's with a ``champion_``
    prefix, ``scoring_cost_usd`` and the decision's tags.

    Args:
        scope: the run scope.
        recorded: the return value of ``saodf.aws_pipeline.record_training``.
        scored: the results of the scoring tasks (see :func:`scoring_result`).
        sagemaker_client: a boto3 SageMaker client, to price the scoring jobs.

    Returns:
        ``groups``: per group ``promoted``, ``promotion_reason``, ``model_version`` (the
        candidate), ``champion_version`` after the decision and ``scored_on_windows``.
        Scored groups add ``candidate_metrics``, ``champion_metrics`` (None when the
        champion could not be scored), ``scoring_jobs`` and ``scoring_cost_usd``.

    Raises:
        AwsOutputError: a scoring result is missing, or a job's output is missing or
            has another line count than the backtest input.
    """
    from models.prepared import group_specs, read_manifest
    from models.registry import client_for, current_champion
    from models.sagemaker import AwsJobSettings
    from saodf import pipeline

    settings = settings or get_settings()
    client = client_for(settings.mlflow_tracking_uri)
    artifacts_url = AwsJobSettings.from_settings(settings).artifacts_url
    prepared = pipeline.urls(settings, scope["run_key"])["prepared"]
    specs = {spec.group: spec for spec in group_specs(read_manifest(prepared))}
    by_key = {(item["group"], item["role"]): item for item in scored}
    decisions = {}
    for group, result in sorted(recorded.get("groups", {}).items()):
        if not result.get("comparison"):
            decisions[group] = {
                "promoted": result["promoted"],
                "promotion_reason": result["promotion_reason"],
                "model_version": result["model_version"],
                "champion_version": result["champion_version"],
                "scored_on_windows": False,
            }
            continue
        folder = scoring_folder(artifacts_url, scope["run_key"], group)
        decision = decide_group(
            spec=specs[group],
            result=result,
            window=read_window(folder),
            scored=by_key,
            mlflow_client=client,
            sagemaker_client=sagemaker_client,
            tracking_uri=settings.mlflow_tracking_uri,
        )
        champion = current_champion(client, result["model_name"])
        decision["champion_version"] = str(champion.version) if champion else None
        decisions[group] = decision
        logger.info(
            "run %s group %s: version %s of %s %s, because %s",
            scope["run_key"],
            group,
            result["model_version"],
            result["model_name"],
            "promoted" if decision["promoted"] else "not promoted",
            decision["promotion_reason"],
        )
    return {"groups": decisions}


def decide_group(
    *,
    spec,
    result: Mapping[str, Any],
    window,
    scored: Mapping[tuple[str, str], Mapping[str, Any]],
    mlflow_client,
    sagemaker_client,
    tracking_uri: str,
) -> dict[str, Any]:
    """Score one group's candidate and champion on ``window``, move ``champion`` and log it.

    Args:
        spec: the group's ``GroupSpec``.
        result: the group's entry of ``record_training``, with its ``comparison``.
        window: the backtest window of :func:`read_window`.
        scored: the scoring results by ``(group, role)``.
        mlflow_client: an ``MlflowClient`` of the registry.
        sagemaker_client: a boto3 SageMaker client, to price the scoring jobs.
        tracking_uri: the MLflow URI, to load a champion of the local backend.

    Returns:
        The group's entry of :func:`promote` without ``champion_version``.
    """
    from models.pipeline import decide_promotion, score_champion
    from models.registry import move_champion
    from models.sagemaker import MODEL_KIND

    comparison = result["comparison"]
    candidate_job = _scoring_job_result(scored, spec.group, "candidate")
    candidate_metrics = score_output(candidate_job, window, spec.freq)
    if candidate_metrics is None:
        from saodf.aws_pipeline import AwsOutputError

        raise AwsOutputError(
            f"the candidate's forecasts of group {spec.group!r} ({candidate_job['output']}) "
            f"do not cover the {len(window.actuals[0])} held-out steps; rerun the scoring tasks"
        )
    jobs = [candidate_job]
    if comparison["scorer"] == "sagemaker":
        champion_job = _scoring_job_result(scored, spec.group, "champion")
        jobs.append(champion_job)
        champion_metrics = score_output(champion_job, window, spec.freq)
    else:
        # A model of the local backend, loaded from MLflow and run in this worker.
        version = mlflow_client.get_model_version(
            result["model_name"], comparison["champion_version"]
        )
        champion_metrics = score_champion(
            tracking_uri, result["model_name"], version, spec, [window]
        )
    promoted, reason = decide_promotion(candidate_metrics, champion_metrics)
    if champion_metrics is None:
        reason = (
            f"champion version {comparison['champion_version']} could not be scored on "
            "these windows, so it is replaced"
        )
    if promoted:
        move_champion(mlflow_client, result["model_name"], result["model_version"])
    cost = sum(_job_cost(job, sagemaker_client) for job in jobs)
    run_id = result["mlflow_run_id"]
    for name, value in candidate_metrics.items():
        mlflow_client.log_metric(run_id, name, value)
    for name, value in (champion_metrics or {}).items():
        mlflow_client.log_metric(run_id, f"champion_{name}", value)
    mlflow_client.log_metric(run_id, "scoring_cost_usd", cost)
    mlflow_client.log_param(run_id, "backtest_windows", "1")
    mlflow_client.set_tag(run_id, "compared_champion_version", comparison["champion_version"])
    mlflow_client.set_tag(run_id, "compared_champion_kind", comparison["champion_kind"])
    tag_decision(
        mlflow_client,
        result,
        promoted,
        reason,
        result["model_version"] if promoted else comparison["champion_version"],
        MODEL_KIND if promoted else comparison["champion_kind"],
    )
    return {
        "promoted": promoted,
        "promotion_reason": reason,
        "model_version": result["model_version"],
        "scored_on_windows": True,
        "candidate_metrics": candidate_metrics,
        "champion_metrics": champion_metrics,
        "scoring_jobs": [job["job_name"] for job in jobs],
        "scoring_cost_usd": cost,
    }


def tag_decision(client, result, promoted, reason, champion_version, champion_kind) -> None:
    """Tag a candidate's MLflow run and model version with its promotion decision."""
    run_id = result["mlflow_run_id"]
    tags = {
        "promoted": str(bool(promoted)).lower(),
        "promotion_reason": reason,
        "champion_version": str(champion_version),
        "champion_kind": champion_kind,
    }
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_model_version_tag(
        result["model_name"], result["model_version"], "promotion_reason", reason
    )


def _scoring_job_result(by_key, group: str, role: str) -> Mapping[str, Any]:
    found = by_key.get((group, role))
    if found is None:
        from saodf.aws_pipeline import AwsOutputError

        raise AwsOutputError(
            f"no scoring result of the {role} of group {group!r}; clear the scoring tasks "
            "of this run so that they run again"
        )
    return found


def read_window(folder: str):
    """Return the backtest input and held-out points under ``folder`` as one backtest window.

    Raises:
        AwsOutputError: the two files have different line counts.
    """
    import numpy as np

    from models.backtest import Window
    from models.prepared import parse_record
    from saodf.aws_pipeline import AwsOutputError, read_text

    input_url, held_out_url = f"{folder}/input/data.jsonl", f"{folder}/held_out.jsonl"
    contexts = [
        parse_record(line, f"{input_url} line {number}")
        for number, line in enumerate(read_text(input_url).splitlines(), start=1)
        if line.strip()
    ]
    actuals = []
    for line in read_text(held_out_url).splitlines():
        if line.strip():
            values = json.loads(line)["target"]
            actuals.append(
                np.asarray([np.nan if v in (None, "NaN") else v for v in values], dtype=float)
            )
    if len(actuals) != len(contexts):
        raise AwsOutputError(
            f"{held_out_url} has {len(actuals)} lines for the {len(contexts)} series of "
            f"{input_url}; rerun the plan_scoring task"
        )
    return Window(index=0, contexts=contexts, actuals=actuals)


def score_output(job: Mapping[str, Any], window, freq: str) -> dict[str, float] | None:
    """Score one scoring job's forecasts on ``window`` with the local backtest's metrics.

    Returns:
        The pooled metrics of ``models.backtest.backtest`` (``mean_wql`` and the rest),
        or None when the forecasts have another number of steps than the window.

    Raises:
        AwsOutputError: the output is missing or has a line count other than the
            window's series count.
    """
    from models.backtest import backtest
    from models.baselines import season_length_for
    from models.output import parse_forecast_line
    from saodf.aws_pipeline import AwsOutputError, job_output_lines

    lines = job_output_lines(job["mode"], job["output"], job["job_name"])
    if len(lines) != len(window.contexts):
        raise AwsOutputError(
            f"scoring job {job['job_name']} wrote {len(lines)} forecast lines for the "
            f"{len(window.contexts)} series of group {job['group']!r}; rerun the scoring task"
        )
    forecasts = [parse_forecast_line(line) for line in lines]
    horizon = len(window.actuals[0]) if window.actuals else 0
    if any(len(forecast["mean"]) != horizon for forecast in forecasts):
        logger.warning(
            "scoring job %s of the %s (version %s) forecasts another number of steps than "
            "the %d held-out ones, so it cannot be scored",
            job["job_name"],
            job["role"],
            job["model_version"],
            horizon,
        )
        return None
    return backtest(lambda contexts: forecasts, [window], season_length_for(freq))["metrics"]


def _job_cost(job: Mapping[str, Any], sagemaker_client) -> float:
    from saodf.aws_pipeline import inference_cost

    return float(inference_cost(job, sagemaker_client)["estimated_cost_usd"])
