"""``saodf backfill``: ``airflow backfill create`` for the pipeline, with a progress bar."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from saodf.config import Settings
from saodf.errors import SaodfError, ServiceError

logger = logging.getLogger(__name__)

DAG_ID = "telemetry_pipeline"
FINISHED = {"success", "failed"}
# The DAG's CronTriggerTimetable fires at the top of each UTC hour, and the run triggered
# at T has the data interval [T - 1 h, T).
INTERVAL = timedelta(hours=1)
# With SQLite as Airflow's metadata DB, ``backfill create`` fails with "database is locked"
# when another Airflow process holds the write lock for longer than the busy timeout (5 s,
# the default of Python's sqlite3, which Airflow 3.3 keeps). Airflow 3.3 then removes the
# partly created backfill, so the command can run again.
LOCKED_ATTEMPTS = 4
LOCKED_RETRY_SECONDS = 5.0


def parse_date(text: str) -> datetime:
    """Parse an ISO 8601 date with a time zone.

    Raises:
        SaodfError: the text is not ISO 8601, names a day that does not exist or has no zone.
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        reason = str(exc)
        if "out of range" in reason or "must be in" in reason:
            raise SaodfError(
                f"date {text!r} is invalid: {reason}; use a date that exists"
            ) from None
        raise SaodfError(f"date {text!r} is not ISO 8601; use e.g. 2014-01-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise SaodfError(f"date {text!r} has no time zone; append Z for UTC")
    return moment


def data_intervals(
    from_date: datetime, to_date: datetime, now: datetime | None = None
) -> list[tuple[datetime, datetime]]:
    """Return the hourly data intervals that a backfill from ``from_date`` to ``to_date`` runs.

    These are the intervals ``[start, start + 1 h)`` that contain a moment of the range,
    both ends included. The first contains ``from_date`` and the last contains ``to_date``.

    Raises:
        SaodfError: the range is reversed, or its last interval has not ended by ``now``.
    """
    if to_date < from_date:
        raise SaodfError(
            f"--to-date {to_date.isoformat()} is before --from-date {from_date.isoformat()}; "
            "swap them"
        )
    first = from_date.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    last = to_date.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    now = now or datetime.now(timezone.utc)
    if last + INTERVAL > now:
        latest = now.replace(minute=0, second=0, microsecond=0) - INTERVAL
        raise SaodfError(
            f"--to-date {to_date.isoformat()} is in a data interval that ends at "
            f"{(last + INTERVAL).isoformat()}, after now ({now.isoformat(timespec='seconds')}); "
            f"use a --to-date before {(latest + INTERVAL).isoformat()}"
        )
    count = int((last - first) / INTERVAL) + 1
    return [(first + i * INTERVAL, first + (i + 1) * INTERVAL) for i in range(count)]


def create_backfill(
    settings: Settings, from_date: datetime, to_date: datetime, reprocess: str = "none"
) -> str:
    """Run ``airflow backfill create`` for the :func:`data_intervals` of the range.

    Airflow's backfill dates are trigger times, so the ends of the first and the last
    interval are passed. Returns the command's output.
    """
    from saodf.stack import services

    check_reprocess(reprocess)
    intervals = data_intervals(from_date, to_date)
    first_trigger, last_trigger = intervals[0][1], intervals[-1][1]
    argv = [
        services.find_binary("airflow"),
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        first_trigger.isoformat(),
        "--to-date",
        last_trigger.isoformat(),
        "--reprocess-behavior",
        reprocess,
    ]
    env = {**os.environ, **services.airflow_env(settings)}
    for attempt in range(1, LOCKED_ATTEMPTS + 1):
        result = subprocess.run(  # noqa: S603
            argv, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        output = (result.stdout + result.stderr).strip()
        if result.returncode == 0:
            break
        if "database is locked" not in output or attempt == LOCKED_ATTEMPTS:
            raise ServiceError(
                f"airflow backfill create failed with code {result.returncode} "
                f"(attempt {attempt} of {LOCKED_ATTEMPTS}): {output[-1500:]}"
            )
        logger.warning(
            "airflow backfill create of %s failed because the metadata DB is locked "
            "(attempt %d of %d); retrying in %.0f s",
            DAG_ID,
            attempt,
            LOCKED_ATTEMPTS,
            LOCKED_RETRY_SECONDS * attempt,
        )
        time.sleep(LOCKED_RETRY_SECONDS * attempt)
    logger.info(
        "backfill of %s created for %d data interval(s) from %s to %s",
        DAG_ID,
        len(intervals),
        intervals[0][0],
        intervals[-1][1],
    )
    return output


def check_reprocess(reprocess: str) -> None:
    """Raise SaodfError unless ``reprocess`` is an Airflow reprocess behavior."""
    if reprocess not in ("none", "completed", "failed"):
        raise SaodfError(f"--reprocess {reprocess!r} is invalid; use none, completed or failed")


def backfill_runs(client, first_trigger: datetime, last_trigger: datetime) -> list[dict[str, Any]]:
    """Return the backfill runs whose trigger time (run_after) is in the range, both included."""
    runs = client.get(
        f"/dags/{DAG_ID}/dagRuns",
        run_type="backfill",
        # A run's logical date is the start of its data interval, one hour before its
        # trigger time for this DAG's timetable.
        run_after_gte=first_trigger.isoformat(),
        run_after_lte=last_trigger.isoformat(),
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

    The runs are those of :func:`data_intervals`. Airflow creates a backfill's runs as
    earlier ones finish (``max_active_runs``), so the backfill's ``completed_at``, not the
    runs seen so far, marks the end.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from saodf.airflow_api import AirflowClient

    # Both checks run before any Airflow call, so bad values never reach Airflow.
    check_reprocess(reprocess)
    intervals = data_intervals(from_date, to_date)
    first_trigger, last_trigger = intervals[0][1], intervals[-1][1]
    client = AirflowClient(settings)
    known_backfills = {b["id"] for b in backfills(client)}
    before = {
        r["dag_run_id"]: r["state"] for r in backfill_runs(client, first_trigger, last_trigger)
    }
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
            runs = backfill_runs(client, first_trigger, last_trigger)
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
        "data_intervals": {
            "count": len(intervals),
            "first_start": intervals[0][0].isoformat(),
            "last_end": intervals[-1][1].isoformat(),
        },
        "runs": len(runs),
        "new_runs": len([r for r in runs if r["dag_run_id"] not in before]),
        "states": states,
        "run_ids": sorted(r["dag_run_id"] for r in runs),
        "airflow_output": output[-500:],
    }
