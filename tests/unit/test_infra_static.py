"""Static rules on every Terraform file under infra/, each proven able to fail on a bad fixture.

The rules: no security-group ingress from 0.0.0.0/0 or ::/0; no IAM statement that allows
the action "*" on the resource "*"; every S3 bucket SSE-KMS encrypted, versioned and with
all public access blocked; every KMS key rotated; every CloudTrail trail multi-region,
KMS-encrypted and validating its log files; SQS queues encrypted with a dead-letter queue;
MSK with TLS and IAM authentication only; ElastiCache encrypted at rest and in transit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hcl2
import pytest
from hcl2 import SerializationOptions

from saodf.config import PROJECT_ROOT

INFRA = PROJECT_ROOT / "infra"
OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


@dataclass
class Block:
    """One ``resource`` or ``data`` block of a parsed .tf file."""

    path: Path
    kind: str
    type: str
    name: str
    body: dict

    @property
    def address(self) -> str:
        prefix = "data." if self.kind == "data" else ""
        return f"{self.path.parent.name}/{self.path.name}: {prefix}{self.type}.{self.name}"


def parse_file(path: Path) -> dict:
    return hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=OPTIONS)


def blocks_in(directory: Path) -> list[Block]:
    """Return the resource and data blocks of every .tf file under ``directory``."""
    found = []
    for path in sorted(directory.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        parsed = parse_file(path)
        for kind in ("resource", "data"):
            for entry in parsed.get(kind, []):
                for type_name, named in entry.items():
                    for name, body in named.items():
                        found.append(Block(path, kind, type_name, name, body))
    return found


def module_dirs(root: Path) -> list[Path]:
    return sorted({path.parent for path in root.rglob("*.tf") if ".terraform" not in path.parts})


def nested(body: dict, name: str) -> list[dict]:
    """Return the nested blocks ``name`` of a body, including those built by ``dynamic``."""
    items = body.get(name, [])
    if isinstance(items, dict):
        items = [items]
    found = [item for item in items if isinstance(item, dict)]
    for dynamic in body.get("dynamic", []):
        content = dynamic.get(name)
        if content is None:
            continue
        for part in content.get("content", []) if isinstance(content, dict) else []:
            found.append(part)
    return found


def as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def references(value, type_name: str, name: str) -> bool:
    return f"{type_name}.{name}." in json.dumps(value) or f"{type_name}.{name}[" in json.dumps(
        value
    )


# --- rules: each returns the list of violations found in the given blocks ---


def open_ingress(blocks: list[Block]) -> list[str]:
    """Find security-group ingress open to the whole internet."""
    problems = []
    for block in blocks:
        if block.kind != "resource":
            continue
        cidrs: list[str] = []
        if block.type == "aws_security_group":
            for rule in nested(block.body, "ingress"):
                cidrs += as_list(rule.get("cidr_blocks")) + as_list(rule.get("ipv6_cidr_blocks"))
        elif block.type == "aws_security_group_rule" and block.body.get("type") == "ingress":
            cidrs += as_list(block.body.get("cidr_blocks"))
            cidrs += as_list(block.body.get("ipv6_cidr_blocks"))
        elif block.type == "aws_vpc_security_group_ingress_rule":
            cidrs += as_list(block.body.get("cidr_ipv4")) + as_list(block.body.get("cidr_ipv6"))
        if OPEN_CIDRS.intersection(cidrs):
            problems.append(
                f"{block.address} admits ingress from {sorted(OPEN_CIDRS & set(cidrs))}"
            )
    return problems


def _policy_statements(block: Block) -> Iterator[dict]:
    """Yield IAM statements as dicts with Effect, Action and Resource lists."""
    if block.kind == "data" and block.type == "aws_iam_policy_document":
        for statement in nested(block.body, "statement"):
            yield {
                "Effect": statement.get("effect", "Allow"),
                "Action": as_list(statement.get("actions")),
                "Resource": as_list(statement.get("resources")),
            }
        return
    if block.kind != "resource":
        return
    for key in ("policy", "assume_role_policy", "inline_policy"):
        raw = block.body.get(key)
        if not isinstance(raw, str) or raw.startswith("${"):
            continue
        try:
            document = json.loads(raw)
        except ValueError:
            continue
        for statement in as_list(document.get("Statement")):
            yield {
                "Effect": statement.get("Effect", "Allow"),
                "Action": as_list(statement.get("Action")),
                "Resource": as_list(statement.get("Resource")),
            }


def wildcard_admin(blocks: list[Block]) -> list[str]:
    """Find IAM statements that allow every action on every resource."""
    problems = []
    for block in blocks:
        for statement in _policy_statements(block):
            if statement["Effect"] != "Allow":
                continue
            if "*" in statement["Action"] and "*" in statement["Resource"]:
                problems.append(f"{block.address} allows action '*' on resource '*'")
    return problems


def unprotected_buckets(blocks: list[Block]) -> list[str]:
    """Find buckets of a module without SSE-KMS, versioning or a full public access block."""
    problems = []
    buckets = [b for b in blocks if b.kind == "resource" and b.type == "aws_s3_bucket"]
    for bucket in buckets:
        same_module = [b for b in blocks if b.path.parent == bucket.path.parent]

        def companions(type_name: str, bucket=bucket, same_module=same_module) -> list[Block]:
            return [
                b
                for b in same_module
                if b.type == type_name
                and references(b.body.get("bucket"), "aws_s3_bucket", bucket.name)
            ]

        encryption = companions("aws_s3_bucket_server_side_encryption_configuration")
        kms_rules = [
            default
            for config in encryption
            for rule in nested(config.body, "rule")
            for default in nested(rule, "apply_server_side_encryption_by_default")
            if default.get("sse_algorithm") == "aws:kms" and default.get("kms_master_key_id")
        ]
        if not kms_rules:
            problems.append(f"{bucket.address} has no SSE-KMS default encryption with a key")
        blocks_public = [
            pab
            for pab in companions("aws_s3_bucket_public_access_block")
            if all(
                pab.body.get(flag) is True
                for flag in (
                    "block_public_acls",
                    "block_public_policy",
                    "ignore_public_acls",
                    "restrict_public_buckets",
                )
            )
        ]
        if not blocks_public:
            problems.append(f"{bucket.address} does not block all public access")
        versioned = [
            v
            for v in companions("aws_s3_bucket_versioning")
            for config in nested(v.body, "versioning_configuration")
            if config.get("status") == "Enabled"
        ]
        if not versioned:
            problems.append(f"{bucket.address} has no versioning")
        if not companions("aws_s3_bucket_lifecycle_configuration"):
            problems.append(f"{bucket.address} has no lifecycle rules")
        if str(bucket.body.get("acl", "private")) != "private":
            problems.append(f"{bucket.address} sets acl {bucket.body['acl']!r}")
    for acl in (b for b in blocks if b.type == "aws_s3_bucket_acl"):
        if str(acl.body.get("acl", "private")).startswith("public"):
            problems.append(f"{acl.address} grants a public ACL")
    return problems


def unrotated_keys(blocks: list[Block]) -> list[str]:
    """Find KMS keys without automatic rotation."""
    return [
        f"{b.address} does not enable key rotation"
        for b in blocks
        if b.kind == "resource"
        and b.type == "aws_kms_key"
        and b.body.get("enable_key_rotation") is not True
    ]


def weak_trails(blocks: list[Block]) -> list[str]:
    """Find CloudTrail trails that are single-region, unencrypted or unvalidated."""
    problems = []
    for trail in (b for b in blocks if b.kind == "resource" and b.type == "aws_cloudtrail"):
        if trail.body.get("enable_log_file_validation") is not True:
            problems.append(f"{trail.address} does not validate log files")
        if trail.body.get("is_multi_region_trail") is not True:
            problems.append(f"{trail.address} is not multi-region")
        if not trail.body.get("kms_key_id"):
            problems.append(f"{trail.address} is not encrypted with a KMS key")
    return problems


def weak_streams(blocks: list[Block]) -> list[str]:
    """Find unencrypted SQS queues, queues without a DLQ, and MSK or Redis without TLS and auth."""
    problems = []
    resources = [b for b in blocks if b.kind == "resource"]
    queues = [b for b in resources if b.type == "aws_sqs_queue"]
    dead_letter_targets = {
        name
        for q in queues
        for name in re.findall(
            r"aws_sqs_queue\.(\w+)\.arn", json.dumps(q.body.get("redrive_policy"))
        )
    }
    for queue in queues:
        if not queue.body.get("kms_master_key_id"):
            problems.append(f"{queue.address} is not encrypted with a KMS key")
        if queue.name not in dead_letter_targets and not queue.body.get("redrive_policy"):
            problems.append(f"{queue.address} has no redrive policy to a dead-letter queue")
    for cluster in (b for b in resources if b.type == "aws_msk_cluster"):
        auth = nested(cluster.body, "client_authentication")
        if not auth or auth[0].get("unauthenticated") is not False:
            problems.append(f"{cluster.address} allows unauthenticated clients")
        if not any(s.get("iam") is True for a in auth for s in nested(a, "sasl")):
            problems.append(f"{cluster.address} does not use IAM authentication")
        transit = [
            t
            for e in nested(cluster.body, "encryption_info")
            for t in nested(e, "encryption_in_transit")
        ]
        if not transit or transit[0].get("client_broker") != "TLS":
            problems.append(f"{cluster.address} does not require TLS between clients and brokers")
        if not any(
            e.get("encryption_at_rest_kms_key_arn") for e in nested(cluster.body, "encryption_info")
        ):
            problems.append(f"{cluster.address} is not encrypted at rest with a KMS key")
    for group in (b for b in resources if b.type == "aws_elasticache_replication_group"):
        for flag in ("at_rest_encryption_enabled", "transit_encryption_enabled"):
            if group.body.get(flag) is not True:
                problems.append(f"{group.address} does not set {flag}")
        if not group.body.get("user_group_ids") and not group.body.get("auth_token"):
            problems.append(f"{group.address} has no authentication")
    return problems


RULES = {
    "open_ingress": open_ingress,
    "wildcard_admin": wildcard_admin,
    "unprotected_buckets": unprotected_buckets,
    "unrotated_keys": unrotated_keys,
    "weak_trails": weak_trails,
    "weak_streams": weak_streams,
}


@pytest.fixture(scope="module")
def infra_blocks() -> list[Block]:
    return blocks_in(INFRA)


def test_infra_files_parse():
    files = sorted(INFRA.rglob("*.tf"))
    assert len(files) >= 20
    for path in files:
        assert isinstance(parse_file(path), dict), path


@pytest.mark.parametrize("rule", sorted(RULES))
def test_infra_rule_passes(infra_blocks, rule):
    assert RULES[rule](infra_blocks) == []


def test_infra_has_every_module():
    names = {path.name for path in (INFRA / "modules").iterdir() if path.is_dir()}
    assert {"network", "security", "data", "stream", "cache", "ml", "tenants"} <= names
    for directory in module_dirs(INFRA / "modules"):
        files = {path.name for path in directory.glob("*.tf")}
        assert "variables.tf" in files, directory
        assert "outputs.tf" in files, directory


def test_infra_variables_have_descriptions():
    for path in sorted(INFRA.rglob("variables.tf")):
        for entry in parse_file(path).get("variable", []):
            for name, body in entry.items():
                assert body.get("description"), f"{path}: variable {name} has no description"
                assert body.get("type"), f"{path}: variable {name} has no type"


def test_infra_trail_exists(infra_blocks):
    trails = [b for b in infra_blocks if b.type == "aws_cloudtrail"]
    assert len(trails) == 1


def test_infra_endpoints_cover_s3_sagemaker():
    parsed = parse_file(INFRA / "modules" / "network" / "variables.tf")
    services = next(
        body["default"]
        for entry in parsed["variable"]
        for name, body in entry.items()
        if name == "interface_endpoint_services"
    )
    assert "sagemaker.api" in services
    assert "sagemaker.runtime" in services
    endpoints = blocks_in(INFRA / "modules" / "network")
    gateway = [
        b
        for b in endpoints
        if b.type == "aws_vpc_endpoint" and b.body.get("vpc_endpoint_type") == "Gateway"
    ]
    assert gateway
    assert ".s3" in gateway[0].body["service_name"]


def test_infra_ingress_ports_named(infra_blocks):
    """Admit only 443, 6379 and 9098 (MSK TLS with IAM), besides the Glue self-reference."""
    rules = [b for b in infra_blocks if b.type == "aws_vpc_security_group_ingress_rule"]
    assert rules
    for rule in rules:
        if "referenced_security_group_id" in rule.body and rule.body.get("from_port") == 0:
            assert rule.name == "workloads_self", rule.address
            continue
        assert rule.body.get("from_port") in (443, 6379, 9098), rule.address
        assert rule.body.get("from_port") == rule.body.get("to_port"), rule.address
        has_source = rule.body.get("referenced_security_group_id") or rule.body.get("cidr_ipv4")
        assert has_source, rule.address


def test_infra_roles_trust_conditioned(infra_blocks):
    """Condition every trust policy on the calling account or ARN.

    Service principals carry aws:SourceAccount or aws:SourceArn; role principals carry
    aws:PrincipalArn, because aws:SourceAccount is absent when a role assumes a role.
    """
    assume = [b for b in infra_blocks if b.type == "aws_iam_policy_document" and "assume" in b.name]
    assert len(assume) >= 7
    for block in assume:
        for statement in nested(block.body, "statement"):
            variables = {c.get("variable") for c in nested(statement, "condition")}
            assert variables & {"aws:SourceAccount", "aws:SourceArn", "aws:PrincipalArn"}, (
                block.address
            )


# --- each rule must fail on a bad fixture ---

BAD_FIXTURES = {
    "open_ingress": """
