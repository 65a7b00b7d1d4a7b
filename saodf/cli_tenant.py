"""``saodf tenant create|list|rotate-keys|delete`` and ``saodf audit verify|watch``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from saodf.config import get_settings
from saodf.errors import SaodfError

tenant_app = typer.Typer(
    help="Tenants: namespaces, keys, prefixes and devices.", no_args_is_help=True
)
audit_app = typer.Typer(help="The hash-chained audit logs.", no_args_is_help=True)
DEVICE_OPTION = typer.Option(None, help="A device of the tenant (repeatable).")
PATH_OPTION = typer.Option(None, help="An audit log (repeatable); default: every log of the home.")


# Airflow, mosquitto and the SQS drains read the tenant list when they start.
RESTART_HINT = (
    "the tenant's pipeline DAG, MQTT logins and SQS drain start with the next "
    "`saodf stack down && saodf stack up`; the gateways and Redis use it already"
)
DELETE_RESTART_HINT = (
    "the tenant's pipeline DAG, MQTT logins and SQS drain stop at the next "
    "`saodf stack down && saodf stack up`; the gateways reject its keys and tokens already"
)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _apply_redis(settings) -> None:
    import redis

    from saodf.tenants import admin_redis_client, apply_redis_acls

    try:
        users = apply_redis_acls(admin_redis_client(settings), settings)
    except (redis.RedisError, OSError) as exc:
        typer.secho(
            f"warning: Redis ACL not applied ({exc}); it applies at the next `saodf stack up`",
            fg=typer.colors.YELLOW,
            err=True,
        )
        return
    typer.echo(f"Redis ACL set for {len(users)} tenant users")


def _print_secrets(issued: dict) -> None:
    typer.echo("Store these now; they are not shown again:")
    typer.echo(f"  gateway key     {issued['gateway_key']}")
    typer.echo(f"  redis password  {issued['redis_password']}")
    for device_id, token in sorted(issued["device_tokens"].items()):
        typer.echo(f"  device token    {device_id} {token}")


@tenant_app.command("create")
def tenant_create(
    name: str = typer.Argument(..., help="Tenant name: 2-32 characters of a-z 0-9 -."),
    device: Optional[list[str]] = DEVICE_OPTION,
    redis_acl: bool = typer.Option(True, help="Set the tenant's ACL user on the running Redis."),
):
    """Create a tenant with its namespace key, Redis user and device tokens."""
    from saodf.tenants import audit_admin, create_tenant

    settings = get_settings()
    try:
        tenant, issued = create_tenant(name, devices=device or [], settings=settings)
    except SaodfError as exc:
        audit_admin(settings, "tenant.create", name, "rejected")
        _fail(exc)
    audit_admin(settings, "tenant.create", name, "succeeded")
    typer.echo(
        f"tenant {tenant.name}: namespace {tenant.namespace}, Redis user {tenant.redis_user}"
    )
    _print_secrets(issued)
    if redis_acl:
        _apply_redis(settings)
    typer.echo(RESTART_HINT, err=True)


@tenant_app.command("list")
def tenant_list(as_json: bool = typer.Option(False, "--json", help="Print the tenants as JSON.")):
    """Show every tenant with its prefixes and devices; secrets are not shown."""
    from dataclasses import asdict

    from saodf.tenants import list_tenants

    try:
        tenants = list_tenants(get_settings())
    except SaodfError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps([asdict(tenant) for tenant in tenants], indent=2))
        return
    if not tenants:
        # On stderr, so that a script reading the table from stdout gets no rows.
        typer.echo("no tenants; create one with `saodf tenant create NAME`", err=True)
        return
    for tenant in tenants:
        typer.echo(
            f"{tenant.name:<16} ns={tenant.namespace} kafka={tenant.kafka_topic_prefix}* "
            f"lake={tenant.lake_prefix} redis={tenant.redis_user}:{tenant.redis_key_prefix}* "
            f"mlflow={tenant.mlflow_prefix}* devices={len(tenant.devices)}"
        )


@tenant_app.command("rotate-keys")
def tenant_rotate(
    name: str = typer.Argument(..., help="Tenant name."),
    redis_acl: bool = typer.Option(True, help="Set the new password on the running Redis."),
):
    """Replace a tenant's gateway key, Redis password and device tokens; old ones stop."""
    from saodf.tenants import audit_admin, rotate_keys

    settings = get_settings()
    try:
        issued = rotate_keys(name, settings=settings)
    except SaodfError as exc:
        audit_admin(settings, "tenant.rotate-keys", name, "rejected")
        _fail(exc)
    audit_admin(settings, "tenant.rotate-keys", name, "succeeded")
    _print_secrets(issued)
    if redis_acl:
        _apply_redis(settings)
    typer.echo(RESTART_HINT, err=True)


