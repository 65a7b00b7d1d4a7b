"""Apply and destroy the per-run batch stack with Terraform, or remove the run's local workspace.

Each pipeline run owns a workspace ``<SAODF_HOME>/batch/<run_key>``. When Terraform can
run (the ``aws`` target, or locally a ``terraform`` binary plus a filesystem mirror of the
``hashicorp/aws`` provider and an AWS endpoint such as ``moto_server``), the workspace's
``terraform/`` folder contains a copy of ``infra/batch`` with the run's variables and its
backend: a local state file for the local target, one S3 state key per run on AWS.
:func:`teardown_batch` destroys that stack, retries a failed destroy, and raises
:class:`TeardownError` listing the resources that are still in the state. Without
Terraform it removes the workspace folder, as the local pipeline always did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from saodf.config import PROJECT_ROOT, Settings
from saodf.errors import ConfigError, SaodfError

logger = logging.getLogger(__name__)

LogFunction = Callable[[str], None]

BATCH_STACK_DIR = PROJECT_ROOT / "infra" / "batch"
STACK_MARKER = "stack.json"
# Filesystem mirrors searched for the hashicorp/aws provider when SAODF_TF_PLUGIN_DIR is unset.
DEFAULT_PLUGIN_DIRS = (
    Path("/opt/tf-plugins"),
    Path("~/.terraform.d/plugins").expanduser(),
    Path("~/.local/share/terraform/plugins").expanduser(),
    Path("/usr/share/terraform/plugins"),
)
AWS_PROVIDER_PATH = Path("registry.terraform.io") / "hashicorp" / "aws"
# AWS services the batch stack calls; the local target points each of them at one endpoint.
BATCH_STACK_SERVICES = ("s3", "iam", "kms", "sts", "ec2")
MAX_SLUG_LENGTH = 40


class TeardownError(SaodfError):
    """A destroy of the batch stack left resources behind; ``survivors`` lists their addresses."""

    def __init__(self, message: str, run_key: str, survivors: Sequence[str]):
        super().__init__(message)
        self.run_key = run_key
        self.survivors = list(survivors)


class TerraformError(SaodfError):
    """A Terraform command failed; the message contains the end of its output."""


@dataclass(frozen=True)
class TerraformSetup:
    """Location of Terraform, its provider mirror and the remote state, and the retry policy."""

    binary: str | None
    plugin_dir: Path | None
    name_prefix: str = "saodf"
    state_bucket: str | None = None
    state_key_prefix: str = "saodf/batch"
    state_lock_table: str | None = None
    state_kms_key: str | None = None
    destroy_attempts: int = 3
    retry_seconds: float = 10.0
    command_timeout: float = 1800.0

    @classmethod
    def from_env(cls) -> TerraformSetup:
        """Read ``SAODF_TERRAFORM_BIN``, ``SAODF_TF_*`` and look for a provider mirror."""
        binary = os.environ.get("SAODF_TERRAFORM_BIN") or shutil.which("terraform")
        plugin_env = os.environ.get("SAODF_TF_PLUGIN_DIR")
        if plugin_env:
            plugin_dir: Path | None = Path(plugin_env).expanduser()
            if not (plugin_dir / AWS_PROVIDER_PATH).is_dir():
                raise ConfigError(
                    f"SAODF_TF_PLUGIN_DIR={plugin_env!r} has no {AWS_PROVIDER_PATH} folder; "
                    "point it at a filesystem mirror of the hashicorp/aws provider or unset it"
                )
        else:
            plugin_dir = find_plugin_dir()
        return cls(
            binary=binary,
            plugin_dir=plugin_dir,
            name_prefix=os.environ.get("SAODF_TF_NAME_PREFIX") or "saodf",
            state_bucket=os.environ.get("SAODF_TF_STATE_BUCKET") or None,
            state_key_prefix=os.environ.get("SAODF_TF_STATE_KEY_PREFIX") or "saodf/batch",
            state_lock_table=os.environ.get("SAODF_TF_STATE_LOCK_TABLE") or None,
            state_kms_key=os.environ.get("SAODF_TF_STATE_KMS_KEY") or None,
            destroy_attempts=_env_int("SAODF_TF_DESTROY_ATTEMPTS", 3, minimum=1),
            retry_seconds=_env_float("SAODF_TF_RETRY_SECONDS", 10.0),
            command_timeout=_env_float("SAODF_TF_TIMEOUT_SECONDS", 1800.0),
        )

    def with_overrides(self, **changes: Any) -> TerraformSetup:
        return replace(self, **changes)


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ConfigError(f"{name}={value} is negative; set 0 or more seconds")
    return value


def find_plugin_dir(candidates: Sequence[Path] = DEFAULT_PLUGIN_DIRS) -> Path | None:
    """Return the first folder that mirrors the ``hashicorp/aws`` provider, or None."""
    for candidate in candidates:
        if (candidate / AWS_PROVIDER_PATH).is_dir():
            return candidate
    return None


def run_slug(run_key: str) -> str:
    """Turn a run key into lowercase letters, digits and hyphens, at most 40 characters.

    Keys that lose characters other than case, or are too long, get an 8-character hash of
    the full key, so two run keys never map to the same resource names.
    """
    lowered = run_key.lower()
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", lowered)).strip("-")
    if slug == lowered and 0 < len(slug) <= MAX_SLUG_LENGTH:
        return slug
    digest = hashlib.sha1(run_key.encode("utf-8")).hexdigest()[:8]
    head = slug[: MAX_SLUG_LENGTH - len(digest) - 1].rstrip("-") or "run"
    return f"{head}-{digest}"


def batch_workspace(settings: Settings, run_key: str) -> Path:
    """Return the run's batch workspace folder (not created)."""
    if not run_key or "/" in run_key or run_key in (".", ".."):
        raise ConfigError(
            f"run key {run_key!r} is invalid; it must be a non-empty name without '/'"
        )
    return settings.batch_dir / run_key


