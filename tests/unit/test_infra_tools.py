"""Terraform's own checks (fmt, validate) and checkov on infra/, skipped when a tool is missing.

``terraform validate`` needs the hashicorp/aws provider: it runs offline against a
filesystem mirror (SAODF_TF_PLUGIN_DIR or a default location, see saodf.teardown).
checkov lives in its own virtual environment, installed by infra/tools/install-tools.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from saodf.config import PROJECT_ROOT
from saodf.teardown import find_plugin_dir

INFRA = PROJECT_ROOT / "infra"
TERRAFORM = os.environ.get("SAODF_TERRAFORM_BIN") or shutil.which("terraform")
TOOLS_DIR = Path(os.environ.get("SAODF_TOOLS_DIR", PROJECT_ROOT / ".saodf" / "tools"))
CHECKOV = TOOLS_DIR / "checkov" / "bin" / "checkov"

needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH")


def plugin_dir() -> Path | None:
    configured = os.environ.get("SAODF_TF_PLUGIN_DIR")
    return Path(configured) if configured else find_plugin_dir()


def terraform_env(tmp_path: Path) -> dict[str, str]:
    rc = tmp_path / "terraform.rc"
    rc.write_text("disable_checkpoint = true\n", encoding="utf-8")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    env["TF_CLI_CONFIG_FILE"] = str(rc)
    env.pop("TF_DATA_DIR", None)
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(  # noqa: S603 - fixed argv
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@needs_terraform
def test_terraform_fmt_check(tmp_path):
    result = run(
        [TERRAFORM, "fmt", "-check", "-recursive", "-diff", str(INFRA)], terraform_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_terraform
@pytest.mark.parametrize("root", ["platform", "batch"])
def test_terraform_validate_root(tmp_path, root):
    mirror = plugin_dir()
    if mirror is None:
        pytest.skip("no filesystem mirror of the hashicorp/aws provider; set SAODF_TF_PLUGIN_DIR")
    # Validate a copy, so init never writes into the checkout.
    copy = tmp_path / "repo"
    shutil.copytree(INFRA, copy / "infra", ignore=shutil.ignore_patterns(".terraform"))
    (copy / "etl").mkdir()
    shutil.copy2(PROJECT_ROOT / "etl" / "glue_job.py", copy / "etl" / "glue_job.py")
    env = terraform_env(tmp_path)
    workdir = copy / "infra" / root
    init = run(
        [TERRAFORM, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={mirror}"],
        env,
        cwd=workdir,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    result = run([TERRAFORM, "validate", "-json", "-no-color"], env, cwd=workdir)
    report = json.loads(result.stdout)
    assert report["valid"] is True, report["diagnostics"]
    warnings = [d["summary"] for d in report["diagnostics"] if d["severity"] == "warning"]
    assert warnings == []


needs_checkov = pytest.mark.skipif(
    not CHECKOV.exists(),
    reason=f"checkov not installed in {CHECKOV.parent.parent}; run infra/tools/install-tools.sh",
)
CUSTOM_CHECKS = INFRA / "tools" / "checkov"


def checkov_failures(directory: Path, *extra: str) -> list[str]:
    """Run checkov with the custom policies on ``directory`` and list its failed checks."""
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    argv = [
        str(CHECKOV),
        "--directory",
        str(directory),
        "--framework",
        "terraform",
        "--external-checks-dir",
        str(CUSTOM_CHECKS),
        "--output",
        "json",
        "--quiet",
        "--compact",
        "--skip-download",
        "--download-external-modules",
        "false",
        *extra,
    ]
    result = run(argv, env, timeout=600)
    assert result.stdout, result.stderr[-2000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return [
        f"{check['check_id']} {check['resource']} ({check['file_path']})"
        for report in reports
        for check in report.get("results", {}).get("failed_checks", [])
    ]


@needs_checkov
def test_checkov_no_failures():
    assert checkov_failures(INFRA) == []


@needs_checkov
def test_checkov_custom_fails_bad(tmp_path):
    """Flag Redis open to 0.0.0.0/0, which no built-in checkov check catches."""
    (tmp_path / "main.tf").write_text(
        """
resource "aws_security_group" "bad" {
  name = "bad"
  ingress {
    from_port   = 6379
    to_port     = 6379
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
resource "aws_vpc_security_group_ingress_rule" "bad" {
  security_group_id = "sg-1"
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
  cidr_ipv4         = "0.0.0.0/0"
}
resource "aws_security_group_rule" "bad" {
  type              = "ingress"
  security_group_id = "sg-1"
  from_port         = 6379
  to_port           = 6379
  protocol          = "tcp"
  cidr_blocks       = ["0.0.0.0/0"]
}
""",
        encoding="utf-8",
    )
    failures = checkov_failures(tmp_path, "--check", "CKV2_SAODF_1,CKV2_SAODF_2")
    assert sorted(f.split(" (")[0] for f in failures) == [
        "CKV2_SAODF_1 aws_vpc_security_group_ingress_rule.bad",
        "CKV2_SAODF_2 aws_security_group.bad",
        "CKV2_SAODF_2 aws_security_group_rule.bad",
    ]
