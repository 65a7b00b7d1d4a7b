"""Tenant IAM roles in infra/modules/tenants: each grants its own prefixes and nothing of another.

``terraform plan`` renders the policy documents offline: a small root calls the module with
dummy credentials, every account lookup skipped, and the provider from the filesystem
mirror, and ``terraform show -json`` returns the rendered JSON. A small evaluator then checks,
for every pair of tenants, whether tenant A's policy allows any request on tenant B's
resources as :func:`saodf.tenants.tenant_layout` names them. Bad policy fixtures prove that
the check can fail.
"""

from __future__ import annotations

import json
import shutil
from fnmatch import fnmatchcase

import hcl2
import pytest
from hcl2 import SerializationOptions

from saodf.config import PROJECT_ROOT
from saodf.tenants import CACHE_COMMANDS, redis_acl_rules, tenant_layout
from tests.unit.test_infra_tools import TERRAFORM, plugin_dir, run, terraform_env

MODULE = PROJECT_ROOT / "infra" / "modules" / "tenants"
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
ACCOUNT = "123456789012"
REGION = "us-east-1"
PREFIX = "sd"
ZONES = ("raw", "prepared", "models", "forecasts", "quarantine")
# "acme-2" extends "acme" with a hyphen, so name patterns alone cannot tell them apart.
TENANTS = ("acme", "acme-2", "beta")
SAGEMAKER_TYPES = ("model", "transform-job", "training-job", "model-package-group")

ROOT = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}

provider "aws" {
  region                      = "%(region)s"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
}

module "tenants" {
  source                     = "./tenants"
  name_prefix                = "%(prefix)s"
  tenants                    = %(tenants)s
  account_id                 = "%(account)s"
  bucket_names               = { for zone in %(zones)s : zone => "%(prefix)s-${zone}" }
  data_kms_key_arn           = "arn:aws:kms:%(region)s:%(account)s:key/data"
  msk_cluster_name           = "%(prefix)s-telemetry"
  cache_replication_group_id = "%(prefix)s-forecasts"
  assuming_role_arns         = ["arn:aws:iam::%(account)s:role/%(prefix)s-gateway-actions"]
}

output "policies" {
  value = module.tenants.policy_documents
}
"""


# --- a small IAM evaluator: Allow statements, resource wildcards, the condition operators used


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _substitute(value: str, context: dict[str, str]) -> str:
    for key, known in context.items():
        value = value.replace("${" + key + "}", known)
    return value


def _condition_holds(operator: str, key: str, expected, context: dict[str, str]) -> bool:
    if key not in context:
        return False
    actual = context[key]
    values = [_substitute(str(value), context) for value in _as_list(expected)]
    if operator in ("StringEquals", "ArnEquals", "Bool"):
        return actual in values
    if operator in ("StringLike", "ArnLike"):
        return any(fnmatchcase(actual, value) for value in values)
    raise AssertionError(f"condition operator {operator} is not known to the test evaluator")


def allows(policy: dict, action: str, resource: str, context: dict[str, str]) -> list[str]:
    """Return the Sids of Allow statements that grant ``action`` on ``resource``."""
    granted = []
    for statement in _as_list(policy["Statement"]):
        if statement.get("Effect") != "Allow":
            continue
        if not any(fnmatchcase(action, pattern) for pattern in _as_list(statement["Action"])):
            continue
        if not any(fnmatchcase(resource, pattern) for pattern in _as_list(statement["Resource"])):
            continue
        conditions = statement.get("Condition", {})
        if all(
            _condition_holds(operator, key, expected, context)
            for operator, pairs in conditions.items()
            for key, expected in pairs.items()
        ):
            granted.append(statement.get("Sid", "?"))
    return granted


def tenant_requests(name: str) -> list[tuple[str, str, dict[str, str]]]:
    """Return requests on one tenant's resources: ``(action, resource ARN, request context)``."""
    layout = tenant_layout(name)
    tags = {"aws:ResourceTag/tenant": name, "aws:RequestTag/tenant": name}
    secure = {"aws:SecureTransport": "true"}
    kafka = f"arn:aws:kafka:{REGION}:{ACCOUNT}"
    sagemaker = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    requests = []
    for zone in ZONES:
        bucket = f"arn:aws:s3:::{PREFIX}-{zone}"
        requests.append(("s3:GetObject", f"{bucket}/{layout.lake_prefix}{zone}/a.parquet", secure))
        requests.append(("s3:ListBucket", bucket, {**secure, "s3:prefix": layout.lake_prefix}))
        requests.append(
            ("s3:ListBucket", bucket, {**secure, "s3:prefix": f"{layout.lake_prefix}raw/"})
        )
    requests.append(("s3:PutObject", f"arn:aws:s3:::{PREFIX}-raw/{layout.lake_prefix}x", secure))
    topic = f"{kafka}:topic/{PREFIX}-telemetry/abc-1/{layout.kafka_topic_prefix}telemetry.raw"
    requests.append(("kafka-cluster:ReadData", topic, {}))
    requests.append(("kafka-cluster:WriteData", topic, {}))
    group = f"{kafka}:group/{PREFIX}-telemetry/abc-1/{layout.kafka_topic_prefix}lake-writer"
    requests.append(("kafka-cluster:AlterGroup", group, {}))
    user = f"arn:aws:elasticache:{REGION}:{ACCOUNT}:user:{PREFIX}-t-{name}"
    requests.append(("elasticache:Connect", user, {}))
    for kind in SAGEMAKER_TYPES:
        resource = f"{sagemaker}:{kind}/{PREFIX}-{name}-deepar"
        requests.append(("sagemaker:DescribeModel", resource, tags))
        requests.append(("sagemaker:CreateModel", resource, tags))
    return requests