def terraform_dir(settings: Settings, run_key: str) -> Path:
    return batch_workspace(settings, run_key) / "terraform"


def terraform_mode(settings: Settings, setup: TerraformSetup) -> tuple[bool, str]:
    """Return whether the batch stack is managed with Terraform here, and why (or why not)."""
    if settings.target == "aws":
        return True, "target aws"
    if setup.binary is None:
        return False, "no terraform binary on PATH (set SAODF_TERRAFORM_BIN)"
    if setup.plugin_dir is None:
        return False, "no filesystem mirror of the hashicorp/aws provider (set SAODF_TF_PLUGIN_DIR)"
    if not settings.aws_endpoint_url:
        return False, "no local AWS endpoint (set SAODF_AWS_ENDPOINT_URL, e.g. moto_server)"
    return True, f"terraform {setup.binary} with provider mirror {setup.plugin_dir}"


def _default_log(line: str) -> None:
    logger.info("terraform: %s", line)


def apply_batch(
    settings: Settings,
    run_key: str,
    log: LogFunction | None = None,
    *,
    variables: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    setup: TerraformSetup | None = None,
) -> dict[str, Any]:
    """Create the run's batch stack, or only its local workspace when Terraform cannot run.

    Args:
        settings: target, AWS endpoint and region, and the batch workspace root.
        run_key: the run that owns the stack.
        log: receives each line of Terraform's output (default: this module's logger).
        variables: extra Terraform variables; they are stored in the workspace, so the
            destroy uses them too.
        env: extra environment of the Terraform processes, such as AWS credentials.
        setup: Terraform binary, mirror and state backend; default from the environment.

    Returns:
        ``mode`` ("terraform" or "workspace"), ``workspace``, ``applied``, ``outputs`` and
        ``resources`` (managed resource addresses in the state), and ``seconds``.

    Raises:
        TerraformError: init or apply failed; resources already created stay in the state,
            so the teardown task can destroy them.
        ConfigError: the aws target without a terraform binary or a state bucket.
    """
    log = log or _default_log
    setup = setup or TerraformSetup.from_env()
    started = time.monotonic()
    workspace = batch_workspace(settings, run_key)
    use_terraform, reason = terraform_mode(settings, setup)
    if not use_terraform:
        workspace.mkdir(parents=True, exist_ok=True)
        logger.info(
            "batch stack of run %s not applied (%s): workspace %s", run_key, reason, workspace
        )
        return {
            "mode": "workspace",
            "workspace": str(workspace),
            "applied": False,
            "reason": reason,
            "outputs": {},
            "resources": [],
            "seconds": time.monotonic() - started,
        }
    _require_binary(setup, run_key)
    tf_dir = prepare_workspace(settings, run_key, setup, variables)
    process_env = terraform_env(settings, setup, env)
    _init(tf_dir, settings, setup, process_env, log)
    _write_marker(tf_dir, run_key, settings, "applying")
    result = _run_terraform(
        setup,
        ["apply", "-auto-approve", "-input=false", "-no-color", "-lock-timeout=120s"],
        tf_dir,
        process_env,
        log,
    )
    if result.returncode != 0:
        survivors = list_state(tf_dir, setup, process_env)
        raise TerraformError(
            f"terraform apply of the batch stack of run {run_key} failed with exit code "
            f"{result.returncode}; {len(survivors)} resources were created and stay in the state "
            f"in {tf_dir} for the teardown task to destroy. Last output:\n{result.tail()}"
        )
    outputs = _outputs(tf_dir, setup, process_env)
    resources = list_state(tf_dir, setup, process_env)
    _write_marker(tf_dir, run_key, settings, "applied", outputs=outputs)
    logger.info(
        "batch stack of run %s applied: %d resources in %s", run_key, len(resources), tf_dir
    )
    return {
        "mode": "terraform",
        "workspace": str(workspace),
        "applied": True,
        "outputs": outputs,
        "resources": resources,
        "seconds": time.monotonic() - started,
    }


