"""The ``saodf`` command-line tool."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from saodf.cli_dlq import dlq_app
from saodf.cli_eval import bench as bench_command
from saodf.cli_eval import evaluate_app
from saodf.cli_models import cost_app, models_app
from saodf.cli_tenant import audit_app, tenant_app
from saodf.config import get_settings
from saodf.errors import SaodfError
from saodf.log import configure_logging

app = typer.Typer(help="SAODF: IoT telemetry forecasting platform.", no_args_is_help=True)
stack_app = typer.Typer(
    help="Start, stop and inspect the local stack on 127.0.0.1.", no_args_is_help=True
)
data_app = typer.Typer(help="Public datasets.", no_args_is_help=True)
actions_app = typer.Typer(help="OpenWhisk actions.", no_args_is_help=True)
cache_app = typer.Typer(help="The Redis forecast cache.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(data_app, name="data")
app.add_typer(dlq_app, name="dlq")
app.add_typer(actions_app, name="actions")
app.add_typer(cache_app, name="cache")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(models_app, name="models")
app.add_typer(cost_app, name="cost")
app.add_typer(tenant_app, name="tenant")
app.add_typer(audit_app, name="audit")
app.command("bench")(bench_command)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.callback()
def main(log_level: str = typer.Option("WARNING", help="Log level of SAODF modules on stderr.")):
    configure_logging(log_level)


@stack_app.command("up")
def stack_up(
    only: Optional[list[str]] = typer.Option(None, help="Start only this service (repeatable)."),
):
    """Start every local service that is not already healthy."""
    from saodf.stack import manager

    settings = get_settings()
    typer.echo(f"starting the local stack (home {settings.home})")
    try:
        manager.up(settings, only=only, echo=typer.echo)
    except SaodfError as exc:
        _fail(exc)
    for name, url in manager.urls(settings).items():
        typer.echo(f"  {name:<8} {url}")
    typer.echo(
        f"  secrets  {manager.secrets_location(settings)} (Airflow user admin, password in airflow_admin_password)"
    )


@stack_app.command("down")
def stack_down():
    """Stop the services that `stack up` started, by pid."""
    from saodf.stack import manager

    try:
        manager.down(get_settings(), echo=typer.echo)
    except SaodfError as exc:
        _fail(exc)


@stack_app.command("status")
def stack_status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Show pid, port and health of each service."""
    from saodf.stack import manager

    rows = manager.status(get_settings())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if row["healthy"]:
            state = "healthy"
        elif row["pid"]:
            state = "running"
        else:
            state = "stopped"
        typer.echo(
            f"  {row['name']:<22} {state:<8} pid={row['pid'] or '-':<8} port={row['port'] or '-'}"
        )
    if not all(row["healthy"] for row in rows):
        raise typer.Exit(code=3)


@app.command()
def replay(
    dataset: str = typer.Option(..., help="Dataset to replay: skab, nab or intel."),
    group: Optional[list[str]] = typer.Option(
        None, help="Dataset group, e.g. valve1 or realKnownCause (repeatable)."
    ),
    speed: float = typer.Option(
        0.0, help="Replay speed as a multiple of real time; 0 sends as fast as possible."
    ),
    limit: Optional[int] = typer.Option(None, help="Maximum number of messages per device."),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset root (default SAODF_DATA_DIR)."),
):
    """Produce a dataset's readings as telemetry messages to telemetry.raw."""
    from streaming.replay import replay as run_replay

    settings = get_settings()
    try:
        stats = run_replay(
            dataset,
            data_dir or settings.data_dir,
            groups=group or None,
            speed=speed,
            settings=settings,
            progress=True,
            limit=limit,
        )
    except SaodfError as exc:
        _fail(exc)
    for line in stats.summary_lines():
        typer.echo(line)


