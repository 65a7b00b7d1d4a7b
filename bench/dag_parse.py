"""DAG parse time against an empty interpreter start, measured in the same run.

Each DAG file runs in a fresh interpreter that has already imported the ``airflow.sdk``
names the DAG files use and built one DAG with one ``@task``, because a dag-processor
imports Airflow once before it parses files. Only the file's own run
(``runpy.run_path``) is timed: its imports (``saodf_airflow``, the Kafka provider's
trigger, croniter), DAG construction and task decoration. The import of ``airflow.sdk`` is excluded from the parse time and
reported on its own. The reference is the wall time of ``python -c pass``. Goal: each
file parses in at most twice that.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from saodf.config import PROJECT_ROOT, Settings

_TIMED_PARSE = """
import runpy, sys, time
sys.path[:0] = {paths!r}
from datetime import datetime
from airflow.sdk import (
    DAG, Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param, TaskGroup,
    TriggerRule, task,
)
# Warm the DAG machinery once, as a running dag-processor already has.
with DAG("warm_up", start_date=datetime(2024, 1, 1), schedule=None):
    task(lambda: None, task_id="noop")()
started = time.perf_counter()
runpy.run_path({path!r}, run_name="dag_under_bench")
print(time.perf_counter() - started)
"""


_TIMED_SDK_IMPORT = """
import time
started = time.perf_counter()
import airflow.sdk
print(time.perf_counter() - started)
"""


def _interpreter_start() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)  # noqa: S603
    return time.perf_counter() - started


def _parse_seconds(path) -> float:
    code = _TIMED_PARSE.format(
        paths=[str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")], path=str(path)
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def _sdk_import_seconds() -> float:
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _TIMED_SDK_IMPORT],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


def run(settings: Settings, quick: bool) -> dict:
    repeats = 3 if quick else 7
    reference = statistics.median(_interpreter_start() for _ in range(repeats))
    sdk_import = statistics.median(_sdk_import_seconds() for _ in range(repeats))
    figures, ratios, goals = {}, {}, {}
    for path in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        seconds = statistics.median(_parse_seconds(path) for _ in range(repeats))
        name = path.stem
        figures[f"{name}_parse_seconds"] = seconds
        ratios[f"{name}_parse_over_interpreter_start"] = seconds / reference
        goals[f"{name}_parse_within_2x_start"] = {
            "target": 2.0,
            "measured": seconds / reference,
            "met": seconds / reference <= 2.0,
            "direction": "min",
        }
    return {
        "figures": figures,
        "reference": {
            "interpreter_start_seconds": reference,
            "airflow_sdk_import_seconds": sdk_import,
        },
        "ratios": ratios,
        "goals": goals,
        "notes": [
            f"median of {repeats} runs each",
            "parse = time of runpy.run_path of the DAG file alone, in a fresh interpreter that "
            "has imported airflow.sdk and built one DAG with one @task; the file's own imports "
            "are included",
            "airflow_sdk_import_seconds = `import airflow.sdk` in a fresh interpreter, paid "
            "once per dag-processor and excluded from the parse figures",
            "reference = wall time of `python -c pass`",
        ],
    }