def teardown_batch(
    settings: Settings,
    run_key: str,
    log: LogFunction | None = None,
    *,
    env: Mapping[str, str] | None = None,
    setup: TerraformSetup | None = None,
) -> dict[str, Any]:
    """Destroy the run's batch stack (with retries), then remove the run's workspace folder.

    The stack is destroyed on the aws target, and locally whenever an apply left a state
    in the workspace; otherwise only the folder is removed. The folder, with the state in
    it, is kept when something survives, so the teardown can be rerun.

    Returns:
        ``mode``, ``workspace``, ``removed`` (whether a folder was deleted), ``destroyed``
        (resource addresses that were in the state), ``attempts`` and ``seconds``.

    Raises:
        TeardownError: resources survived every destroy attempt; ``survivors`` lists them.
        ConfigError: a stack needs destroying but no terraform binary is available.
    """
    log = log or _default_log
    setup = setup or TerraformSetup.from_env()
    started = time.monotonic()
    workspace = batch_workspace(settings, run_key)
    tf_dir = workspace / "terraform"
    needs_destroy = settings.target == "aws" or _has_local_stack(tf_dir)
    destroyed: list[str] = []
    attempts = 0
    if needs_destroy:
        if setup.binary is None:
            survivors = _resources_in_state_file(tf_dir / "terraform.tfstate")
            raise TeardownError(
                f"teardown of run {run_key}: the batch stack needs a destroy but no terraform "
                f"binary was found; install terraform or set SAODF_TERRAFORM_BIN and rerun the "
                f"teardown. Resources in the state in {tf_dir}: {_listing(survivors)}",
                run_key,
                survivors,
            )
        destroyed, attempts = _destroy_with_retries(settings, run_key, tf_dir, setup, env, log)
    existed = workspace.exists()
    if existed:
        shutil.rmtree(workspace)
    if workspace.exists():
        raise SaodfError(
            f"teardown of run {run_key} failed: workspace {workspace} still exists after removal; "
            "check its permissions and remove it by hand"
        )
    logger.info(
        "teardown of run %s: %d resources destroyed in %d attempts, workspace %s %s",
        run_key,
        len(destroyed),
        attempts,
        workspace,
        "removed" if existed else "absent",
    )
    return {
        "mode": "terraform" if needs_destroy else "workspace",
        "workspace": str(workspace),
        "removed": existed,
        "destroyed": destroyed,
        "attempts": attempts,
        "seconds": time.monotonic() - started,
    }


