"""Audit watch: verify the audit hash chains and run the detection rules every 15 minutes."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronTriggerTimetable, task

DOC = """
### audit_watch
Every 15 minutes: `verify_chains` checks the hash chain of each audit log of the home
(action gateway, ingest gateway, admin commands) and fails when a record was edited,
removed or reordered. `detect` then runs the detection rules (brute-force key guessing,
cross-tenant attempts, invalid-token bursts, malformed input, unusual volume per key,
lone wrong keys from addresses that never authenticated, and rotated-out keys) and appends each alert whose last record falls in the run's interval to
`SAODF_HOME/logs/alerts.jsonl`, naming the rule, the actor and the evidence records.
"""

with DAG(
    dag_id="audit_watch",
    description="Verify the audit logs and flag unauthorized access",
    doc_md=DOC,
    schedule=CronTriggerTimetable("*/15 * * * *", timezone="UTC", interval=timedelta(minutes=15)),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "saodf",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=10),
    },
    tags=["saodf", "security", "audit"],
) as dag:

    @task
    def verify_chains() -> dict:
        """Check every audit log's hash chain; a broken chain fails the task."""
        from saodf.audit_tools import audit_paths, verify_checkpointed

        # Checkpoints of earlier checks catch records cut from a log's tail.
        return verify_checkpointed(audit_paths(), check_missing=True)

    @task
    def detect(counts: dict, **context) -> list[dict]:
        """Run the detection rules over the logs and keep the alerts of this interval."""
        from saodf.audit_tools import run_detection

        alerts = run_detection(
            since=context["data_interval_start"], until=context["data_interval_end"]
        )
        return [alert.to_dict() for alert in alerts]

    detect(verify_chains())
