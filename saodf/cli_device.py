"""``saodf device token create|revoke|list``: ingest tokens of the default deployment's devices.

``create`` and ``revoke`` append an ``admin`` record to ``SAODF_HOME/logs/admin_audit.jsonl``
with the resource ``<tenant>/device/<device id>`` (``default`` for devices of no tenant),
never the token. A token they rotate out or revoke goes to the revoked list by digest, so
the ``revoked_key`` detection rule flags its later use.
"""

from __future__ import annotations

from typing import NoReturn

import typer

from saodf.config import Settings, get_settings
from saodf.errors import SaodfError

device_app = typer.Typer(help="Devices of the default deployment.", no_args_is_help=True)
token_app = typer.Typer(help="Ingest and MQTT tokens of devices.", no_args_is_help=True)
device_app.add_typer(token_app, name="token")

# Tenant field of the admin records of devices that belong to no tenant.
DEFAULT_TENANT = "default"


def device_tenant_name(device_id: str, settings: Settings) -> str:
    """Return the name of the tenant that ``device_id`` belongs to, or ``default``."""
    from saodf.tenants import TenantRegistry

    tenant = TenantRegistry(settings).device_tenant(device_id)
    return tenant.name if tenant is not None else DEFAULT_TENANT


def _resource(device_id: str, settings: Settings) -> str:
    return f"{device_tenant_name(device_id, settings)}/device/{device_id}"


def _record_revoked(device_id: str, settings: Settings) -> None:
    from saodf.audit_tools import record_revoked_keys

    record_revoked_keys(settings, device_tenant_name(device_id, settings), None, [device_id])


def create_token(device_id: str, settings: Settings) -> str:
    """Create or rotate a device's token and return it.

    When the device had a token, its digest goes to the revoked list first.

    Raises:
        ConfigError: when ``device_id`` breaks the telemetry contract's device id rule, or
            the token file is not valid JSON.
    """
    from streaming.tokens import create_device_token, list_token_devices

    if device_id in list_token_devices(settings):
        _record_revoked(device_id, settings)
    return create_device_token(device_id, settings)


def revoke_token(device_id: str, settings: Settings) -> bool:
    """Revoke a device's token and add its digest to the revoked list.

    Returns:
        False when the device had no token.

    Raises:
        ConfigError: when the token file is not valid JSON.
    """
    from streaming.tokens import list_token_devices, revoke_device_token

    if device_id not in list_token_devices(settings):
        return False
    _record_revoked(device_id, settings)
    return revoke_device_token(device_id, settings)


def _reject(settings: Settings, action: str, device_id: str, message: str) -> NoReturn:
    """Audit ``action`` on ``device_id`` as rejected, print ``message`` and exit with 1."""
    from saodf.tenants import audit_admin

    audit_admin(settings, action, _resource(device_id, settings), "rejected")
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@token_app.command("create")
def token_create(device_id: str = typer.Argument(..., help="Device id, e.g. skab-valve1-0.")):
    """Create or rotate a device's token and print it once; only its hashes are stored."""
    from saodf.tenants import audit_admin

    settings = get_settings()
    try:
        token = create_token(device_id, settings)
    except SaodfError as exc:
        _reject(settings, "device.token.create", device_id, str(exc))
    audit_admin(settings, "device.token.create", _resource(device_id, settings), "succeeded")
    typer.echo(token)
    typer.echo(
        f"token of {device_id} shown once. HTTP: Authorization: Bearer <token> on "
        "POST /v1/telemetry; MQTT: user = device id, password = token, after "
        "`saodf stack down && saodf stack up` reloads mosquitto's password file.",
        err=True,
    )


@token_app.command("revoke")
def token_revoke(device_id: str = typer.Argument(..., help="Device id.")):
    """Remove a device's token, so that its readings are rejected from then on."""
    from saodf.tenants import audit_admin

    settings = get_settings()
    try:
        revoked = revoke_token(device_id, settings)
    except SaodfError as exc:
        _reject(settings, "device.token.revoke", device_id, str(exc))
    if not revoked:
        _reject(settings, "device.token.revoke", device_id, f"device {device_id!r} has no token")
    audit_admin(settings, "device.token.revoke", _resource(device_id, settings), "succeeded")
    typer.echo(f"revoked the token of {device_id}")


@token_app.command("list")
def token_list():
    """List the devices that have a token (never the tokens)."""
    from streaming.tokens import list_token_devices

    for device_id in list_token_devices(get_settings()):
        typer.echo(device_id)