def _destroy_with_retries(
    settings: Settings,
    run_key: str,
    tf_dir: Path,
    setup: TerraformSetup,
    env: Mapping[str, str] | None,
    log: LogFunction,
) -> tuple[list[str], int]:
    """Run ``terraform destroy`` until the state contains no managed resource or attempts run out."""
    if not tf_dir.exists():
        # On AWS the state lives in S3, so a worker without the workspace rebuilds it.
        logger.info(
            "teardown of run %s: rebuilding workspace %s from the state backend", run_key, tf_dir
        )
    prepare_workspace(settings, run_key, setup, None)
    process_env = terraform_env(settings, setup, env)
    _init(tf_dir, settings, setup, process_env, log)
    before = list_state(tf_dir, setup, process_env)
    last_tail = ""
    survivors = before
    for attempt in range(1, setup.destroy_attempts + 1):
        result = _run_terraform(
            setup,
            ["destroy", "-auto-approve", "-input=false", "-no-color", "-lock-timeout=120s"],
            tf_dir,
            process_env,
            log,
        )
        survivors = list_state(tf_dir, setup, process_env)
        if result.returncode == 0 and not survivors:
            return before, attempt
        last_tail = result.tail()
        logger.warning(
            "teardown of run %s: destroy attempt %d/%d exited %d, %d resources survive: %s",
            run_key,
            attempt,
            setup.destroy_attempts,
            result.returncode,
            len(survivors),
            _listing(survivors),
        )
        if attempt < setup.destroy_attempts:
            time.sleep(setup.retry_seconds * attempt)
    raise TeardownError(
        f"teardown of run {run_key} failed after {setup.destroy_attempts} destroy attempts; "
        f"resources still in the state: {_listing(survivors)}. The state is kept in {tf_dir}: "
        f"fix the cause and rerun the teardown task. Last output:\n{last_tail}",
        run_key,
        survivors,
    )


def _listing(addresses: Sequence[str]) -> str:
    return ", ".join(addresses) if addresses else "none"


def _require_binary(setup: TerraformSetup, run_key: str) -> None:
    if setup.binary is None:
        raise ConfigError(
            f"the batch stack of run {run_key} needs terraform, which was not found; install "
            "terraform 1.6 or later or set SAODF_TERRAFORM_BIN"
        )


def prepare_workspace(
    settings: Settings,
    run_key: str,
    setup: TerraformSetup,
    variables: Mapping[str, Any] | None,
) -> Path:
    """Copy ``infra/batch`` into the run's workspace and write its variables and overrides."""
    tf_dir = terraform_dir(settings, run_key)
    tf_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(BATCH_STACK_DIR.glob("*.tf"))
    if not sources:
        raise ConfigError(f"no Terraform files in {BATCH_STACK_DIR}; the checkout is incomplete")
    for source in [*sources, BATCH_STACK_DIR / ".terraform.lock.hcl"]:
        if source.exists():
            shutil.copy2(source, tf_dir / source.name)

    if settings.target == "aws":
        (tf_dir / "backend_override.tf").unlink(missing_ok=True)
        _write_text(tf_dir / "backend.hcl", _s3_backend_config(settings, run_key, setup))
    else:
        _write_text(tf_dir / "backend_override.tf", LOCAL_BACKEND)

    if settings.aws_endpoint_url:
        _write_text(tf_dir / "provider_override.tf", _endpoint_provider(settings.aws_endpoint_url))
    else:
        (tf_dir / "provider_override.tf").unlink(missing_ok=True)

    # Variables of earlier calls (the apply's extras) stay, so the destroy sees the same inputs.
    tfvars_path = tf_dir / "terraform.tfvars.json"
    stored = json.loads(tfvars_path.read_text(encoding="utf-8")) if tfvars_path.exists() else {}
    values = {
        **stored,
        "run_key": run_key,
        "run_slug": run_slug(run_key),
        "name_prefix": setup.name_prefix,
        "region": settings.aws_region,
        **dict(variables or {}),
    }
    _write_text(tfvars_path, json.dumps(values, indent=2, sort_keys=True) + "\n")
    return tf_dir


