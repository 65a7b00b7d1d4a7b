"""The ``saodf models`` and ``saodf cost`` sub-commands."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from saodf.config import get_settings
from saodf.errors import SaodfError

models_app = typer.Typer(
    help="Compare forecasting models across MLflow runs.", no_args_is_help=True
)
cost_app = typer.Typer(help="Estimate what the platform costs on AWS.", no_args_is_help=True)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _default_out(kind: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return get_settings().home / "reports" / f"{kind}-{stamp}"


@models_app.command("compare")
def compare(
    experiment: Annotated[
        Optional[str], typer.Option(help="MLflow experiment (default SAODF's pipeline experiment).")
    ] = None,
    tracking_uri: Annotated[
        Optional[str], typer.Option(help="MLflow tracking URI (default SAODF_MLFLOW_URI).")
    ] = None,
    run_key: Annotated[Optional[str], typer.Option(help="Only runs of this run key.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Only this frequency group.")] = None,
    max_runs: Annotated[int, typer.Option(help="Maximum number of model runs to read.")] = 500,
    out: Annotated[
        Optional[Path], typer.Option(help="Folder for comparison.md and comparison.html.")
    ] = None,
):
    """Print the model runs of an experiment and write them as Markdown and HTML."""
    from models.compare import collect_runs, to_markdown, write_comparison

    settings = get_settings()
    name = experiment or settings.mlflow_experiment
    try:
        rows = collect_runs(
            tracking_uri or settings.mlflow_tracking_uri, name, run_key, group, max_runs
        )
    except SaodfError as exc:
        _fail(exc)
    paths = write_comparison(rows, name, out or _default_out("models-compare"))
    typer.echo(to_markdown(rows, name))
    typer.echo(f"wrote {paths['markdown']} and {paths['html']}")


@cost_app.command("report")
def cost_report(
    devices: Annotated[int, typer.Option(help="Devices forecast per batch run.")] = 500,
    requests_per_day: Annotated[int, typer.Option(help="Forecast requests per day.")] = 200_000,
    payload_kb: Annotated[float, typer.Option(help="Payload per request in KB.")] = 4.0,
    batch_runs_per_day: Annotated[int, typer.Option(help="Batch inference runs per day.")] = 24,
    training_runs_per_day: Annotated[int, typer.Option(help="Training jobs per day.")] = 1,
    training_seconds: Annotated[
        float, typer.Option(help="Billed seconds of one training job.")
    ] = 600.0,
    cache_hit_rate: Annotated[
        float, typer.Option(help="Share of requests served from the cache (0-1).")
    ] = 0.94,
    prices: Annotated[
        Optional[Path], typer.Option(help="Prices file (default models/prices.json).")
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Folder for cost_report.md, .json and the PNG chart.")
    ] = None,
):
    """Compare always-on endpoint, batch, batch + Spot and hybrid + cache for a workload."""
    from models.cost_report import Workload, build_report, cost_chart, report_markdown

    known = {f.name for f in fields(Workload)}
    options = {
        "devices": devices,
        "requests_per_day": requests_per_day,
        "payload_kb": payload_kb,
        "batch_runs_per_day": batch_runs_per_day,
        "training_runs_per_day": training_runs_per_day,
        "training_seconds": training_seconds,
        "cache_hit_rate": cache_hit_rate,
    }
    try:
        workload = Workload(**{k: v for k, v in options.items() if k in known})
        report = build_report(workload, prices)
    except SaodfError as exc:
        _fail(exc)
    folder = out or _default_out("cost-report")
    folder.mkdir(parents=True, exist_ok=True)
    chart = cost_chart(folder / "cost_per_1000_requests.png", report["sweep_per_1000_requests"])
    (folder / "cost_report.md").write_text(report_markdown(report), encoding="utf-8")
    (folder / "cost_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    typer.echo(report_markdown(report))
    typer.echo(f"wrote {folder / 'cost_report.md'}, cost_report.json and {chart}")
