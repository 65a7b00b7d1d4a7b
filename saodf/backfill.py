"""``saodf backfill``: ``airflow backfill create`` for the pipeline, with a progress bar."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from datetime import datetime
from typing import Any

from saodf.config import Settings
from saodf.errors import SaodfError, ServiceError

logger = logging.getLogger(__name__)

DAG_ID = "telemetry_pipeline"
FINISHED = {"success", "failed"}


def parse_date(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SaodfError(f"date {text!r} is not ISO 8601; use e.g. 2014-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise SaodfError(f"date {text!r} has no time zone; append Z for UTC")
    return moment


def create_backfill(
    settings: Settings, from_date: datetime, to_date: datetime, reprocess: str = "none"
) -> str:
    """Run ``airflow backfill create`` with the stack's configuration; return its output."""
    from saodf.stack import services

    if to_date < from_date:
        raise SaodfError(
            f"--to-date {to_date.isoformat()} is before --from-date {from_date.isoformat()}"
        )
    if reprocess not in ("none", "completed", "failed"):
        raise SaodfError(f"--reprocess {reprocess!r} is invalid; use none, completed or failed")
    argv = [
        services.find_binary("airflow"),
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        from_date.isoformat(),
        "--to-date",
        to_date.isoformat(),
        "--reprocess-behavior",
        reprocess,
    ]
    env = {**os.environ, **services.airflow_env(settings)}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise ServiceError(
            f"airflow backfill create failed with code {result.returncode}: {output[-1500:]}"
        )
    logger.info("backfill of %s from %s to %s created", DAG_ID, from_date, to_date)
    return output


def backfill_runs(client, from_date: datetime, to_date: datetime) -> list[dict[str, Any]]:
    runs = client.get(
        f"/dags/{DAG_ID}/dagRuns",
        run_type="backfill",
        # Backfill dates are trigger times (run_after); a run's logical date is the start of
        # its data interval, one hour earlier for this DAG's timetable.
        run_after_gte=from_date.isoformat(),
        run_after_lte=to_date.isoformat(),
        limit=1000,
    ).get("dag_runs", [])
    return [r for r in runs if r.get("run_type") == "backfill"]


def backfills(client) -> list[dict[str, Any]]:
    return client.get("/backfills", dag_id=DAG_ID, limit=1000).get("backfills", [])


def run_backfill(
    settings: Settings,
    from_date: datetime,
    to_date: datetime,
    reprocess: str = "none",
    timeout: float = 3600.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Create the backfill and wait until Airflow marks it completed; return its runs' states.

    Airflow creates a backfill's runs as earlier ones finish (``max_active_runs``), so the
    backfill's ``completed_at``, not the runs seen so far, marks the end.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from saodf.airflow_api import AirflowClient

    client = AirflowClient(settings)
    known_backfills = {b["id"] for b in backfills(client)}
    before = {r["dag_run_id"]: r["state"] for r in backfill_runs(client, from_date, to_date)}
    output = create_backfill(settings, from_date, to_date, reprocess)
    created = [b for b in backfills(client) if b["id"] not in known_backfills]
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    with Progress(
        TextColumn("backfill {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task(DAG_ID, total=None)
        while True:
            runs = backfill_runs(client, from_date, to_date)
            done = sum(1 for r in runs if r["state"] in FINISHED)
            bar.update(task, total=len(runs), completed=done)
            if not created:
                # Nothing new to run (every date had a run and reprocess is "none").
                break
            backfill = client.get(f"/backfills/{created[0]['id']}")
            if backfill.get("completed_at") and done == len(runs):
                break
            if time.monotonic() > deadline:
                raise SaodfError(
                    f"backfill {created[0]['id']} did not finish within {timeout:.0f} s: "
                    f"{done} of {len(runs)} runs finished"
                )
            time.sleep(3)
    states: dict[str, int] = {}
    for run in runs:
        states[run["state"]] = states.get(run["state"], 0) + 1
    return {
        "backfill_id": created[0]["id"] if created else None,
        "runs": len(runs),
        "new_runs": len([r for r in runs if r["dag_run_id"] not in before]),
        "states": states,
        "run_ids": sorted(r["dag_run_id"] for r in runs),
        "airflow_output": output[-500:],
    }
