"""Teardown and workspace logic of saodf.teardown that needs no terraform binary."""

from __future__ import annotations

import json
import re

import pytest

from saodf import teardown
from saodf.config import Settings
from saodf.errors import ConfigError
from saodf.teardown import TeardownError, TerraformSetup


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("SAODF_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SAODF_TARGET", raising=False)
    monkeypatch.delenv("SAODF_AWS_ENDPOINT_URL", raising=False)
    return Settings.from_env()


@pytest.fixture
def no_terraform() -> TerraformSetup:
    return TerraformSetup(binary=None, plugin_dir=None, retry_seconds=0)


def state_file(resources: list[dict]) -> str:
    return json.dumps({"version": 4, "resources": resources})


def test_run_slug_keeps_simple_key():
    assert teardown.run_slug("window-0123456789abcdef") == "window-0123456789abcdef"


def test_run_slug_lowercases_interval():
    key = "interval-20250101T0000-20250101T0100"
    assert teardown.run_slug(key) == key.lower()


def test_run_slug_hashes_lossy_key():
    slug = teardown.run_slug("airflow-manual__2025-01-01T00:00:00+00:00")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", slug)
    assert slug != teardown.run_slug("airflow-manual__2025-01-01T00:00:01+00:00")


def test_run_slug_bounds_long_key():
    slug = teardown.run_slug("window-" + "a" * 80)
    assert len(slug) <= teardown.MAX_SLUG_LENGTH
    assert slug != teardown.run_slug("window-" + "a" * 81)


def test_workspace_rejects_bad_key(settings):
    with pytest.raises(ConfigError, match="run key '../x' is invalid"):
        teardown.batch_workspace(settings, "../x")


def test_apply_without_terraform_makes_workspace(settings, no_terraform):
    result = teardown.apply_batch(settings, "window-1", setup=no_terraform)
    assert result["mode"] == "workspace"
    assert result["applied"] is False
    assert "no terraform binary" in result["reason"]
    assert (settings.batch_dir / "window-1").is_dir()


def test_teardown_without_stack_removes_workspace(settings, no_terraform):
    workspace = settings.batch_dir / "window-2"
    (workspace / "train").mkdir(parents=True)
    (workspace / "train" / "model.ckpt").write_text("x", encoding="utf-8")
    result = teardown.teardown_batch(settings, "window-2", setup=no_terraform)
    assert result["mode"] == "workspace"
    assert result["removed"] is True
    assert not workspace.exists()


def test_teardown_absent_workspace_succeeds(settings, no_terraform):
    result = teardown.teardown_batch(settings, "window-none", setup=no_terraform)
    assert result["removed"] is False
    assert result["destroyed"] == []


def test_teardown_state_without_terraform_raises(settings, no_terraform):
    tf_dir = settings.batch_dir / "window-3" / "terraform"
    tf_dir.mkdir(parents=True)
    (tf_dir / "terraform.tfstate").write_text(
        state_file(
            [
                {
                    "mode": "data",
                    "type": "aws_caller_identity",
                    "name": "current",
                    "instances": [{}],
                },
                {"mode": "managed", "type": "aws_s3_bucket", "name": "scratch", "instances": [{}]},
                {
                    "mode": "managed",
                    "type": "aws_kms_key",
                    "name": "run",
                    "instances": [{"index_key": 0}],
                },
            ]
        ),
        encoding="utf-8",
    )
    with pytest.raises(TeardownError, match="no terraform binary") as raised:
        teardown.teardown_batch(settings, "window-3", setup=no_terraform)
    assert raised.value.survivors == ["aws_s3_bucket.scratch", "aws_kms_key.run[0]"]
    assert (tf_dir / "terraform.tfstate").exists()


def test_teardown_marker_without_terraform_raises(settings, no_terraform):
    tf_dir = settings.batch_dir / "window-4" / "terraform"
    tf_dir.mkdir(parents=True)
    (tf_dir / teardown.STACK_MARKER).write_text("{}", encoding="utf-8")
    with pytest.raises(TeardownError, match="window-4"):
        teardown.teardown_batch(settings, "window-4", setup=no_terraform)
    assert tf_dir.exists()


def test_aws_target_needs_terraform(settings):
    aws = settings.with_overrides(target="aws", aws_endpoint_url=None)
    with pytest.raises(ConfigError, match="needs terraform"):
        teardown.apply_batch(aws, "window-5", setup=TerraformSetup(binary=None, plugin_dir=None))


