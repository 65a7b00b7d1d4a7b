"""Model comparison across MLflow runs, written as Markdown and HTML without the MLflow UI."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.errors import RegistryError
from models.sagemaker import MODEL_KIND as SAGEMAKER_KIND

logger = logging.getLogger(__name__)

METRICS = (
    "mean_wql",
    "wql_0.1",
    "wql_0.5",
    "wql_0.9",
    "mase",
    "coverage_80",
    "training_seconds",
    # SageMaker's own figure on a training job's test channel, not comparable across data.
    "test_mean_wQuantileLoss",
)
# The local backend's kinds and the SageMaker DeepAR runs of the aws target.
LOCAL_KINDS = ("deepar", "seasonal_naive", "auto_ets")
MODEL_KINDS = (*LOCAL_KINDS, SAGEMAKER_KIND)


def collect_runs(
    tracking_uri: str,
    experiment: str,
    run_key: str | None = None,
    group: str | None = None,
    max_runs: int = 500,
) -> list[dict[str, Any]]:
    """Return one row per model run of ``experiment``, newest first.

    Raises:
        RegistryError: the experiment does not exist.
    """
    from models.registry import check_filter_value, client_for

    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise RegistryError(
            f"MLflow experiment {experiment!r} not found at {tracking_uri}; run the pipeline "
            "first or pass --experiment"
        )
    # MLflow filters support IN only on a few attributes, so model kinds are filtered below.
    filters = ["tags.model_kind != 'parent'"]
    if run_key:
        filters.append(f"tags.run_key = '{check_filter_value('run_key', run_key)}'")
    if group:
        filters.append(f"tags.group = '{check_filter_value('group', group)}'")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=" and ".join(filters),
        order_by=["attributes.start_time DESC"],
        max_results=max_runs,
    )
    parents = {}
    rows = []
    for run in runs:
        tags = run.data.tags
        kind = tags.get("model_kind")
        if kind not in MODEL_KINDS:
            continue
        if kind == SAGEMAKER_KIND:
            decision = _sagemaker_decision(run)
        else:
            parent_id = tags.get("mlflow.parentRunId")
            if parent_id and parent_id not in parents:
                parents[parent_id] = client.get_run(parent_id).data.tags
            decision = _local_decision(run, parents.get(parent_id, {}))
        rows.append(
            {
                "run_id": run.info.run_id,
                "run_key": tags.get("run_key", ""),
                "group": tags.get("group", ""),
                "kind": kind,
                "data_hash": tags.get("data_hash", "")[:12],
                **decision,
                **{name: run.data.metrics.get(name, math.nan) for name in METRICS},
            }
        )
    logger.info("collected %d model runs of experiment %s", len(rows), experiment)
    return rows


def _local_decision(run, parent_tags: Mapping[str, str]) -> dict[str, Any]:
    # A local run is one kind of a group's backtest. Its parent run records the decision.
    tags = run.data.tags
    return {
        "candidate": tags.get("candidate") == "true" or tags.get("champion") == "true",
        "champion_kind": parent_tags.get("champion_kind", ""),
        "champion_version": parent_tags.get("model_version", ""),
        "promoted": parent_tags.get("promoted", ""),
        "windows": run.data.params.get("backtest_windows", "1"),
    }


def _sagemaker_decision(run) -> dict[str, Any]:
    # A SageMaker run is its group's only candidate and carries the decision itself. It
    # has backtest metrics only when it was scored against a champion of other data.
    tags = run.data.tags
    return {
        "candidate": True,
        "champion_kind": tags.get("champion_kind", ""),
        "champion_version": tags.get("champion_version", ""),
        "promoted": tags.get("promoted", ""),
        "windows": run.data.params.get("backtest_windows", "0"),
    }


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return per group and kind the run count, mean of mean_wql and how often it won."""
    buckets: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        buckets.setdefault((row["group"], row["kind"]), []).append(row)
    summary = []
    for (group, kind), members in sorted(buckets.items()):
        scores = [r["mean_wql"] for r in members if not math.isnan(r["mean_wql"])]
        summary.append(
            {
                "group": group,
                "kind": kind,
                "runs": len(members),
                "mean_of_mean_wql": sum(scores) / len(scores) if scores else math.nan,
                "best_in_run": sum(1 for r in members if r["candidate"]),
            }
        )
    return summary


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


_RUN_COLUMNS = (
    "run_key",
    "group",
    "kind",
    "candidate",
    "champion_kind",
    "champion_version",
    "promoted",
    "windows",
    *METRICS,
    "data_hash",
    "run_id",
)
_SUMMARY_COLUMNS = ("group", "kind", "runs", "mean_of_mean_wql", "best_in_run")
METRICS_EXPLANATION = (
    "Metrics are pooled over the rolling backtest windows of each run. A deepar_sagemaker "
    "run has them only when it was scored against a champion trained on other data (0 "
    "windows otherwise). Its test_mean_wQuantileLoss is SageMaker's figure on the run's "
    "own test channel."
)


def to_markdown(rows: Sequence[Mapping[str, Any]], experiment: str) -> str:
    """Format the runs and their summary as Markdown tables."""

    def table(columns: Sequence[str], items: Sequence[Mapping[str, Any]]) -> list[str]:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(item[c]) for c in columns) + " |" for item in items]
        return lines

    lines = [f"# Model comparison: experiment {experiment}", ""]
    lines += [METRICS_EXPLANATION, ""]
    lines += ["## Summary", ""] + table(_SUMMARY_COLUMNS, summarize(rows))
    lines += ["", "## Runs", ""] + table(_RUN_COLUMNS, rows)
    return "\n".join(lines) + "\n"


def to_html(rows: Sequence[Mapping[str, Any]], experiment: str) -> str:
    """Format the runs and their summary as one self-contained HTML page."""

    def table(columns: Sequence[str], items: Sequence[Mapping[str, Any]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(item[c]))}</td>" for c in columns) + "</tr>"
            for item in items
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    title = html.escape(f"Model comparison: experiment {experiment}")
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h1>{title}</h1>"
        f"<p>{html.escape(METRICS_EXPLANATION)}</p>"
        f"<h2>Summary</h2>{table(_SUMMARY_COLUMNS, summarize(rows))}"
        f"<h2>Runs</h2>{table(_RUN_COLUMNS, rows)}</body></html>\n"
    )


def write_comparison(
    rows: Sequence[Mapping[str, Any]], experiment: str, out_dir: Path
) -> dict[str, Path]:
    """Write ``comparison.md`` and ``comparison.html`` into ``out_dir`` and return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "comparison.md", "html": out_dir / "comparison.html"}
    paths["markdown"].write_text(to_markdown(rows, experiment), encoding="utf-8")
    paths["html"].write_text(to_html(rows, experiment), encoding="utf-8")
    return paths