def leaks(policies: dict[str, dict], principal_tags: dict[str, str]) -> list[str]:
    """Return each grant of one tenant's policy on another tenant's resources."""
    found = []
    for owner, policy in policies.items():
        principal = {"aws:PrincipalTag/tenant": principal_tags[owner]}
        for other in policies:
            if other == owner:
                continue
            for action, resource, context in tenant_requests(other):
                sids = allows(policy, action, resource, {**context, **principal})
                if sids:
                    found.append(f"{owner} {action} {resource} via {sids}")
    return found


# --- the policies as Terraform renders them


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    """Return the module's plan as ``terraform show -json`` prints it."""
    if TERRAFORM is None:
        pytest.skip("terraform is not on PATH")
    mirror = plugin_dir()
    if mirror is None:
        pytest.skip("no filesystem mirror of the hashicorp/aws provider; set SAODF_TF_PLUGIN_DIR")
    root = tmp_path_factory.mktemp("tenants-root")
    shutil.copytree(MODULE, root / "tenants")
    (root / "main.tf").write_text(
        ROOT
        % {
            "region": REGION,
            "prefix": PREFIX,
            "account": ACCOUNT,
            "tenants": json.dumps(list(TENANTS)),
            "zones": json.dumps(list(ZONES)),
        },
        encoding="utf-8",
    )
    env = terraform_env(root)
    init = run(
        [TERRAFORM, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={mirror}"],
        env,
        cwd=root,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    plan = run(
        [TERRAFORM, "plan", "-input=false", "-no-color", "-refresh=false", "-out=tenants.plan"],
        env,
        cwd=root,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    shown = run([TERRAFORM, "show", "-json", "tenants.plan"], env, cwd=root)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.fixture(scope="module")
def policies(rendered) -> dict[str, dict]:
    documents = rendered["planned_values"]["outputs"]["policies"]["value"]
    return {name: json.loads(text) for name, text in documents.items()}


def _planned(rendered: dict, type_name: str) -> dict[str, dict]:
    return {
        change["index"]: change["change"]["after"]
        for change in rendered["resource_changes"]
        if change["type"] == type_name
    }


def test_policy_per_tenant(policies):
    assert sorted(policies) == sorted(TENANTS)


def test_policy_no_cross_tenant_grant(policies):
    assert leaks(policies, {name: name for name in policies}) == []


@pytest.mark.parametrize("name", TENANTS)
def test_policy_grants_own_resources(policies, name):
    principal = {"aws:PrincipalTag/tenant": name}
    denied = [
        f"{action} {resource}"
        for action, resource, context in tenant_requests(name)
        if not allows(policies[name], action, resource, {**context, **principal})
    ]
    assert denied == []


@pytest.mark.parametrize("name", TENANTS)
def test_policy_rejects_plain_http(policies, name):
    layout = tenant_layout(name)
    resource = f"arn:aws:s3:::{PREFIX}-raw/{layout.lake_prefix}x"
    context = {"aws:SecureTransport": "false", "aws:PrincipalTag/tenant": name}
    assert allows(policies[name], "s3:GetObject", resource, context) == []


@pytest.mark.parametrize("name", TENANTS)
def test_policy_lists_only_own_prefix(policies, name):
    bucket = f"arn:aws:s3:::{PREFIX}-raw"
    context = {"aws:SecureTransport": "true", "aws:PrincipalTag/tenant": name}
    for prefix in ("", "tenants/", "tenants/*"):
        assert (
            allows(policies[name], "s3:ListBucket", bucket, {**context, "s3:prefix": prefix}) == []
        )


def test_policy_no_admin_wildcards(policies):
    for name, policy in policies.items():
        for statement in _as_list(policy["Statement"]):
            if statement["Effect"] != "Allow":
                continue
            assert "*" not in _as_list(statement["Resource"]), f"{name} {statement['Sid']}"
            actions = _as_list(statement["Action"])
            assert not any(action.endswith(":*") for action in actions), statement["Sid"]


def test_roles_tagged_with_tenant(rendered):
    roles = _planned(rendered, "aws_iam_role")
    assert {index: after["tags"]["tenant"] for index, after in roles.items()} == {
        name: name for name in TENANTS
    }


def test_trust_allows_no_session_tags(rendered):
    for after in _planned(rendered, "aws_iam_role").values():
        trust = json.loads(after["assume_role_policy"])
        actions = {action for s in _as_list(trust["Statement"]) for action in _as_list(s["Action"])}
        assert actions == {"sts:AssumeRole"}


@pytest.mark.parametrize("name", TENANTS)
def test_cache_user_matches_local_acl(rendered, name):
    users = _planned(rendered, "aws_elasticache_user")
    local_rules = [rule for rule in redis_acl_rules(tenant_layout(name), "pw") if rule != "reset"]
    local_rules.remove(">pw")
    assert users[name]["access_string"] == " ".join(local_rules)
    assert users[name]["user_id"] == users[name]["user_name"]
    assert users[name]["authentication_mode"][0]["type"] == "iam"


def test_cache_commands_match_registry():
    parsed = hcl2.loads(
        (MODULE / "main.tf").read_text(encoding="utf-8"), serialization_options=OPTIONS
    )
    commands = next(
        entry["cache_commands"] for entry in parsed["locals"] if "cache_commands" in entry
    )
    assert tuple(commands) == CACHE_COMMANDS


def test_platform_passes_tenants():
    parsed = hcl2.loads(
        (PROJECT_ROOT / "infra" / "platform" / "main.tf").read_text(encoding="utf-8"),
        serialization_options=OPTIONS,
    )
    modules = {name: body for entry in parsed["module"] for name, body in entry.items()}
    assert "var.tenants" in str(modules["tenants"]["tenants"])
    assert "module.tenants.cache_user_ids" in str(modules["cache"]["tenant_user_ids"])


# --- the evaluator must catch bad policies


def _statement(sid: str, action: str, resources: list[str], condition: dict | None = None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


BAD_POLICIES = {
    "lake prefix wildcard": _statement(
        "AllTenants", "s3:GetObject", [f"arn:aws:s3:::{PREFIX}-raw/tenants/*"]
    ),
    "list without prefix condition": _statement(
        "ListAll", "s3:ListBucket", [f"arn:aws:s3:::{PREFIX}-raw"]
    ),
    "topic prefix without separator": _statement(
        "Topics",
        "kafka-cluster:ReadData",
        [f"arn:aws:kafka:{REGION}:{ACCOUNT}:topic/{PREFIX}-telemetry/*/t.acme*"],
    ),
    "sagemaker name without tag condition": _statement(
        "Models",
        "sagemaker:DescribeModel",
        [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/sd-acme-*"],
    ),
    "tag condition on the wrong key": _statement(
        "Models",
        "sagemaker:DescribeModel",
        [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/sd-acme-*"],
        {"StringLike": {"aws:ResourceTag/tenant": "acme*"}},
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_leak_check_fails_bad(case):
    bad = {"Version": "2012-10-17", "Statement": [BAD_POLICIES[case]]}
    empty = {"Version": "2012-10-17", "Statement": []}
    policies = {"acme": bad, "acme-2": empty, "beta": empty}
    assert leaks(policies, {name: name for name in policies}) != []


def test_leak_check_passes_empty():
    empty = {"Version": "2012-10-17", "Statement": []}
    assert leaks({"acme": empty, "beta": empty}, {"acme": "acme", "beta": "beta"}) == []
