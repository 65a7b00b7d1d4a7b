"""Tests of the action zip packages."""

from __future__ import annotations

import base64
import zipfile

from actions.package import build_packages
from actions.runtime import ActionRuntime


def test_packages_built(tmp_path):
    paths = build_packages(tmp_path)
    assert sorted(path.name for path in paths) == ["detect_anomaly.zip", "forecast.zip"]


def test_package_contents(tmp_path):
    paths = {path.stem: path for path in build_packages(tmp_path)}
    names = set(zipfile.ZipFile(paths["detect_anomaly"]).namelist())
    for required in (
        "__main__.py",
        "actions/detect_anomaly.py",
        "saodf/telemetry.py",
        "redis/__init__.py",
    ):
        assert required in names
    assert "models/serving.py" in set(zipfile.ZipFile(paths["forecast"]).namelist())


def test_package_initializes(tmp_path):
    (path,) = [p for p in build_packages(tmp_path) if p.stem == "detect_anomaly"]
    runtime = ActionRuntime()
    code = base64.b64encode(path.read_bytes()).decode()
    status, body = runtime.initialize(
        {"name": "detect_anomaly", "main": "main", "code": code, "binary": True}
    )
    assert status == 200
    assert body == {"ok": True}