resource "aws_security_group" "bad" {
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
  from_port         = 443
  to_port           = 443
  cidr_ipv6         = "::/0"
}
resource "aws_security_group_rule" "bad" {
  type        = "ingress"
  from_port   = 22
  to_port     = 22
  protocol    = "tcp"
  cidr_blocks = ["10.0.0.0/8", "0.0.0.0/0"]
}
""",
    "wildcard_admin": """
data "aws_iam_policy_document" "bad" {
  statement {
    actions   = ["*"]
    resources = ["*"]
  }
}
data "aws_iam_policy_document" "bad_dynamic" {
  dynamic "statement" {
    for_each = [1]
    content {
      actions   = ["*"]
      resources = ["*"]
    }
  }
}
resource "aws_iam_policy" "bad" {
  policy = "{\\"Statement\\": [{\\"Effect\\": \\"Allow\\", \\"Action\\": \\"*\\", \\"Resource\\": \\"*\\"}]}"
}
""",
    "unprotected_buckets": """
resource "aws_s3_bucket" "bad" {
  bucket = "open"
}
resource "aws_s3_bucket_server_side_encryption_configuration" "bad" {
  bucket = aws_s3_bucket.bad.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}
resource "aws_s3_bucket_public_access_block" "bad" {
  bucket                  = aws_s3_bucket.bad.id
  block_public_acls       = true
  block_public_policy     = false
  ignore_public_acls      = true
  restrict_public_buckets = true
}
resource "aws_s3_bucket_acl" "bad" {
  bucket = aws_s3_bucket.bad.id
  acl    = "public-read"
}
""",
    "unrotated_keys": """
