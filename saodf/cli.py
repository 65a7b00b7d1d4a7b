"""The ``saodf`` command-line tool."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from saodf.cli_device import device_app
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
app.add_typer(device_app, name="device")
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
        if row.get("error"):
            # An unreadable pid file: the service may run without the stack knowing its pid.
            typer.secho(f"    {row['error']}", fg=typer.colors.YELLOW)
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
    limit: Optional[int] = typer.Option(
        None,
        help="Maximum number of messages in total over all devices; the replay stops there "
        "and later rows and series are not sent.",
    ),
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
    from_date: str = typer.Option(
        ...,
        help="ISO 8601 with zone. The first hourly data interval run is the one that contains "
        "it: 14:00Z or 14:30Z both start the backfill with [14:00, 15:00).",
    ),
    to_date: str = typer.Option(
        ...,
        help="ISO 8601 with zone, included. The last hourly data interval run is the one "
        "that contains it, and it must have ended.",
    ),
    reprocess: str = typer.Option(
        "none", help="Runs that already exist: none, completed or failed."
    ),
    timeout: float = typer.Option(3600, help="Seconds to wait for the runs to finish."),
):
    """Backfill telemetry_pipeline over a date range and wait for its runs.

    Each run covers one hourly data interval [start, start + 1 h).
    """
    from saodf.backfill import check_reprocess, data_intervals, parse_date, run_backfill

    try:
        start, end = parse_date(from_date), parse_date(to_date)
        check_reprocess(reprocess)
        intervals = data_intervals(start, end)
        typer.echo(
            f"backfill of {len(intervals)} hourly data interval(s), "
            f"[{intervals[0][0].isoformat()}, {intervals[0][1].isoformat()}) to "
            f"[{intervals[-1][0].isoformat()}, {intervals[-1][1].isoformat()})"
        )
        result = run_backfill(get_settings(), start, end, reprocess, timeout)
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
        None,
        help="Load only this run. By default each device is loaded from the newest finished "
        "run that forecast it.",
    ),
):
    """Fill the Redis forecast cache again from the batch-transform output of finished runs."""
    from saodf import pipeline

    settings = get_settings()
    try:
        if run_key is None:
            result = restore_cache(settings)
        else:
            runs = _finished_runs(settings)
            chosen = next((r for r in runs if r["scope"]["run_key"] == run_key), None)
            if chosen is None:
                known = ", ".join(r["scope"]["run_key"] for r in runs[:5]) or "none"
                raise SaodfError(
                    f"run key {run_key!r} is not a finished run in {settings.lake_url}; "
                    f"use one of the newest: {known}"
                )
            stats = pipeline.populate_cache(chosen["scope"], None)["stats"]
            result = {"run_key": run_key, **stats, "devices": len(stats["devices"])}
    except SaodfError as exc:
        _fail(exc)
    typer.echo(json.dumps(result, default=str))


def _finished_runs(settings) -> list[dict]:
    """Return the done markers of the default deployment and of every tenant, newest first."""
    from saodf import pipeline
    from saodf.tenants import list_tenants, tenant_settings

    markers = list(pipeline.finished_runs(settings))
    for tenant in list_tenants(settings):
        markers.extend(pipeline.finished_runs(tenant_settings(tenant, settings)))
    return sorted(markers, key=lambda marker: marker.get("finished_at", ""), reverse=True)


def _forecast_groups(forecasts_url: str) -> list[tuple[str, list[str]]]:
    """Return each group folder of a run's forecasts with the device ids of its manifest."""
    import posixpath

    import fsspec

    fs, root = fsspec.core.url_to_fs(forecasts_url)
    if not fs.exists(root):
        return []
    groups = []
    for path in sorted(fs.ls(root, detail=False)):
        manifest_path = posixpath.join(path, "manifest.json")
        if not fs.exists(manifest_path):
            continue
        with fs.open(manifest_path, "r") as handle:
            manifest = json.load(handle)
        devices = [series["device_id"] for series in manifest.get("series", [])]
        groups.append((fs.unstrip_protocol(path), devices))
    return groups


def restore_cache(settings) -> dict:
    """Load every device's forecast from the newest finished run that forecast it.

    Runs are chosen newest first, one group folder at a time, and a folder is loaded when
    it forecast a device that no newer folder covers. The chosen folders are then loaded
    oldest first, so where they overlap the newest forecast is written last.

    Returns:
        ``{"devices", "entries", "runs": [run_key, ...], "groups"}``.

    Raises:
        SaodfError: no run has finished, or a chosen folder cannot be loaded.
    """
    from actions.cache import ForecastCache, populate_from_forecasts, record_left_out, redis_client
    from actions.redis_acl import WRITER
    from saodf import pipeline
    from saodf.tenants import tenant_layout, tenant_settings

    markers = _finished_runs(settings)
    if not markers:
        raise SaodfError(
            f"no finished run in {settings.lake_url}; run the pipeline (saodf demo or "
            "saodf backfill) first"
        )
    covered: set[tuple[str, str]] = set()
    chosen = []
    for marker in markers:
        scope = marker["scope"]
        tenant = scope.get("tenant") or ""
        scoped = tenant_settings(tenant, settings) if tenant else settings
        paths = pipeline.urls(scoped, scope["run_key"])
        for group_url, devices in _forecast_groups(paths["forecasts"]):
            keys = {(tenant, device) for device in devices}
            if keys - covered:
                chosen.append((scope, scoped, group_url, paths["prepared"]))
                covered |= keys
    stats = {"devices": len(covered), "entries": 0, "runs": [], "groups": 0}
    for scope, scoped, group_url, prepared_url in reversed(chosen):
        cache = None
        if scope.get("tenant"):
            # The stack's writer role writes under the tenant's key prefix, as the
            # pipeline's populate_cache task does.
            prefix = tenant_layout(scope["tenant"]).redis_key_prefix
            cache = ForecastCache(redis_client(settings, role=WRITER), key_prefix=prefix)
        result = populate_from_forecasts(group_url, prepared_url, scoped, cache=cache)
        stats["entries"] += result["entries"]
        stats["groups"] += 1
        if scope["run_key"] not in stats["runs"]:
            stats["runs"].append(scope["run_key"])
            # Devices the run left out keep their reason, as after the pipeline's own fill.
            left_cache = cache or ForecastCache.from_settings(scoped, role=WRITER)
            stats["left_out"] = stats.get("left_out", 0) + record_left_out(
                f"{prepared_url}/report.json", left_cache, scope["run_key"]
            )
    return stats


@actions_app.command("package")
def actions_package(out: Path = typer.Option(Path("build/actions"), help="Output folder.")):
    """Build zips deployable with `wsk action create --kind python:3.11`."""
    from actions.package import build_packages

    for path in build_packages(out):
        typer.echo(str(path))


if __name__ == "__main__":
    sys.exit(app())
