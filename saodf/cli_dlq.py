"""``saodf dlq list|show|replay``: the Kafka dead-letter topic and the SQS dead-letter queue."""

from __future__ import annotations

import json
import os
from typing import Optional

import typer

from saodf.config import get_settings
from saodf.errors import SaodfError

dlq_app = typer.Typer(
    help="Dead-letter queue tools for the Kafka DLQ topic and the SQS DLQ.", no_args_is_help=True
)

SOURCE_HELP = "Which dead-letter queue: kafka (the DLQ topic) or sqs (the SQS DLQ)."
TENANT_HELP = (
    "Read the tenant's DLQ topic and SQS DLQ (t.NAME.telemetry.dlq, t-NAME-telemetry-raw-dlq) "
    "instead of the default deployment's."
)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _use_stack_aws_credentials(settings) -> None:
    """Set the AWS variables that the stack's services get, so SQS calls reach the same endpoint.

    On the local target these are the fixed dummy keys for moto_server, which replace any
    keys in the environment, as they do in the services. The aws target sets nothing.
    """
    from saodf.stack.services import saodf_env

    for name, value in saodf_env(settings).items():
        if name.startswith("AWS_"):
            os.environ[name] = value


def _settings(tenant: str | None = None):
    """Return the stack's settings, scoped to ``tenant`` when it names a registered tenant.

    Raises:
        TenantError: ``tenant`` is not registered.
    """
    from saodf.tenants import get_tenant, tenant_settings
    from streaming.ingest_config import with_name_overrides

    settings = with_name_overrides(get_settings())
    _use_stack_aws_credentials(settings)
    if tenant:
        settings = tenant_settings(get_tenant(tenant, settings), settings)
    return settings


@dlq_app.command("list")
def dlq_list(
    source: str = typer.Option("kafka", help=SOURCE_HELP),
    limit: int = typer.Option(20, help="Maximum number of records to show."),
    as_json: bool = typer.Option(False, "--json", help="Print each full record as JSON."),
    tenant: Optional[str] = typer.Option(None, help=TENANT_HELP),
):
    """Show the oldest records of a dead-letter queue with their ids and reasons."""
    from streaming.dlq_tools import list_entries

    try:
        settings = _settings(tenant)
        entries = list_entries(settings, source, limit)
    except SaodfError as exc:
        _fail(exc)
    for entry in entries:
        if as_json:
            typer.echo(json.dumps({"id": entry.id, **entry.record}, default=str))
            continue
        record = entry.record
        typer.echo(
            f"{entry.id}  {record.get('failed_at', '-')}  {record.get('source', '-')}  "
            f"{record.get('reason', '-')}"
        )
    if not entries:
        queue = settings.topic_dlq if source == "kafka" else settings.sqs_dlq
        typer.echo(f"no records in the {source} dead-letter queue {queue}")


@dlq_app.command("show")
def dlq_show(
    entry_id: str = typer.Argument(..., help="Record id from `dlq list`: kafka:P:O or sqs:ID."),
    tenant: Optional[str] = typer.Option(None, help=TENANT_HELP),
):
    """Print one dead-letter record with its decoded payload."""
    from streaming.dlq import decode_dlq_payload
    from streaming.dlq_tools import show_entry

    try:
        entry = show_entry(_settings(tenant), entry_id)
    except SaodfError as exc:
        _fail(exc)
    typer.echo(json.dumps({"id": entry.id, **entry.record}, indent=2, default=str))
    payload = decode_dlq_payload(entry.record)
    typer.echo("payload:")
    typer.echo(payload.decode("utf-8", "replace"))


@dlq_app.command("replay")
def dlq_replay(
    source: str = typer.Option("kafka", help=SOURCE_HELP),
    limit: int = typer.Option(1000, help="Maximum number of records to replay."),
    dry_run: bool = typer.Option(False, help="Count what would be replayed; change nothing."),
    tenant: Optional[str] = typer.Option(None, help=TENANT_HELP),
):
    """Send the records whose payload is valid now back into the ingest path."""
    from streaming.dlq_tools import replay_kafka, replay_sqs

    if source not in ("kafka", "sqs"):
        _fail(SaodfError(f"DLQ source {source!r} is unknown; use 'kafka' or 'sqs'"))
    try:
        replay = replay_kafka if source == "kafka" else replay_sqs
        report = replay(_settings(tenant), limit=limit, dry_run=dry_run)
    except SaodfError as exc:
        _fail(exc)
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {report.replayed} of {report.read} {source} DLQ record(s)")
    for entry_id in report.invalid:
        typer.echo(f"  still invalid, kept: {entry_id}")
