"""The ``saodf evaluate`` sub-commands and the ``saodf bench`` command."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from saodf.config import get_settings
from saodf.errors import SaodfError

evaluate_app = typer.Typer(
    help="Score the platform's forecasts and anomaly detection on labelled data.",
    no_args_is_help=True,
)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _default_out(kind: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return get_settings().home / "reports" / f"{kind}-{stamp}"


def _parse_params(values: list[str] | None) -> dict[str, float]:
    params = {}
    for item in values or []:
        name, sep, text = item.partition("=")
        try:
            if not sep:
                raise ValueError
            params[name.strip()] = float(text)
        except ValueError:
            raise typer.BadParameter(
                f"--param {item!r} is invalid; use NAME=NUMBER, e.g. threshold=4"
            ) from None
    return params


@evaluate_app.command("anomalies")
def evaluate_anomalies_command(
    dataset: Annotated[
        Path, typer.Option(help="Dataset root in the NAB or SKAB layout (contains data/).")
    ],
    detector: Annotated[
        str,
        typer.Option(
            help="platform (the detect_anomaly action) or a detector of saodf.evaluation.detectors."
        ),
    ] = "platform",
    param: Annotated[
        Optional[list[str]], typer.Option(help="Detector parameter NAME=NUMBER (repeatable).")
    ] = None,
    group: Annotated[
        Optional[list[str]], typer.Option(help="Score only this group, e.g. valve1 (repeatable).")
    ] = None,
    use_stack_redis: Annotated[
        bool,
        typer.Option(help="Use the Redis of the configured stack instead of starting one."),
    ] = False,
    out: Annotated[
        Optional[Path],
        typer.Option(help="Report folder (default SAODF_HOME/reports/anomalies-<time>)."),
    ] = None,
):
    """Run an anomaly detector over a labelled dataset; print NAB and SKAB scores."""
    from saodf.evaluation.anomalies import evaluate_anomalies, summary_lines, write_report

    try:
        evaluation = evaluate_anomalies(
            dataset,
            get_settings(),
            detector=detector,
            params=_parse_params(param),
            groups=group or None,
            own_redis=not use_stack_redis,
        )
    except SaodfError as exc:
        _fail(exc)
    for line in summary_lines(evaluation):
        typer.echo(line)
    json_path, md_path = write_report(evaluation, out or _default_out("anomalies"))
    typer.echo(f"report {md_path} (figures in {json_path})")


@evaluate_app.command("forecast")
def evaluate_forecast_command(
    dataset: Annotated[
        Path, typer.Option(help="Dataset root in the NAB or SKAB layout (contains data/).")
    ],
    model: Annotated[
        Optional[list[str]],
        typer.Option(
            help="deepar, seasonal_naive or auto_ets (repeatable; default deepar and seasonal_naive)."
        ),
    ] = None,
    horizon: Annotated[int, typer.Option(help="Forecast horizon in steps.")] = 12,
    folds: Annotated[int, typer.Option(help="Number of rolling origins, one horizon apart.")] = 3,
    context_length: Annotated[int, typer.Option(help="DeepAR context length in steps.")] = 48,
    epochs: Annotated[int, typer.Option(help="DeepAR training epochs.")] = 5,
    batches: Annotated[int, typer.Option(help="DeepAR batches per epoch.")] = 20,
    max_series: Annotated[
        Optional[int], typer.Option(help="Backtest at most this many series.")
    ] = None,
    charts: Annotated[int, typer.Option(help="Number of fan charts in the report.")] = 8,
    group: Annotated[
        Optional[list[str]], typer.Option(help="Use only this group (repeatable).")
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(help="Report folder (default SAODF_HOME/reports/forecast-<time>)."),
    ] = None,
):
    """Backtest DeepAR and the baselines with rolling origins; write a report with fan charts."""
    from saodf.evaluation.forecast import (
        DEFAULT_MODELS,
        BacktestConfig,
        evaluate_forecast,
        write_report,
    )

    config = BacktestConfig(
        horizon=horizon,
        folds=folds,
        models=tuple(model or DEFAULT_MODELS),
        context_length=context_length,
        epochs=epochs,
        num_batches_per_epoch=batches,
        max_series=max_series,
        charts=charts,
    )
    out_dir = out or _default_out("forecast")
    try:
        result = evaluate_forecast(dataset, config, out_dir / "work", group or None)
    except SaodfError as exc:
        _fail(exc)
    typer.echo(
        f"{len(result.series)} series, {folds} folds of {horizon} steps; champion {result.champion}"
    )
    for name, metrics in result.aggregate.items():
        typer.echo(
            f"  {name:<15} mean_wql {metrics['mean_wql']:.4f}  mase {metrics['mase']:.3f}  "
            f"coverage_80 {metrics['coverage_80']:.3f}  ({result.seconds[name]:.1f} s)"
        )
    typer.echo(f"report {write_report(result, out_dir)}")


def bench(
    names: Annotated[
        Optional[list[str]], typer.Argument(help="Benchmarks to run (default: every bench/*.py).")
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Small inputs that finish in about a minute each.")
    ] = False,
    timeout: Annotated[
        Optional[float],
        typer.Option(help="Seconds before a benchmark is killed (default 600 quick, 1800 full)."),
    ] = None,
    list_only: Annotated[
        bool, typer.Option("--list", help="List the benchmarks and exit.")
    ] = False,
):
    """Run benchmarks on 127.0.0.1; write bench/out/<name>-<time>.json and a bench/RESULTS.md record."""
    from saodf import bench as harness

    try:
        selected = harness.discover(names)
    except SaodfError as exc:
        _fail(exc)
    if list_only:
        for name in selected:
            typer.echo(name)
        return
    failures = []
    for name in selected:
        typer.echo(f"bench {name}: running{' (quick)' if quick else ''}")
        try:
            result = harness.run_benchmark(name, get_settings(), quick, timeout)
        except SaodfError as exc:
            typer.secho(f"bench {name}: {exc}", fg=typer.colors.RED, err=True)
            failures.append(name)
            continue
        path = harness.write_outputs(name, result, quick, timeout)
        typer.echo(f"bench {name}: {result['seconds']:.1f} s, {path}")
        typer.echo("  " + json.dumps(result["figures"]))
        for goal_name, spec in result["goals"].items():
            typer.echo(
                f"  goal {goal_name}: {spec['measured']} vs {spec['target']} ({'met' if spec['met'] else 'not met'})"
            )
    if failures:
        typer.secho(f"failed: {', '.join(failures)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
