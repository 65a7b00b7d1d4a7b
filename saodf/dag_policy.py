"""Rules every SAODF DAG must follow, checked by the DAG integrity tests.

``check_dag`` inspects a parsed DAG; ``module_level_heavy_imports`` runs a DAG file in a
fresh interpreter and lists the heavy libraries it imports at module level, beyond what
``airflow.sdk`` itself imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Libraries that take seconds to import or hundreds of MB: only tasks may import them.
HEAVY_MODULES = (
    "torch",
    "gluonts",
    "lightning",
    "mlflow",
    "great_expectations",
    "pyspark",
    "statsforecast",
    "sklearn",
    "pandas",
    "matplotlib",
)
# Task ids (last part, after any task-group prefix) that need the CPU-heavy pool.
HEAVY_TASKS = ("preprocess", "train", "batch_transform")
DEFAULT_POOL = "default_pool"


def check_dag(dag) -> list[str]:
    """Return the rule violations of ``dag`` as messages naming the DAG, task and rule."""
    problems = []
    owners = {task.owner for task in dag.tasks}
    if not owners or owners & {None, "", "airflow"}:
        problems.append(f"{dag.dag_id}: every task needs an owner other than the default 'airflow'")
    if not dag.tags:
        problems.append(f"{dag.dag_id}: no tags")
    if not dag.doc_md:
        problems.append(f"{dag.dag_id}: no doc_md")
    for task in dag.tasks:
        where = f"{dag.dag_id}.{task.task_id}"
        if not task.retries or task.retries < 1:
            problems.append(f"{where}: retries must be at least 1")
        if not task.retry_exponential_backoff:
            problems.append(f"{where}: retry_exponential_backoff is off")
        if task.execution_timeout is None:
            problems.append(f"{where}: no execution_timeout")
        if task.task_id.rsplit(".", 1)[-1] in HEAVY_TASKS and task.pool == DEFAULT_POOL:
            problems.append(
                f"{where}: a CPU-heavy task must run in a sized pool, not {DEFAULT_POOL}"
            )
    return problems


_LIST_MODULES = """
import json, runpy, sys
sys.path[:0] = {paths!r}
import airflow.sdk
before = set(sys.modules)
runpy.run_path({path!r}, run_name="dag_under_check")
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def module_level_heavy_imports(path: Path, extra_paths: list[str] | None = None) -> list[str]:
    """Return the heavy top-level packages that parsing the DAG file ``path`` imports."""
    code = _LIST_MODULES.format(paths=list(extra_paths or []), path=str(path))
    result = subprocess.run(  # noqa: S603 - our own interpreter and a file of ours
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"parsing {path} failed: {result.stderr[-2000:]}")
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    tops = {name.split(".", 1)[0] for name in imported}
    return sorted(tops & set(HEAVY_MODULES))
