"""Batch path of SAODF: raw telemetry to a trained DeepAR champion and a filled forecast cache.

The DAG only wires tasks; their logic lives in ``saodf.pipeline`` (imported inside each
task so that parsing this file stays cheap).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronTriggerTimetable,
    TaskGroup,
    TriggerRule,
    task,
)

from saodf_airflow.triggers import WindowEventTrigger

WINDOW_TOPIC = "telemetry.windows"
# Preprocessing, training and transform share the CPU: the stack sizes this pool for the
# machine (SAODF_HEAVY_POOL_SLOTS, 1 by default).
HEAVY_POOL = "saodf_heavy"
# Tasks that only wait on a Glue or SageMaker job (SAODF_REMOTE_POOL_SLOTS, 4 by default).
REMOTE_POOL = "saodf_remote"
# "local" runs every stage in the Airflow worker; "aws" submits Glue and SageMaker jobs.
TARGET = os.environ.get("SAODF_TARGET", "local")
# A SageMaker task waits for its job: Spot wait (at most 1 h for built-in DeepAR) plus upload.
SAGEMAKER_TASK_TIMEOUT = timedelta(minutes=80)

# Tenants with their own pipeline DAG (telemetry_pipeline__<tenant>), comma-separated. The
# stack sets it from the tenant registry when it starts Airflow.
TENANTS = [name for name in os.environ.get("SAODF_PIPELINE_TENANTS", "").split(",") if name]
# Emitted by the drift_monitor DAG when devices drift; its extra has the window-event fields.
retrain_asset = Asset(name="retrain_request")

DOC = """
### telemetry_pipeline
Runs for every window event on `telemetry.windows` (the lake writer emits one after N
messages or T seconds), for every `retrain_request` from the `drift_monitor` DAG, and
every hour, so history can be backfilled with
`airflow backfill create`. Each run is keyed by its window id or data interval; a
replayed window whose run already finished is skipped.

Stages: validate raw data (Great Expectations, bad batches quarantined) → preprocess
(Glue job script: z-score outliers, imputation, resampling, DeepAR JSON Lines) →
validate prepared data → train DeepAR and a seasonal-naive baseline, register the
better one as `champion` in MLflow → batch transform → fill the Redis forecast cache →
tear down the batch workspace → log a cost summary to MLflow.