LOCAL_BACKEND = """\
# Written by saodf.teardown: the local target keeps the run's state in this folder.
terraform {
  backend "local" {
    path = "terraform.tfstate"
  }
}
"""


def _endpoint_provider(endpoint: str) -> str:
    endpoints = "\n".join(f'    {service} = "{endpoint}"' for service in BATCH_STACK_SERVICES)
    return f"""\
# Written by saodf.teardown: every AWS call of this stack goes to {endpoint}.
provider "aws" {{
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  max_retries                 = 2

  endpoints {{
{endpoints}
  }}
}}
"""


def _s3_backend_config(settings: Settings, run_key: str, setup: TerraformSetup) -> str:
    if not setup.state_bucket:
        raise ConfigError(
            "SAODF_TF_STATE_BUCKET is not set; on the aws target the batch stack's state lives "
            "in S3: set it to the state bucket created by infra/platform (output tf_state_bucket)"
        )
    lines = {
        "bucket": setup.state_bucket,
        "key": f"{setup.state_key_prefix.strip('/')}/{run_key}/terraform.tfstate",
        "region": settings.aws_region,
        "encrypt": True,
    }
    if setup.state_kms_key:
        lines["kms_key_id"] = setup.state_kms_key
    if settings.aws_endpoint_url:
        # An emulator (moto_server) in place of AWS: no STS identity and path-style buckets.
        lines.update(
            endpoints={"s3": settings.aws_endpoint_url},
            use_path_style=True,
            skip_credentials_validation=True,
            skip_requesting_account_id=True,
            skip_metadata_api_check=True,
        )
    if setup.state_lock_table:
        lines["dynamodb_table"] = setup.state_lock_table
    else:
        lines["use_lockfile"] = True
    return "".join(f"{name} = {_hcl_value(value)}\n" for name, value in lines.items())


def _hcl_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _write_marker(
    tf_dir: Path, run_key: str, settings: Settings, status: str, outputs: dict | None = None
) -> None:
    record = {
        "run_key": run_key,
        "status": status,
        "target": settings.target,
        "updated_at": datetime.now(timezone.utc).isoformat(),
        "outputs": outputs or {},
    }
    _write_text(tf_dir / STACK_MARKER, json.dumps(record, indent=2) + "\n")


def _has_local_stack(tf_dir: Path) -> bool:
    """Return whether an apply was started here or a state file lists resources."""
    if (tf_dir / STACK_MARKER).exists():
        return True
    return bool(_resources_in_state_file(tf_dir / "terraform.tfstate"))


def _resources_in_state_file(path: Path) -> list[str]:
    """List the managed resource addresses in a local state file without running terraform."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    addresses = []
    for resource in state.get("resources", []):
        if resource.get("mode") != "managed":
            continue
        base = f"{resource['type']}.{resource['name']}"
        if resource.get("module"):
            base = f"{resource['module']}.{base}"
        for instance in resource.get("instances", []):
            key = instance.get("index_key")
            if key is None:
                addresses.append(base)
            elif isinstance(key, int):
                addresses.append(f"{base}[{key}]")
            else:
                addresses.append(f"{base}[{json.dumps(key)}]")
    return addresses


def cli_config_file(settings: Settings) -> Path:
    """Write and return the project-local Terraform CLI configuration."""
    path = settings.home / "terraform" / "terraform.rc"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        _write_text(path, "disable_checkpoint = true\n")
    return path


def terraform_env(
    settings: Settings, setup: TerraformSetup, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the environment of Terraform processes for this target."""
    env = dict(os.environ)
    env.update(
        {
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "TF_CLI_CONFIG_FILE": str(cli_config_file(settings)),
        }
    )
    env.pop("TF_DATA_DIR", None)
    env.pop("TF_WORKSPACE", None)
    if settings.target != "aws":
        # The local endpoint is an emulator: never hand it the user's real AWS credentials.
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(name, None)
        env["AWS_ACCESS_KEY_ID"] = "testing"
        env["AWS_SECRET_ACCESS_KEY"] = "testing"
    env["AWS_REGION"] = settings.aws_region
    env.update(extra or {})
    return env


