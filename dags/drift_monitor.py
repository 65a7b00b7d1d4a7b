"""Drift monitor: score each champion device's recent telemetry against its training data.

When a device drifts past the configured limits, the monitor emits an event on the
``retrain_request`` asset, which starts ``telemetry_pipeline`` for the drifted devices.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param, task

# Assets are named without a URI: a URI scheme makes Airflow load every provider's URI
# handlers at parse time (about 0.5 s measured by bench/dag_parse.py).
retrain_asset = Asset(name="retrain_request")

DOC = """
### drift_monitor
Every hour, for each device served by a `champion` model: the population stability
index and the Kolmogorov-Smirnov statistic of its last `window_hours` of readings
against the series it was trained on, and the mean error of the cached forecast in
training standard deviations. Scores go to the MLflow experiment `drift_monitor`.
Devices past a limit are sent to `telemetry_pipeline` through the `retrain_request`
asset; without drift the request task is skipped and nothing is retrained.
"""

with DAG(
    dag_id="drift_monitor",
    description="Detect input and residual drift and request retraining",
    doc_md=DOC,
    schedule=CronTriggerTimetable("30 * * * *", timezone="UTC", interval=timedelta(hours=1)),
    start_date=datetime(2013, 12, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "window_hours": Param(24.0, type="number", minimum=0.1, description="Hours of recent data"),
        "psi_limit": Param(0.25, type="number", exclusiveMinimum=0),
        "ks_limit": Param(0.3, type="number", exclusiveMinimum=0),
        "residual_limit": Param(3.0, type="number", exclusiveMinimum=0),
    },
    default_args={
        "owner": "saodf",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=15),
    },
    tags=["saodf", "monitoring", "drift"],
) as dag:

    @task
    def check_drift(**context) -> dict:
        """Score every champion device and log the scores to MLflow."""
        from dataclasses import asdict

        from saodf import drift

        params = context["params"]
        end = context["data_interval_end"]
        limits = drift.DriftLimits(
            psi=params["psi_limit"], ks=params["ks_limit"], residual=params["residual_limit"]
        )
        results, request = drift.check_fleet(end, params["window_hours"], limits)
        run_id = drift.log_scores(results, end) if results else None
        return {
            "results": [asdict(r) for r in results],
            "request": request,
            "mlflow_run_id": run_id,
        }

    @task(outlets=[retrain_asset])
    def request_retraining(checked: dict, **context) -> dict:
        """Emit the retrain request; skipped (so no asset event) when nothing drifted."""
        from airflow.sdk.exceptions import AirflowSkipException

        request = checked["request"]
        if request is None:
            raise AirflowSkipException("no device drifted: no retraining requested")
        context["outlet_events"][retrain_asset].extra = request
        return request

    request_retraining(check_drift())