resource "aws_kms_key" "bad" {
  description = "never rotated"
}
resource "aws_kms_key" "bad_false" {
  enable_key_rotation = false
}
""",
    "weak_trails": """
resource "aws_cloudtrail" "bad" {
  name                       = "trail"
  s3_bucket_name             = "logs"
  enable_log_file_validation = false
}
""",
    "weak_streams": """
resource "aws_sqs_queue" "bad" {
  name = "plain"
}
resource "aws_msk_cluster" "bad" {
  cluster_name = "open"
  client_authentication {
    unauthenticated = true
  }
  encryption_info {
    encryption_in_transit {
      client_broker = "TLS_PLAINTEXT"
    }
  }
}
resource "aws_elasticache_replication_group" "bad" {
  replication_group_id       = "plain"
  at_rest_encryption_enabled = false
}
""",
}

EXPECTED_FINDINGS = {
    "open_ingress": 3,
    "wildcard_admin": 3,
    # SSE, public access, versioning, lifecycle, and the public ACL resource.
    "unprotected_buckets": 5,
    "unrotated_keys": 2,
    # Validation, multi-region, KMS.
    "weak_trails": 3,
    # SQS: KMS, DLQ; MSK: unauthenticated, IAM, TLS, at-rest key; Redis: 2 flags, auth.
    "weak_streams": 9,
}


@pytest.mark.parametrize("rule", sorted(BAD_FIXTURES))
def test_infra_rule_fails_bad(tmp_path, rule):
    module = tmp_path / "bad"
    module.mkdir()
    (module / "main.tf").write_text(BAD_FIXTURES[rule], encoding="utf-8")
    problems = RULES[rule](blocks_in(module))
    assert len(problems) == EXPECTED_FINDINGS[rule], problems


def test_bucket_rule_passes_good(tmp_path):
    module = tmp_path / "good"
    module.mkdir()
    source = (INFRA / "modules" / "bucket" / "main.tf").read_text(encoding="utf-8")
    (module / "main.tf").write_text(source, encoding="utf-8")
    assert unprotected_buckets(blocks_in(module)) == []


def test_bucket_rule_needs_same_bucket(tmp_path):
    """Protection of one bucket does not count for another bucket in the module."""
    module = tmp_path / "two"
    module.mkdir()
    source = (INFRA / "modules" / "bucket" / "main.tf").read_text(encoding="utf-8")
    extra = 'resource "aws_s3_bucket" "other" {\n  bucket = "other"\n}\n'
    (module / "main.tf").write_text(source + extra, encoding="utf-8")
    problems = unprotected_buckets(blocks_in(module))
    assert len(problems) == 4
    assert all("aws_s3_bucket.other" in problem for problem in problems)