@dataclass
class CommandResult:
    returncode: int
    lines: list[str]

    def tail(self, count: int = 30) -> str:
        return "\n".join(self.lines[-count:])


def _run_terraform(
    setup: TerraformSetup,
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    log: LogFunction | None,
    capture_only: bool = False,
) -> CommandResult:
    """Run one Terraform command, passing each output line to ``log`` as it arrives."""
    assert setup.binary is not None
    argv = [setup.binary, f"-chdir={cwd}", *args]
    logger.info("running %s", " ".join(argv))
    try:
        process = subprocess.Popen(  # noqa: S603 - argv built from our own settings
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        raise TerraformError(
            f"cannot run {setup.binary}: {exc}; check SAODF_TERRAFORM_BIN"
        ) from exc
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            if log is not None and not capture_only:
                log(line)

    reader = threading.Thread(target=pump, name="terraform-output", daemon=True)
    reader.start()
    try:
        returncode = process.wait(timeout=setup.command_timeout)
    except subprocess.TimeoutExpired:
        # Terraform stops cleanly on SIGINT (it releases the state lock); SIGKILL is the fallback.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        reader.join(timeout=5)
        raise TerraformError(
            f"terraform {args[0]} in {cwd} timed out after {setup.command_timeout:.0f} s; raise "
            f"SAODF_TF_TIMEOUT_SECONDS if the stack is slow. Last output:\n"
            + "\n".join(lines[-30:])
        ) from None
    reader.join(timeout=30)
    return CommandResult(returncode, lines)


def _init(
    tf_dir: Path,
    settings: Settings,
    setup: TerraformSetup,
    env: Mapping[str, str],
    log: LogFunction,
) -> None:
    args = ["init", "-input=false", "-no-color", "-reconfigure"]
    if setup.plugin_dir is not None:
        args.append(f"-plugin-dir={setup.plugin_dir}")
    if settings.target == "aws":
        args.append("-backend-config=backend.hcl")
    result = _run_terraform(setup, args, tf_dir, env, log)
    if result.returncode != 0:
        raise TerraformError(
            f"terraform init in {tf_dir} failed with exit code {result.returncode}; without "
            "network access set SAODF_TF_PLUGIN_DIR to a mirror of the hashicorp/aws provider. "
            f"Last output:\n{result.tail()}"
        )


def list_state(tf_dir: Path, setup: TerraformSetup, env: Mapping[str, str]) -> list[str]:
    """Return the managed resource addresses in the workspace's state (data sources excluded)."""
    result = _run_terraform(setup, ["state", "list"], tf_dir, env, None, capture_only=True)
    if result.returncode != 0:
        text = result.tail()
        if "No state file was found" in text:
            return []
        raise TerraformError(f"terraform state list in {tf_dir} failed: {text}")
    return [line.strip() for line in result.lines if line.strip() and not _is_data_source(line)]


DATA_SOURCE_ADDRESS = re.compile(r"^(module\.[^.\[]+(\[[^\]]*\])?\.)*data\.")


def _is_data_source(address: str) -> bool:
    return DATA_SOURCE_ADDRESS.match(address.strip()) is not None


def _outputs(tf_dir: Path, setup: TerraformSetup, env: Mapping[str, str]) -> dict[str, Any]:
    result = _run_terraform(setup, ["output", "-json"], tf_dir, env, None, capture_only=True)
    if result.returncode != 0:
        raise TerraformError(f"terraform output in {tf_dir} failed: {result.tail()}")
    raw = json.loads("\n".join(result.lines) or "{}")
    return {name: item.get("value") for name, item in raw.items() if not item.get("sensitive")}