With `SAODF_TARGET=aws` preprocessing is an AWS Glue job, DeepAR trains with SageMaker
managed Spot training (one mapped task per frequency group) and forecasts with batch
transform or a Spot inference job, whichever the cost model prices lower; the outputs
are collected from S3 into the lake before the cache is filled. When the champion was
trained on other data, scoring jobs forecast the run's held-out windows with both
models, and `champion` moves only when the candidate's mean wQL is lower.
"""

default_args = {
    "owner": "saodf",
    "retries": 1,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
    "execution_timeout": timedelta(minutes=20),
}

TENANT_DOC = """
Tenant `{tenant}`: windows come from `t.{tenant}.telemetry.windows`, and every stage reads
and writes only the tenant's lake prefix (`tenants/{tenant}/`), MLflow experiment and
registered models (`{tenant}.`) and forecast cache keys (`saodf:t:{tenant}:`).
"""


def build_pipeline(tenant: str | None = None) -> DAG:
    """Build the pipeline DAG of the default deployment, or of one tenant."""
    suffix = f"__{tenant}" if tenant else ""
    topic_prefix = f"t.{tenant}." if tenant else ""
    windows_asset = Asset(
        name=f"telemetry_windows{suffix}",
        watchers=[
            AssetWatcher(
                name=f"telemetry_windows_watcher{suffix}",
                trigger=WindowEventTrigger(
                    topics=[topic_prefix + WINDOW_TOPIC],
                    # Each tenant's connection has its own consumer group (set by the stack).
                    kafka_config_id=(
                        f"saodf_kafka_{tenant.replace('-', '_')}" if tenant else "saodf_kafka"
                    ),
                    dlq_topic=topic_prefix + "telemetry.dlq",
                ),
            )
        ],
    )
    # Assets are named without a URI: a URI scheme makes Airflow load every provider's URI
    # handlers at parse time (about 0.5 s measured by bench/dag_parse.py).
    forecast_cache_asset = Asset(name=f"forecast_cache{suffix}")
    # Drift monitoring covers the default deployment's champions only.
    assets = windows_asset if tenant else (windows_asset | retrain_asset)
    with DAG(
        dag_id=f"telemetry_pipeline{suffix}",
        description="Validate, preprocess, train, forecast and cache IoT telemetry",
        doc_md=DOC + (TENANT_DOC.format(tenant=tenant) if tenant else ""),
        schedule=AssetOrTimeSchedule(
            # interval=1 h gives each scheduled run the data interval [trigger - 1 h, trigger).
            timetable=CronTriggerTimetable(
                "0 * * * *", timezone="UTC", interval=timedelta(hours=1)
            ),
            assets=assets,
        ),
        start_date=datetime(2013, 12, 1),
        catchup=False,
        max_active_runs=1,
        default_args=default_args,
        tags=["saodf", "batch", "deepar", *([f"tenant:{tenant}"] if tenant else [])],
    ) as dag:
        _pipeline_tasks(tenant, forecast_cache_asset)
    return dag


def _pipeline_tasks(tenant: str | None, forecast_cache_asset: Asset) -> None:

    @task(execution_timeout=timedelta(minutes=2))
    def resolve_scope(**context) -> dict:
        """Turn the triggering window events or the data interval into the run scope."""
        from airflow.exceptions import AirflowSkipException

        from saodf import pipeline
        from saodf_airflow.triggers import parse_window_event

        events = []
        for asset_events in (context.get("triggering_asset_events") or {}).values():
            for asset_event in asset_events:
                extra = asset_event.extra or {}
                if extra.get("payload") is not None:
                    events.append(parse_window_event(extra["payload"]))
                elif "window_id" in extra:
                    events.append(parse_window_event(extra))
        if events:
            scope = pipeline.with_tenant(pipeline.merge_window_events(events), tenant)
        else:
            scope = pipeline.scope_from_interval(
                context["data_interval_start"], context["data_interval_end"]
            )
            scope = pipeline.resolve_devices(pipeline.with_tenant(scope, tenant))
            if not scope["devices"]:
                raise AirflowSkipException(
                    f"no raw readings in the interval {scope['interval_start']} - {scope['end']}"
                )
        if pipeline.is_done(scope):
            raise AirflowSkipException(f"run {scope['run_key']} already finished: duplicate window")
        if not pipeline.claim_run(scope, context["run_id"]):
            raise AirflowSkipException(
                f"every window of run {scope['run_key']} is claimed by another DAG run: duplicate"
            )
        return scope

    scope = resolve_scope()

    with TaskGroup("quality_and_prep", tooltip="Great Expectations gates around the Glue job"):

        @task
        def validate_raw(scope: dict) -> dict:
            """Gate the raw readings with the raw_telemetry suite; quarantine them on failure."""
            from saodf import pipeline

            return pipeline.validate_raw(scope)

        @task(pool=HEAVY_POOL)
        def preprocess(scope: dict) -> dict:
            """Run the Glue job script; skip the rest of the run when no device has enough data."""
            from airflow.exceptions import AirflowSkipException

            from saodf import pipeline

            try:
                return pipeline.preprocess(scope)
            except pipeline.NoDataError as exc:
                raise AirflowSkipException(str(exc)) from exc

        @task
        def validate_prepared(scope: dict) -> dict:
            """Gate the prepared series and DeepAR channels; quarantine them on failure."""
            from saodf import pipeline

            return pipeline.validate_prepared(scope)

        raw_checked = validate_raw(scope)
        if TARGET == "aws":
            from saodf_airflow.aws import PrepareGlueJobOperator

            @task
            def stage_code() -> dict:
                """Upload the Glue script, the code zip and the Spot entry point if they changed."""
                from saodf import aws_pipeline

                return aws_pipeline.stage_code()

            from saodf_airflow.terraform import TerraformBatchOperator

            # The run's scratch bucket, job role and key; the teardown task destroys them.
            # Inputs come from the workers' TF_VAR_* variables (platform output batch_stack_env).
            applied = TerraformBatchOperator(
                task_id="apply_batch",
                doc_md="Create the run's scratch bucket, job role and key with Terraform.",
                action="apply",
            )
            prepared = PrepareGlueJobOperator(
                task_id="preprocess",
                doc_md="Run the preprocessing script as an AWS Glue job for the run's devices.",
                scope=scope,
                job_poll_interval=15,
                verbose=False,
                pool=REMOTE_POOL,
                execution_timeout=timedelta(minutes=60),
            )
            scope >> applied >> stage_code() >> prepared
        else:
            prepared = preprocess(scope)
        prepared_checked = validate_prepared(scope)
        raw_checked >> prepared >> prepared_checked

    with TaskGroup("model", tooltip="DeepAR vs baseline in MLflow, then batch transform"):

        @task(pool=HEAVY_POOL, execution_timeout=timedelta(minutes=30))
        def train(scope: dict, **context) -> dict:
            """Train per frequency group; the task's "MLflow run" link opens the first group's run."""
            from saodf import pipeline
            from saodf_airflow.links import MLFLOW_URL_XCOM_KEY

            result = pipeline.train(scope)
            if result["mlflow_urls"]:
                first = sorted(result["mlflow_urls"])[0]
                context["ti"].xcom_push(key=MLFLOW_URL_XCOM_KEY, value=result["mlflow_urls"][first])
            return result

        @task(pool=HEAVY_POOL)
        def batch_transform(scope: dict, trained: dict) -> dict:
            """Forecast every series with its group's champion into DeepAR output JSON Lines."""
            from saodf import pipeline

            return pipeline.batch_transform(scope, trained)

        if TARGET == "aws":
            from saodf_airflow.aws import (
                DeepARTrainingOperator,
                DeepARTransformOperator,
                ScoringSpotInferenceOperator,
                ScoringTransformOperator,
                SpotInferenceOperator,
            )

            @task
            def plan_jobs(scope: dict) -> list:
                """List the frequency groups; each one's inference task runs, the other skips."""
                from saodf import aws_pipeline

                return aws_pipeline.plan_jobs(scope)

            @task
            def record_training(scope: dict, trained: list, **context) -> dict:
                """Log each SageMaker job to MLflow, register its model and move champion."""
                from models.sagemaker import AwsJobSettings
                from saodf import aws_pipeline, pipeline
                from saodf_airflow.links import MLFLOW_URL_XCOM_KEY

                settings = pipeline.get_settings()
                client = aws_pipeline.sagemaker_client(
                    AwsJobSettings.from_settings(settings).aws_conn_id
                )
                result = aws_pipeline.record_training(scope, list(trained), client)
                runs = sorted(result["groups"].items())
                if runs:
                    url = pipeline.mlflow_run_url(
                        settings.mlflow_tracking_uri, runs[0][1]["mlflow_run_id"]
                    )
                    context["ti"].xcom_push(key=MLFLOW_URL_XCOM_KEY, value=url)
                return result

            @task
            def plan_scoring(scope: dict, recorded: dict) -> list:
                """Write the backtest input of each group whose champion trained on other data."""
                from saodf import aws_promotion

                return aws_promotion.plan_scoring(scope, recorded)

            # Scoring a champion of the local backend loads and runs it in the worker.
            @task(pool=HEAVY_POOL, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
            def promote(scope: dict, recorded: dict, **context) -> dict:
                """Score candidate and champion on the same windows and move champion if better."""
                from models.sagemaker import AwsJobSettings
                from saodf import aws_pipeline, aws_promotion, pipeline
                from saodf_airflow.aws import pull_results

                scored = pull_results(
                    context["ti"], ("model.score_transform", "model.score_spot_inference")
                )
                client = aws_pipeline.sagemaker_client(
                    AwsJobSettings.from_settings(pipeline.get_settings()).aws_conn_id
                )
                return aws_promotion.promote(scope, recorded, scored, client)

            @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
            def collect_forecasts(scope: dict, **context) -> dict:
                """Copy the inference outputs from S3 into the lake and log their cost."""
                from models.sagemaker import AwsJobSettings
                from saodf import aws_pipeline, pipeline
                from saodf_airflow.aws import pull_results

                ti = context["ti"]
                results = pull_results(ti, ("model.batch_transform", "model.spot_inference"))
                collected = aws_pipeline.collect_forecasts(scope, results)
                client = aws_pipeline.sagemaker_client(
                    AwsJobSettings.from_settings(pipeline.get_settings()).aws_conn_id
                )
                recorded = ti.xcom_pull(task_ids="model.record_training") or {}
                collected["costs"] = aws_pipeline.log_inference_costs(
                    results, collected, recorded, client
                )
                return collected

            plan = plan_jobs(scope)
            print_log = os.environ.get("SAODF_SAGEMAKER_PRINT_LOG", "true") != "false"
            trained = DeepARTrainingOperator.partial(
                task_id="train",
                doc_md="Train one group's DeepAR with SageMaker managed Spot training.",
                scope=scope,
                print_log=print_log,
                pool=REMOTE_POOL,
                execution_timeout=SAGEMAKER_TASK_TIMEOUT,
            ).expand(group=plan)
            recorded = record_training(scope, trained.output)
            scoring = plan_scoring(scope, recorded)
            scored_transform = ScoringTransformOperator.partial(
                task_id="score_transform",
                doc_md="Forecast one group's backtest input with a batch transform job.",
                scope=scope,
                pool=REMOTE_POOL,
                execution_timeout=SAGEMAKER_TASK_TIMEOUT,
            ).expand(request=scoring)
            scored_spot = ScoringSpotInferenceOperator.partial(
                task_id="score_spot_inference",
                doc_md="Forecast one group's backtest input with a Spot inference job.",
                scope=scope,
                print_log=print_log,
                pool=REMOTE_POOL,
                execution_timeout=SAGEMAKER_TASK_TIMEOUT,
            ).expand(request=scoring)
            promoted = promote(scope, recorded)
            [scored_transform, scored_spot] >> promoted
            transformed_groups = DeepARTransformOperator.partial(
                task_id="batch_transform",
                doc_md="Forecast one group with a SageMaker batch transform job.",
                scope=scope,
                trained=trained.output,
                pool=REMOTE_POOL,
                execution_timeout=SAGEMAKER_TASK_TIMEOUT,
            ).expand(group=plan)
            spot_groups = SpotInferenceOperator.partial(
                task_id="spot_inference",
                doc_md="Forecast one group with a Spot training job that runs DeepAR inference.",
                scope=scope,
                trained=trained.output,
                print_log=print_log,
                pool=REMOTE_POOL,
                execution_timeout=SAGEMAKER_TASK_TIMEOUT,
            ).expand(group=plan)
            transformed = collect_forecasts(scope)
            [transformed_groups, spot_groups, promoted] >> transformed
            prepared_checked >> plan
        else:
            trained = train(scope)
            transformed = batch_transform(scope, trained)
            prepared_checked >> trained

    @task(outlets=[forecast_cache_asset])
    def populate_cache(scope: dict, transformed: dict) -> dict:
        """Load the run's forecasts into the Redis forecast cache."""
        from saodf import pipeline

        return pipeline.populate_cache(scope)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def teardown(**context) -> dict:
        """Remove the batch workspace whatever happened upstream."""
        from saodf import pipeline

        scope = context["ti"].xcom_pull(task_ids="resolve_scope")
        run_key = scope["run_key"] if scope else f"airflow-{context['run_id']}"
        return pipeline.teardown(scope, run_key)

    @task
    def report_cost(scope: dict, **context) -> dict:
        """Log the stage times and cost to MLflow and mark the run key done."""
        from saodf import pipeline

        ti = context["ti"]
        stage_tasks = {
            "validate_raw": "quality_and_prep.validate_raw",
            "preprocess": "quality_and_prep.preprocess",
            "validate_prepared": "quality_and_prep.validate_prepared",
            "train": "model.train",
            "batch_transform": "model.batch_transform",
            "populate_cache": "populate_cache",
            "teardown": "teardown",
        }
        if TARGET == "aws":
            stage_tasks.update(
                spot_inference="model.spot_inference",
                score_transform="model.score_transform",
                score_spot_inference="model.score_spot_inference",
                collect_forecasts="model.collect_forecasts",
            )
        seconds = {}
        for stage, task_id in stage_tasks.items():
            # A mapped task (one per group on the aws target) returns one result per group.
            result = ti.xcom_pull(task_ids=task_id) or {}
            results = [result] if isinstance(result, dict) else [r for r in result if r]
            seconds[stage] = sum(float(r.get("seconds", 0.0)) for r in results)
        cached = ti.xcom_pull(task_ids="populate_cache") or {}
        forecast_count = cached.get("stats", {}).get("entries")
        summary = pipeline.report_cost(scope, seconds, forecast_count=forecast_count)
        if summary.get("run_id"):
            from saodf_airflow.links import MLFLOW_URL_XCOM_KEY

            url = pipeline.mlflow_run_url(
                pipeline.get_settings().mlflow_tracking_uri, summary["run_id"]
            )
            ti.xcom_push(key=MLFLOW_URL_XCOM_KEY, value=url)
        return summary

    cached = populate_cache(scope, transformed)
    cleaned = teardown()
    cached >> cleaned
    [cached, cleaned] >> report_cost(scope)


dag = build_pipeline()
for _tenant in TENANTS:
    globals()[f"dag_{_tenant.replace('-', '_')}"] = build_pipeline(_tenant)