@tenant_app.command("delete")
def tenant_delete(
    name: str = typer.Argument(..., help="Tenant name."),
    yes: bool = typer.Option(False, "--yes", help="Delete without asking."),
    redis_acl: bool = typer.Option(True, help="Drop the tenant's user from the running Redis."),
):
    """Delete a tenant's keys, Redis user and device tokens; its data stays."""
    from saodf.tenants import audit_admin, delete_tenant, list_tenants, tenant_not_found

    settings = get_settings()
    try:
        # Checked before the prompt, so that a typo fails without a question first.
        if name not in {tenant.name for tenant in list_tenants(settings)}:
            raise tenant_not_found(name)
        if not yes:
            typer.confirm(f"Delete tenant {name} and revoke its keys?", abort=True)
        tenant = delete_tenant(name, settings=settings)
    except SaodfError as exc:
        audit_admin(settings, "tenant.delete", name, "rejected")
        _fail(exc)
    audit_admin(settings, "tenant.delete", name, "succeeded")
    typer.echo(f"tenant {tenant.name} deleted; its data under {tenant.lake_prefix} is kept")
    if redis_acl:
        _apply_redis(settings)
    typer.echo(DELETE_RESTART_HINT, err=True)


@audit_app.command("verify")
def audit_verify(
    path: Optional[list[Path]] = PATH_OPTION,
    reset_checkpoints: bool = typer.Option(
        False,
        "--reset-checkpoints",
        help="Ignore the stored checkpoints of these logs and store new ones, after an "
        "intended rotation or restore.",
    ),
):
    """Check the hash chain of the audit logs; exit 2 when a record was edited or removed.

    Each run stores, per log, the record count and last hash it verified in
    SAODF_HOME/logs/audit_checkpoints.json, so records removed from a log's tail after a
    verification are detected by the next run.
    """
    from saodf.audit_tools import AuditChainError, audit_paths, verify_checkpointed

    settings = get_settings()
    paths = path or audit_paths(settings)
    try:
        counts = verify_checkpointed(
            paths, settings, reset=reset_checkpoints, check_missing=not path
        )
    except AuditChainError as exc:
        typer.secho(f"tampered: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    except OSError as exc:
        _fail(exc)
    for name, count in counts.items():
        typer.echo(f"{name}: {count} records, chain intact")


@audit_app.command("watch")
def audit_watch(
    path: Optional[list[Path]] = PATH_OPTION,
    interval: float = typer.Option(5.0, min=0.1, help="Seconds between scans."),
    duration: float = typer.Option(0.0, min=0.0, help="Seconds to keep watching; 0 scans once."),
):
    """Report brute force, cross-tenant, invalid-token and volume alerts as JSON lines."""
    from saodf.audit_tools import audit_paths, watch

    paths = path or audit_paths(get_settings())
    count = watch(
        paths,
        lambda alert: typer.echo(json.dumps(alert.to_dict())),
        interval=interval,
        max_seconds=duration,
    )
    typer.echo(f"{count} alerts", err=True)
    if count:
        raise typer.Exit(code=3)


CLOUDTRAIL_PATHS = typer.Argument(..., help="CloudTrail log files or folders (.json, .json.gz).")


@audit_app.command("cloudtrail")
def audit_cloudtrail(
    path: list[Path] = CLOUDTRAIL_PATHS,
):
    """Run the detection rules over CloudTrail logs of the aws target; exit 3 on alerts."""
    from saodf.audit_cloudtrail import read_cloudtrail
    from saodf.audit_tools import detect, rule_config

    missing = [str(p) for p in path if not p.exists()]
    if missing:
        _fail(FileNotFoundError(f"no such CloudTrail log or folder: {', '.join(missing)}"))
    records = read_cloudtrail(path)
    alerts = detect(records, rule_config(get_settings()))
    for alert in alerts:
        typer.echo(json.dumps(alert.to_dict()))
    typer.echo(f"{len(records)} CloudTrail records, {len(alerts)} alerts", err=True)
    if alerts:
        raise typer.Exit(code=3)
