# One IAM role per tenant, limited to that tenant's slice of the shared resources. The
# prefixes follow saodf.tenants.tenant_layout:
#
# - lake objects under tenants/<tenant>/ in every lake bucket;
# - MSK topics and consumer groups named t.<tenant>.*;
# - the ElastiCache user <name_prefix>-t-<tenant>, limited to keys saodf:t:<tenant>:*;
# - SageMaker models, jobs and model package groups named <name_prefix>-<tenant>-*, and
#   only while their tenant tag equals the role's tenant tag.
#
# The service roles assume a tenant role for one tenant's work. The trust policy does not
# allow sts:TagSession, because a session tag would replace the role's tenant tag in
# aws:PrincipalTag/tenant.

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  tenants    = toset(var.tenants)
  bucket_arn = { for zone, name in var.bucket_names : zone => "arn:${local.partition}:s3:::${name}" }
  # Zones a tenant reads and writes; the models zone is read-only for tenants.
  writable_zones = ["raw", "prepared", "forecasts", "quarantine"]
  msk_prefix     = "arn:${local.partition}:kafka:${local.region}:${var.account_id}"
  cache_prefix   = "arn:${local.partition}:elasticache:${local.region}:${var.account_id}"
  sagemaker      = "arn:${local.partition}:sagemaker:${local.region}:${var.account_id}"
  # The commands of saodf.tenants.CACHE_COMMANDS; tests check that both lists agree.
  cache_commands = [
    "ping", "hgetall", "evalsha", "script|load", "get", "incr", "incrby", "zincrby", "expire",
    "multi", "exec", "set", "del", "hset", "hmget",
  ]
  cache_user_id = { for name in local.tenants : name => "${var.name_prefix}-t-${name}" }
}

data "aws_iam_policy_document" "tenant_assume" {
  for_each = local.tenants

  statement {
    sid     = "AssumeForOneTenant"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = var.assuming_role_arns
    }

    # aws:SourceAccount is set only when a service principal calls, so this trust policy,
    # whose principals are roles, names them in aws:PrincipalArn instead.
    condition {
      test     = "StringEquals"
      variable = "aws:PrincipalAccount"
      values   = [var.account_id]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:PrincipalArn"
      values   = var.assuming_role_arns
    }
  }
}

data "aws_iam_policy_document" "tenant" {
  for_each = local.tenants

  statement {
    sid       = "ReadWriteTenantLake"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [for zone in local.writable_zones : "${local.bucket_arn[zone]}/tenants/${each.key}/*"]

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["true"]
    }
  }

  statement {
    sid       = "ReadTenantModels"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn["models"]}/tenants/${each.key}/*"]

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["true"]
    }
  }

  # ListBucket is a bucket-level action, so the prefix condition is what keeps a tenant
  # from listing the others' folders.
  statement {
    sid       = "ListTenantPrefix"
    actions   = ["s3:ListBucket"]
    resources = values(local.bucket_arn)

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["tenants/${each.key}/", "tenants/${each.key}/*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["true"]
    }
  }

  statement {
    sid       = "UseLakeKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.data_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "ConnectToCluster"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = ["${local.msk_prefix}:cluster/${var.msk_cluster_name}/*"]
  }

  # MSK topic ARNs are topic/CLUSTER/CLUSTER_UUID/TOPIC.
  statement {
    sid       = "UseTenantTopics"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData", "kafka-cluster:WriteData"]
    resources = ["${local.msk_prefix}:topic/${var.msk_cluster_name}/*/t.${each.key}.*"]
  }

  statement {
    sid       = "UseTenantConsumerGroups"
    actions   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
    resources = ["${local.msk_prefix}:group/${var.msk_cluster_name}/*/t.${each.key}.*"]
  }

  statement {
    sid     = "ConnectAsTenantCacheUser"
    actions = ["elasticache:Connect"]
    resources = [
      "${local.cache_prefix}:replicationgroup:${var.cache_replication_group_id}",
      "${local.cache_prefix}:user:${local.cache_user_id[each.key]}",
    ]
  }

  statement {
    sid = "CreateTenantSageMakerResources"
    actions = [
      "sagemaker:CreateModel",
      "sagemaker:CreateTransformJob",
      "sagemaker:CreateTrainingJob",
      "sagemaker:CreateModelPackageGroup",
      "sagemaker:CreateModelPackage",
    ]
    resources = [
      "${local.sagemaker}:model/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:transform-job/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:training-job/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:model-package-group/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:model-package/${var.name_prefix}-${each.key}-*",
    ]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/tenant"
      values   = [each.key]
    }
  }

  statement {
    sid = "UseTenantSageMakerResources"
    actions = [
      "sagemaker:DescribeModel",
      "sagemaker:DeleteModel",
      "sagemaker:DescribeTransformJob",
      "sagemaker:StopTransformJob",
      "sagemaker:DescribeTrainingJob",
      "sagemaker:StopTrainingJob",
      "sagemaker:DescribeModelPackageGroup",
      "sagemaker:DescribeModelPackage",
      "sagemaker:ListModelPackages",
    ]
    resources = [
      "${local.sagemaker}:model/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:transform-job/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:training-job/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:model-package-group/${var.name_prefix}-${each.key}-*",
      "${local.sagemaker}:model-package/${var.name_prefix}-${each.key}-*",
    ]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/tenant"
      values   = ["$${aws:PrincipalTag/tenant}"]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = ["*"]

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_iam_role" "tenant" {
  for_each = local.tenants

  name                 = "${var.name_prefix}-tenant-${each.key}"
  assume_role_policy   = data.aws_iam_policy_document.tenant_assume[each.key].json
  max_session_duration = 3600
  tags                 = merge(var.tags, { tenant = each.key })
}

resource "aws_iam_role_policy" "tenant" {
  for_each = local.tenants

  name   = "tenant-${each.key}"
  role   = aws_iam_role.tenant[each.key].id
  policy = data.aws_iam_policy_document.tenant[each.key].json
}

# IAM authentication needs TLS (the cache requires it) and a user id equal to the user name.
resource "aws_elasticache_user" "tenant" {
  for_each = local.tenants

  user_id       = local.cache_user_id[each.key]
  user_name     = local.cache_user_id[each.key]
  engine        = "REDIS"
  access_string = join(" ", concat(["on", "~saodf:t:${each.key}:*", "resetchannels", "&saodf:t:${each.key}:*", "-@all"], [for command in local.cache_commands : "+${command}"]))

  authentication_mode {
    type = "iam"
  }

  tags = merge(var.tags, { tenant = each.key })
}