@app.command()
def demo(
    timeout: float = typer.Option(1200, help="Seconds to wait for the Kafka-triggered DAG run."),
    nab_group: str = typer.Option("realKnownCause", help="NAB group to replay."),
):
    """Bring the stack up, replay SKAB and NAB, wait for the pipeline and print a summary."""
    from saodf.demo import run_demo

    try:
        run_demo(get_settings(), timeout=timeout, nab_group=nab_group, echo=typer.echo)
    except SaodfError as exc:
        _fail(exc)


@app.command()
def backfill(
    from_date: str = typer.Option(..., help="First data interval start, ISO 8601 with zone."),
    to_date: str = typer.Option(
        ..., help="Last data interval start (inclusive), ISO 8601 with zone."
    ),
    reprocess: str = typer.Option(
        "none", help="Runs that already exist: none, completed or failed."
    ),
    timeout: float = typer.Option(3600, help="Seconds to wait for the runs to finish."),
):
    """Backfill telemetry_pipeline over a date range and wait for its runs."""
    from saodf.backfill import parse_date, run_backfill

    try:
        result = run_backfill(
            get_settings(), parse_date(from_date), parse_date(to_date), reprocess, timeout
        )
    except SaodfError as exc:
        _fail(exc)
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "airflow_output"}, indent=2))
    if result["states"].get("failed"):
        raise typer.Exit(code=1)


@app.command()
def forecast(
    device_id: str = typer.Argument(..., help="Device id, e.g. skab-valve1-0."),
    horizon: Optional[int] = typer.Option(
        None, help="Forecast steps (default: the cached horizon)."
    ),
):
    """Invoke the forecast action through the gateway and print its result."""
    from saodf.gateway_client import invoke

    params = {"device_id": device_id}
    if horizon is not None:
        params["horizon"] = horizon
    try:
        typer.echo(json.dumps(invoke(get_settings(), "forecast", params), indent=2))
    except SaodfError as exc:
        _fail(exc)


@app.command(
    "airflow",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def airflow_cli(ctx: typer.Context):
    """Run the `airflow` command with the local stack's configuration, e.g. `saodf airflow dags list`."""
    import os
    import subprocess

    from saodf.stack import services

    settings = get_settings()
    env = {**os.environ, **services.airflow_env(settings)}
    try:
        binary = services.find_binary("airflow")
    except SaodfError as exc:
        _fail(exc)
    result = subprocess.run([binary, *ctx.args], env=env, check=False)  # noqa: S603
    raise typer.Exit(code=result.returncode)


@data_app.command("fetch")
def data_fetch(
    dataset: str = typer.Argument(..., help="nab, skab or intel."),
    dest: Path = typer.Option(Path("data"), help="Folder to download into."),
    overwrite: bool = typer.Option(False, help="Download files that already exist again."),
):
    """Download a public dataset from its canonical URL."""
    from saodf.fetch import fetch

    try:
        fetch(dataset, dest, overwrite=overwrite, echo=typer.echo)
    except SaodfError as exc:
        _fail(exc)


@cache_app.command("populate")
def cache_populate(
    run_key: Optional[str] = typer.Option(
        None, help="Run key to load (default: the newest finished run)."
    ),
):
    """Fill the Redis forecast cache again from a finished run's batch-transform output."""
    from saodf import pipeline

    settings = get_settings()
    try:
        runs = pipeline.finished_runs(settings)
        chosen = next((r for r in runs if run_key in (None, r["scope"]["run_key"])), None)
        if chosen is None:
            known = ", ".join(r["scope"]["run_key"] for r in runs[:5]) or "none"
            raise SaodfError(
                f"no finished run {run_key or ''} in {settings.lake_url}; newest: {known}"
            )
        result = pipeline.populate_cache(chosen["scope"], settings)
    except SaodfError as exc:
        _fail(exc)
    typer.echo(json.dumps({"run_key": chosen["scope"]["run_key"], **result["stats"]}, default=str))


@actions_app.command("package")
def actions_package(out: Path = typer.Option(Path("build/actions"), help="Output folder.")):
    """Build zips deployable with `wsk action create --kind python:3.11`."""
    from actions.package import build_packages

    for path in build_packages(out):
        typer.echo(str(path))


if __name__ == "__main__":
    sys.exit(app())
