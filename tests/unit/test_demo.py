"""The demo's data folder check, its message on failure and its left-out device list."""

from __future__ import annotations

import json

import pytest

from saodf import demo
from saodf.config import Settings
from saodf.errors import DatasetError, SaodfError


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.from_env().with_overrides(
        home=tmp_path / "home", data_dir=tmp_path / "data", lake_url=(tmp_path / "lake").as_uri()
    )


def test_check_data_dir_names_variable(settings):
    with pytest.raises(DatasetError, match="set SAODF_DATA_DIR"):
        demo.check_data_dir(settings, "realKnownCause")


def test_check_data_dir_accepts_folders(settings):
    for group in demo.SKAB_GROUPS:
        (settings.data_dir / "skab" / "data" / group).mkdir(parents=True)
    (settings.data_dir / "nab" / "data" / "realKnownCause").mkdir(parents=True)
    assert demo.check_data_dir(settings, "realKnownCause") is None


def test_run_demo_bad_data_starts_nothing(settings, monkeypatch):
    from saodf.stack import manager

    monkeypatch.setattr(manager, "up", lambda *a, **k: pytest.fail("the stack was started"))
    with pytest.raises(DatasetError):
        demo.run_demo(settings, echo=lambda line: None)


def test_run_demo_failure_says_stack_running(settings, monkeypatch):
    from saodf.stack import manager

    monkeypatch.setattr(demo, "check_data_dir", lambda *a: None)
    monkeypatch.setattr(manager, "up", lambda *a, **k: None)

    def fail(*args, **kwargs):
        raise SaodfError("replay failed")

    monkeypatch.setattr(demo, "_run_steps", fail)
    lines: list[str] = []
    with pytest.raises(SaodfError, match="replay failed"):
        demo.run_demo(settings, echo=lines.append)
    assert "stack is still running" in lines[-1]
    assert "saodf stack down" in lines[-1]


def test_left_out_devices_read_report(settings, tmp_path):
    prepared = tmp_path / "lake" / "prepared" / "run-1"
    prepared.mkdir(parents=True)
    devices = [
        {"device_id": "nab-a", "skipped": None},
        {"device_id": "nab-b", "skipped": "57% of the target is still missing"},
    ]
    (prepared / "report.json").write_text(json.dumps({"run_key": "run-1", "devices": devices}))
    left_out = demo.left_out_devices(settings, "run-1")
    assert left_out == [{"device_id": "nab-b", "reason": "57% of the target is still missing"}]


def test_summary_lists_left_out(settings):
    report = demo.DemoReport(left_out=[{"device_id": "nab-b", "reason": "too many gaps"}])
    lines: list[str] = []
    demo.print_summary(settings, report, 1.0, lines.append)
    assert "  left out         nab-b: too many gaps" in lines
