"""Settings, output collection and promotion rules of the aws target's task logic."""

from __future__ import annotations

import io
import json
import tarfile
from types import SimpleNamespace

import pytest

from models.synthetic import write_synthetic_prepared
from saodf import aws_pipeline
from saodf.config import Settings, reset_settings
from saodf.errors import ConfigError

RUN_KEY = "interval-20240101T0000-20240101T0100"


@pytest.fixture
def lake(tmp_path, monkeypatch):
    """A local lake holding one synthetic prepared run of three 5-minute series."""
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SAODF_LAKE_URL", (tmp_path / "lake").as_uri())
    reset_settings()
    settings = Settings.from_env()
    write_synthetic_prepared(tmp_path / "lake" / "prepared" / RUN_KEY, run_key=RUN_KEY)
    yield settings
    reset_settings()


def _forecast_lines(count: int, horizon: int = 12) -> bytes:
    line = {
        "mean": [1.0] * horizon,
        "quantiles": {level: [1.0] * horizon for level in ("0.1", "0.5", "0.9")},
    }
    return "".join(json.dumps(line) + "\n" for _ in range(count)).encode()


def _settings(lake_url: str) -> SimpleNamespace:
    return SimpleNamespace(lake_url=lake_url)


def test_glue_settings_need_role():
    with pytest.raises(ConfigError, match="SAODF_GLUE_ROLE_ARN is not set"):
        aws_pipeline.GlueSettings.from_env(_settings("s3://lake"), {})


def test_glue_settings_need_s3_code():
    environ = {"SAODF_GLUE_ROLE_ARN": "arn:aws:iam::1:role/glue"}
    with pytest.raises(ConfigError, match="is not an s3:// folder"):
        aws_pipeline.GlueSettings.from_env(_settings("file:///tmp/lake"), environ)


def test_glue_settings_reject_workers():
    environ = {"SAODF_GLUE_ROLE_ARN": "arn:aws:iam::1:role/glue", "SAODF_GLUE_WORKERS": "two"}
    with pytest.raises(ConfigError, match="SAODF_GLUE_WORKERS='two'"):
        aws_pipeline.GlueSettings.from_env(_settings("s3://lake"), environ)


def test_glue_settings_code_defaults_to_lake():
    environ = {"SAODF_GLUE_ROLE_ARN": "arn:aws:iam::1:role/glue"}
    glue = aws_pipeline.GlueSettings.from_env(_settings("s3://bucket/lake/"), environ)
    assert glue.script_url == "s3://bucket/lake/code/glue/glue_job.py"
    assert glue.package_url == "s3://bucket/lake/code/glue/saodf_code.zip"


def test_local_lake_rejected(lake):
    with pytest.raises(ConfigError, match="SAODF_LAKE_URL=.* is not an s3:// URL"):
        aws_pipeline.require_s3_lake(lake)


def test_code_zip_repeatable():
    first, second = aws_pipeline.code_zip(), aws_pipeline.code_zip()
    assert first == second


def test_code_zip_holds_packages():
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(aws_pipeline.code_zip())).namelist()
    assert "etl/glue_job.py" in names
    assert "saodf/config.py" in names


def test_output_url_per_mode():
    entry = {"output_url": "s3://b/forecasts/run/5min/"}
    transform = aws_pipeline.inference_output_url(entry, "transform", "job-t1")
    spot = aws_pipeline.inference_output_url(entry, "spot_training", "job-t1")
    assert transform == "s3://b/forecasts/run/5min/data.jsonl.out"
    assert spot == "s3://b/forecasts/run/5min/job-t1/output/output.tar.gz"


def test_collect_transform_output(lake, tmp_path):
    from actions.cache import _group_urls
    from models.output import read_forecast_lines

    output = tmp_path / "sm" / "data.jsonl.out"
    output.parent.mkdir()
    output.write_bytes(_forecast_lines(3))
    result = {
        "group": "5min",
        "mode": "transform",
        "job_name": "saodf-xform-t1",
        "model_name": "saodf-model-t1",
        "output": output.as_uri(),
    }
    collected = aws_pipeline.collect_forecasts({"run_key": RUN_KEY}, [result], lake)

    folder = collected["groups"]["5min"]["folder"]
    manifest = json.loads(
        (tmp_path / "lake" / "forecasts" / RUN_KEY / "5min" / "manifest.json").read_text()
    )
    assert len(read_forecast_lines(folder + "/output.jsonl.out")) == 3
    assert manifest["model_version"] == "saodf-xform-t1"
    assert [s["line"] for s in manifest["series"]] == [0, 1, 2]
    assert _group_urls(collected["forecasts_url"]) == [folder]


def test_collect_spot_archive(lake, tmp_path):
    payload = _forecast_lines(3)
    archive = tmp_path / "output.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        info = tarfile.TarInfo("data.jsonl.out")
        info.size = len(payload)
        handle.addfile(info, io.BytesIO(payload))
    result = {
        "group": "5min",
        "mode": "spot_training",
        "job_name": "saodf-spinf-t1",
        "model_name": "saodf-train-t1",
        "output": archive.as_uri(),
    }
    collected = aws_pipeline.collect_forecasts({"run_key": RUN_KEY}, [result], lake)
    assert collected["groups"]["5min"]["series"] == 3


def test_collect_rejects_short_output(lake, tmp_path):
    output = tmp_path / "data.jsonl.out"
    output.write_bytes(_forecast_lines(2))
    result = {
        "group": "5min",
        "mode": "transform",
        "job_name": "saodf-xform-t1",
        "model_name": "m",
        "output": output.as_uri(),
    }
    with pytest.raises(aws_pipeline.AwsOutputError, match="wrote 2 forecast lines for the 3"):
        aws_pipeline.collect_forecasts({"run_key": RUN_KEY}, [result], lake)


def test_collect_reports_missing_output(lake, tmp_path):
    result = {
        "group": "5min",
        "mode": "transform",
        "job_name": "saodf-xform-t1",
        "model_name": "m",
        "output": (tmp_path / "absent.out").as_uri(),
    }
    with pytest.raises(aws_pipeline.AwsOutputError, match="saodf-xform-t1"):
        aws_pipeline.collect_forecasts({"run_key": RUN_KEY}, [result], lake)


def test_spot_archive_without_lines(tmp_path):
    archive = tmp_path / "output.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        info = tarfile.TarInfo("model.json")
        info.size = 2
        handle.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(aws_pipeline.AwsOutputError, match="holds no .out file"):
        aws_pipeline.spot_output_lines(archive.as_uri())
