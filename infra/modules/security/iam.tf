# One role per service, each limited to the resources it uses. Every trust policy names
# the account (aws:SourceAccount) and every data permission is scoped by ARN, prefix or a
# condition. The Glue and SageMaker roles are in the ml module.

locals {
  bucket_arn = { for name, bucket in var.bucket_names : name => "arn:${local.partition}:s3:::${bucket}" }
  msk_prefix = "arn:${local.partition}:kafka:${local.region}:${local.account_id}"
  # MSK IAM resource ARNs: cluster/NAME/UUID, topic/NAME/UUID/TOPIC, group/NAME/UUID/GROUP.
  msk_cluster    = "${local.msk_prefix}:cluster/${var.msk_cluster_name}/*"
  msk_topic      = "${local.msk_prefix}:topic/${var.msk_cluster_name}/*"
  msk_group      = "${local.msk_prefix}:group/${var.msk_cluster_name}/*"
  sqs_arn        = "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${var.sqs_queue_name}"
  s3_via         = "s3.${local.region}.amazonaws.com"
  data_key_arn   = aws_kms_key.this["data"].arn
  stream_key_arn = aws_kms_key.this["stream"].arn
  role_names = {
    gateway     = "${var.name_prefix}-gateway-actions"
    lake_writer = "${var.name_prefix}-lake-writer"
    airflow     = "${var.name_prefix}-airflow"
  }
}

