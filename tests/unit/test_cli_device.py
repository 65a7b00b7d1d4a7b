"""``saodf device token``: create, list and revoke ingest tokens of default devices."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from saodf.cli_device import device_app
from saodf.config import reset_settings


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    app = typer.Typer()
    app.add_typer(device_app, name="device")
    yield lambda *args: CliRunner().invoke(app, ["device", *args])
    reset_settings()


def test_token_create_prints_token(runner):
    result = runner("token", "create", "skab-valve1-0")
    token = result.stdout.strip().splitlines()[0]
    assert result.exit_code == 0
    assert len(token) >= 32


def test_token_authenticates(runner):
    from saodf.config import get_settings
    from streaming.tokens import DeviceTokens

    token = runner("token", "create", "skab-valve1-0").stdout.strip().splitlines()[0]
    assert DeviceTokens(get_settings()).authenticate(token) == "skab-valve1-0"


def test_token_list_hides_tokens(runner):
    token = runner("token", "create", "skab-valve1-0").stdout.strip().splitlines()[0]
    listed = runner("token", "list").stdout
    assert listed.strip() == "skab-valve1-0"
    assert token not in listed


def test_token_revoke_unknown(runner):
    result = runner("token", "revoke", "nope-1")
    assert result.exit_code == 1
    assert "has no token" in result.output


def test_token_create_rejects_bad_id(runner):
    result = runner("token", "create", "../etc")
    assert result.exit_code == 1
    assert "device_id '../etc' is invalid" in result.output