def test_prepare_local_workspace(settings):
    local = settings.with_overrides(aws_endpoint_url="http://127.0.0.1:5999")
    setup = TerraformSetup(binary="terraform", plugin_dir=None, name_prefix="acme")
    tf_dir = teardown.prepare_workspace(local, "window-6", setup, {"kms_key_arn": "arn:k"})
    assert (tf_dir / "main.tf").exists()
    assert 'backend "local"' in (tf_dir / "backend_override.tf").read_text(encoding="utf-8")
    provider = (tf_dir / "provider_override.tf").read_text(encoding="utf-8")
    assert 's3 = "http://127.0.0.1:5999"' in provider
    values = json.loads((tf_dir / "terraform.tfvars.json").read_text(encoding="utf-8"))
    assert values["run_key"] == "window-6"
    assert values["name_prefix"] == "acme"
    assert values["kms_key_arn"] == "arn:k"


def test_prepare_keeps_apply_variables(settings):
    setup = TerraformSetup(binary="terraform", plugin_dir=None)
    teardown.prepare_workspace(settings, "window-7", setup, {"force_destroy_scratch": False})
    tf_dir = teardown.prepare_workspace(settings, "window-7", setup, None)
    values = json.loads((tf_dir / "terraform.tfvars.json").read_text(encoding="utf-8"))
    assert values["force_destroy_scratch"] is False


def test_prepare_aws_writes_s3_backend(settings):
    aws = settings.with_overrides(target="aws", aws_endpoint_url=None)
    setup = TerraformSetup(
        binary="terraform", plugin_dir=None, state_bucket="acme-tf-state", state_kms_key="alias/k"
    )
    tf_dir = teardown.prepare_workspace(aws, "window-8", setup, None)
    backend = (tf_dir / "backend.hcl").read_text(encoding="utf-8")
    assert 'bucket = "acme-tf-state"' in backend
    assert 'key = "saodf/batch/window-8/terraform.tfstate"' in backend
    assert "use_lockfile = true" in backend
    assert not (tf_dir / "backend_override.tf").exists()
    assert not (tf_dir / "provider_override.tf").exists()


def test_prepare_aws_needs_state_bucket(settings):
    aws = settings.with_overrides(target="aws", aws_endpoint_url=None)
    setup = TerraformSetup(binary="terraform", plugin_dir=None)
    with pytest.raises(ConfigError, match="SAODF_TF_STATE_BUCKET is not set"):
        teardown.prepare_workspace(aws, "window-9", setup, None)


def test_local_env_hides_real_credentials(settings, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREAL")
    env = teardown.terraform_env(settings, TerraformSetup(binary="terraform", plugin_dir=None))
    assert "AWS_PROFILE" not in env
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["CHECKPOINT_DISABLE"] == "1"


def test_terraform_mode_reasons(settings):
    setup = TerraformSetup(binary="terraform", plugin_dir=None)
    use, reason = teardown.terraform_mode(settings, setup)
    assert use is False
    assert "SAODF_TF_PLUGIN_DIR" in reason


def test_setup_rejects_bad_plugin_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SAODF_TF_PLUGIN_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="has no registry.terraform.io/hashicorp/aws"):
        TerraformSetup.from_env()


def test_setup_rejects_bad_attempts(monkeypatch):
    monkeypatch.setenv("SAODF_TF_DESTROY_ATTEMPTS", "0")
    with pytest.raises(ConfigError, match="SAODF_TF_DESTROY_ATTEMPTS=0 is below the minimum 1"):
        TerraformSetup.from_env()


def test_find_plugin_dir_checks_layout(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "registry.terraform.io" / "hashicorp" / "aws").mkdir(parents=True)
    assert teardown.find_plugin_dir([tmp_path / "empty", mirror]) == mirror


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("data.aws_caller_identity.current", True),
        ("module.bucket.data.aws_iam_policy_document.this", True),
        ('module.bucket["raw"].data.aws_iam_policy_document.this', True),
        ("aws_s3_bucket.scratch", False),
        ("module.data.aws_s3_bucket.this", False),
    ],
)
def test_data_source_addresses(address, expected):
    assert teardown._is_data_source(address) is expected


def test_operator_rejects_bad_action():
    from saodf_airflow.terraform import TerraformBatchOperator

    with pytest.raises(ValueError, match="action='plan' is invalid"):
        TerraformBatchOperator(task_id="t", action="plan")


def test_operator_run_key_fallback():
    from saodf_airflow.terraform import TerraformBatchOperator

    class TaskInstance:
        def __init__(self, value):
            self.value = value

        def xcom_pull(self, task_ids):
            return self.value

    operator = TerraformBatchOperator(task_id="t", action="destroy")
    scoped = {"ti": TaskInstance({"run_key": "window-abc"}), "run_id": "manual__1"}
    assert operator.resolve_run_key(scoped) == "window-abc"
    failed = {"ti": TaskInstance(None), "run_id": "manual__1"}
    assert operator.resolve_run_key(failed) == "airflow-manual__1"