data "aws_iam_policy_document" "assume" {
  for_each = local.role_names

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = var.trusted_services[each.key]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "service" {
  for_each = local.role_names

  name                 = each.value
  assume_role_policy   = data.aws_iam_policy_document.assume[each.key].json
  max_session_duration = 3600
  tags                 = merge(var.tags, { "saodf:service" = each.key })
}

# Gateway and actions: read models, connect to Redis as the saodf user, read telemetry
# and publish anomalies.
data "aws_iam_policy_document" "gateway" {
  statement {
    sid       = "ReadModels"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn["models"]}/*"]
  }

  statement {
    sid       = "DecryptThroughS3"
    actions   = ["kms:Decrypt"]
    resources = [local.data_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_via]
    }
  }

  statement {
    sid     = "ConnectToCache"
    actions = ["elasticache:Connect"]
    resources = [
      "arn:${local.partition}:elasticache:${local.region}:${local.account_id}:replicationgroup:${var.cache_replication_group_id}",
      "arn:${local.partition}:elasticache:${local.region}:${local.account_id}:user:${var.cache_user_id}",
    ]
  }

  statement {
    sid       = "ConnectToCluster"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [local.msk_cluster]
  }

  statement {
    sid       = "ReadTelemetry"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = ["${local.msk_topic}/telemetry.raw"]
  }

  statement {
    sid       = "PublishAnomalies"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
    resources = ["${local.msk_topic}/telemetry.anomalies"]
  }

  statement {
    sid       = "UseConsumerGroup"
    actions   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
    resources = ["${local.msk_group}/saodf-anomaly-*"]
  }
}

# Lake writer: consume telemetry.raw, write the raw zone, emit window events, and drain
# the SQS fallback queue.
data "aws_iam_policy_document" "lake_writer" {
  statement {
    sid       = "ConnectToCluster"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"]
    resources = [local.msk_cluster]
  }

  statement {
    sid       = "ReadTelemetry"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = ["${local.msk_topic}/telemetry.raw"]
  }

  statement {
    sid     = "WriteWindowsAndDeadLetters"
    actions = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
    resources = [
      "${local.msk_topic}/telemetry.raw",
      "${local.msk_topic}/telemetry.windows",
      "${local.msk_topic}/telemetry.dlq",
    ]
  }

  statement {
    sid       = "UseConsumerGroup"
    actions   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
    resources = ["${local.msk_group}/saodf-lake-writer*"]
  }

  statement {
    sid       = "WriteRawZone"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${local.bucket_arn["raw"]}/*", "${local.bucket_arn["quarantine"]}/*"]
  }

  statement {
    sid       = "ListRawZone"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn["raw"]]
  }

  statement {
    sid       = "EncryptThroughS3"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [local.data_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_via]
    }
  }

  statement {
    sid       = "DrainFallbackQueue"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
    resources = [local.sqs_arn]
  }

  statement {
    sid       = "DecryptQueueMessages"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.stream_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com"]
    }
  }
}

# Airflow: run the Glue job and SageMaker jobs, pass their roles, read and write the
# lake, and apply and destroy the per-run batch stacks with their Terraform state.
data "aws_iam_policy_document" "airflow" {
  statement {
    sid       = "RunGlueJob"
    actions   = ["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun", "glue:GetJob"]
    resources = ["arn:${local.partition}:glue:${local.region}:${local.account_id}:job/${var.name_prefix}-*"]
  }

  statement {
    sid = "RunSageMakerJobs"
    actions = [
      "sagemaker:CreateTrainingJob",
      "sagemaker:DescribeTrainingJob",
      "sagemaker:StopTrainingJob",
      "sagemaker:CreateTransformJob",
      "sagemaker:DescribeTransformJob",
      "sagemaker:StopTransformJob",
      "sagemaker:CreateModel",
      "sagemaker:DescribeModel",
      "sagemaker:DeleteModel",
      "sagemaker:AddTags",
    ]
    resources = [
      "arn:${local.partition}:sagemaker:${local.region}:${local.account_id}:training-job/${var.name_prefix}-*",
      "arn:${local.partition}:sagemaker:${local.region}:${local.account_id}:transform-job/${var.name_prefix}-*",
      "arn:${local.partition}:sagemaker:${local.region}:${local.account_id}:model/${var.name_prefix}-*",
    ]
  }

  statement {
    sid       = "PassJobRoles"
    actions   = ["iam:PassRole"]
    resources = concat(var.passable_role_arns, ["arn:${local.partition}:iam::${local.account_id}:role/${var.name_prefix}-batch-*"])

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["glue.amazonaws.com", "sagemaker.amazonaws.com"]
    }
  }

  statement {
    sid       = "ReadWriteLake"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [for arn in values(local.bucket_arn) : "${arn}/*"]
  }

  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = values(local.bucket_arn)
  }

  statement {
    sid       = "UseDataKeyThroughS3"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [local.data_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_via]
    }
  }

  statement {
    sid       = "ManageBatchBuckets"
    actions   = ["s3:*"]
    resources = ["arn:${local.partition}:s3:::${var.name_prefix}-batch-*"]
  }

  statement {
    sid = "ManageBatchRoles"
    actions = [
      "iam:CreateRole",
      "iam:DeleteRole",
      "iam:GetRole",
      "iam:TagRole",
      "iam:UntagRole",
      "iam:PutRolePolicy",
      "iam:GetRolePolicy",
      "iam:DeleteRolePolicy",
      "iam:ListRolePolicies",
      "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole",
    ]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/${var.name_prefix}-batch-*"]
  }

  statement {
    sid       = "CreateBatchSecurityGroups"
    actions   = ["ec2:CreateSecurityGroup", "ec2:CreateTags"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/saodf:stack"
      values   = ["batch"]
    }
  }

  statement {
    sid = "ChangeBatchSecurityGroups"
    actions = [
      "ec2:DeleteSecurityGroup",
      "ec2:AuthorizeSecurityGroupEgress",
      "ec2:RevokeSecurityGroupEgress",
      "ec2:RevokeSecurityGroupIngress",
    ]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:security-group/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/saodf:stack"
      values   = ["batch"]
    }
  }

  statement {
    sid       = "DescribeNetwork"
    actions   = ["ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeVpcs", "ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }

  statement {
    sid       = "BatchStackState"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:${local.partition}:s3:::${var.tf_state_bucket_name}/saodf/batch/*"]
  }

  statement {
    sid       = "ListBatchStackState"
    actions   = ["s3:ListBucket"]
    resources = ["arn:${local.partition}:s3:::${var.tf_state_bucket_name}"]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["saodf/batch/*"]
    }
  }
}

locals {
  service_policies = {
    gateway     = data.aws_iam_policy_document.gateway.json
    lake_writer = data.aws_iam_policy_document.lake_writer.json
    airflow     = data.aws_iam_policy_document.airflow.json
  }
}

resource "aws_iam_role_policy" "service" {
  for_each = local.role_names

  name   = "${each.key}-access"
  role   = aws_iam_role.service[each.key].id
  policy = local.service_policies[each.key]
}
