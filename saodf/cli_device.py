"""``saodf device token create|revoke|list``: ingest tokens of the default deployment's devices."""

from __future__ import annotations

import typer

from saodf.config import get_settings
from saodf.errors import SaodfError

device_app = typer.Typer(help="Devices of the default deployment.", no_args_is_help=True)
token_app = typer.Typer(help="Ingest and MQTT tokens of devices.", no_args_is_help=True)
device_app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(device_id: str = typer.Argument(..., help="Device id, e.g. skab-valve1-0.")):
    """Create or rotate a device's token and print it once; only its hashes are stored."""
    from streaming.tokens import create_device_token

    try:
        token = create_device_token(device_id, get_settings())
    except SaodfError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    typer.echo(token)
    typer.echo(
        f"token of {device_id} shown once. HTTP: Authorization: Bearer <token> on "
        "POST /v1/telemetry; MQTT: user = device id, password = token, after "
        "`saodf stack down && saodf stack up` reloads mosquitto's password file.",
        err=True,
    )


@token_app.command("revoke")
def token_revoke(device_id: str = typer.Argument(..., help="Device id.")):
    """Remove a device's token; its readings are refused from then on."""
    from streaming.tokens import revoke_device_token

    if not revoke_device_token(device_id, get_settings()):
        typer.secho(f"error: device {device_id!r} has no token", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)
    typer.echo(f"revoked the token of {device_id}")


@token_app.command("list")
def token_list():
    """List the devices that have a token (never the tokens)."""
    from streaming.tokens import list_token_devices

    for device_id in list_token_devices(get_settings()):
        typer.echo(device_id)
