"""``saodf stack status`` shows why a service's pid file cannot be used."""

from __future__ import annotations

from typer.testing import CliRunner

from saodf.config import reset_settings


def test_status_prints_pid_file_error(tmp_path, monkeypatch):
    from saodf.cli import app
    from saodf.config import Settings

    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    reset_settings()
    run_dir = Settings.from_env().run_dir
    run_dir.mkdir(parents=True)
    (run_dir / "gateway.pid").write_text("garbage{", encoding="utf-8")
    try:
        result = CliRunner().invoke(app, ["stack", "status"])
    finally:
        reset_settings()
    assert result.exit_code == 3
    assert f"pid file {run_dir / 'gateway.pid'}" in result.output
