"""Rules every SAODF DAG must follow, checked by the DAG integrity tests.

``check_dag`` inspects a parsed DAG, ``check_task_graph`` compares its dependencies with
an expected graph and ``check_pools`` checks the sizes of the Airflow pools that the
stack creates. ``module_level_imports`` runs a DAG file in a fresh interpreter and lists
the top-level modules it imports at parse time beyond what ``airflow.sdk`` itself
imports, and ``disallowed_imports`` keeps those outside an allow-list of light modules.
``ruff_airflow3_findings`` runs ruff's Airflow 3 migration rules (AIR3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

# Task ids (last part, after any task-group prefix) that need the CPU-heavy pool.
HEAVY_TASKS = ("preprocess", "train", "batch_transform")
DEFAULT_POOL = "default_pool"
# The reference deployment of SAODF is a 2-core machine. Each task of a CPU-heavy pool
# keeps a core busy, so more slots than cores only makes the tasks share the cores.
MAX_HEAVY_POOL_SLOTS = 2
DOC_ATTRIBUTES = ("doc_md", "doc", "doc_rst", "doc_json", "doc_yaml")

# Top-level modules that a DAG file may add at parse time to what ``import airflow.sdk``
# loads, besides the standard library. Anything else (pandas, torch, mlflow, ...) must be
# imported inside a task. Airflow 3.3 itself imports croniter, packaging, pydantic and
# asgiref once a DAG with a cron timetable or asset watcher is built. The Kafka
# provider's shared-stream trigger, the base class of WindowEventTrigger, imports
# confluent_kafka (about 5 ms by ``python -X importtime``).
LIGHT_MODULES = frozenset(
    {
        "airflow",
        "asgiref",
        "confluent_kafka",
        "croniter",
        "packaging",
        "pydantic",
        "saodf_airflow",
    }
)
# Added on the aws target: its Glue and SageMaker operators subclass the Amazon provider's
# operators, which import boto3 and its dependencies when the DAG file is parsed.
AWS_TARGET_MODULES = frozenset(
    {
        "boto3",
        "botocore",
        "charset_normalizer",
        "jmespath",
        "requests",
        "s3transfer",
        "slugify",
        "urllib3",
    }
)
# multiprocessing registers ``__main__`` under this name when it is imported.
_STDLIB_MODULES = frozenset(sys.stdlib_module_names) | {"__mp_main__"}


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
        # The @task decorator copies the function's docstring into doc_md.
        if not any(getattr(task, name, None) for name in DOC_ATTRIBUTES):
            problems.append(f"{where}: no task doc; add a docstring or pass doc_md")
    return problems


def check_task_graph(dag, expected_edges: Iterable[tuple[str, str]]) -> list[str]:
    """Compare the tasks and dependencies of ``dag`` with ``(upstream, downstream)`` edges.

    Every expected edge must be in the DAG. The DAG may have further edges only between
    tasks that the expected graph already orders, such as an XCom argument passed from
    the first task to a later one.
    """
    expected = set(expected_edges)
    expected_tasks = {task_id for edge in expected for task_id in edge}
    tasks = {task.task_id for task in dag.tasks}
    edges = {(task.task_id, down) for task in dag.tasks for down in task.downstream_task_ids}
    problems = [
        f"{dag.dag_id}: missing task {task_id}" for task_id in sorted(expected_tasks - tasks)
    ]
    problems += [
        f"{dag.dag_id}: unexpected task {task_id}" for task_id in sorted(tasks - expected_tasks)
    ]
    problems += [
        f"{dag.dag_id}: missing edge {up} >> {down}" for up, down in sorted(expected - edges)
    ]
    ordered = _reachable_pairs(expected)
    problems += [
        f"{dag.dag_id}: unexpected edge {up} >> {down}"
        for up, down in sorted(edges - ordered)
        if up in expected_tasks and down in expected_tasks
    ]
    return problems


def _reachable_pairs(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    downstream: dict[str, set[str]] = {}
    for up, down in edges:
        downstream.setdefault(up, set()).add(down)
    pairs = set()
    for start in downstream:
        stack = list(downstream[start])
        seen: set[str] = set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            pairs.add((start, node))
            stack.extend(downstream.get(node, ()))
    return pairs


def check_pools(pools) -> list[str]:
    """Return a message for each CPU-heavy pool with more than ``MAX_HEAVY_POOL_SLOTS`` slots.

    ``pools`` are :class:`saodf.stack.manager.PoolSpec` objects, as ``airflow_pools``
    builds them from the settings.
    """
    return [
        f"pool {pool.name}: {pool.slots} slots for CPU-heavy tasks; the 2-core reference "
        f"machine runs at most {MAX_HEAVY_POOL_SLOTS} (set SAODF_HEAVY_POOL_SLOTS)"
        for pool in pools
        if pool.cpu_heavy and pool.slots > MAX_HEAVY_POOL_SLOTS
    ]


_LIST_MODULES = """
import json, runpy, sys
sys.path[:0] = {paths!r}
import airflow.sdk
before = set(sys.modules)
runpy.run_path({path!r}, run_name="dag_under_check")
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def module_level_imports(
    path: Path, extra_paths: list[str] | None = None, env: dict[str, str] | None = None
) -> list[str]:
    """Return the top-level modules that parsing the DAG file ``path`` imports.

    The file runs in a fresh interpreter after ``import airflow.sdk``, and only modules
    that the file's run adds to ``sys.modules`` count. ``extra_paths`` go first on
    ``sys.path``, and ``env`` is added to this process's environment.
    """
    code = _LIST_MODULES.format(paths=list(extra_paths or []), path=str(path))
    result = subprocess.run(  # noqa: S603 - our own interpreter and a file of ours
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise RuntimeError(f"parsing {path} failed: {result.stderr[-2000:]}")
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    return sorted({name.split(".", 1)[0] for name in imported})


def disallowed_imports(modules: Iterable[str], allowed=LIGHT_MODULES) -> list[str]:
    """Return the ``modules`` that are neither in the standard library nor in ``allowed``."""
    return sorted(set(modules) - _STDLIB_MODULES - set(allowed))


def ruff_airflow3_findings(paths: Iterable[Path | str], cwd: Path) -> list[str]:
    """Run ``ruff check --select AIR3`` on ``paths`` and return one line per finding.

    Paths in ruff's ``extend-exclude`` (such as the broken fixtures) are checked too when
    named here, because ``--no-force-exclude`` applies the excludes only to directory walks.
    """
    result = subprocess.run(  # noqa: S603 - our own interpreter and ruff
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--select",
            "AIR3",
            "--no-cache",
            "--no-force-exclude",
            "--output-format",
            "concise",
            *map(str, paths),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise RuntimeError(f"ruff failed with exit code {result.returncode}: {result.stderr}")
    return [line for line in result.stdout.splitlines() if ": AIR3" in line]
