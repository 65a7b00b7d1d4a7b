# Per-run batch stack: what one pipeline run creates and its teardown task destroys.
# Everything here is named after the run, so two runs never share a resource, and
# nothing here outlives the run: the scratch bucket also expires its objects in case
# teardown never ran.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name        = "${var.name_prefix}-batch-${var.run_slug}"
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  kms_key_arn = var.kms_key_arn != "" ? var.kms_key_arn : aws_kms_key.run[0].arn
  lake_read   = compact([var.lake_bucket_arns.prepared])
  lake_write  = compact([var.lake_bucket_arns.models, var.lake_bucket_arns.forecasts])

  tags = {
    "saodf:stack"   = "batch"
    "saodf:run_key" = var.run_key
    "managed-by"    = "terraform"
  }
}

# Used only when no platform key is given (local emulation): AWS keeps a deleted key
# pending for at least 7 days, so real deployments pass the platform's data key.
resource "aws_kms_key" "run" {
  count = var.kms_key_arn == "" ? 1 : 0

  description             = "SAODF batch run ${var.run_key}"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.run_key.json
}

data "aws_iam_policy_document" "run_key" {
  #checkov:skip=CKV_AWS_109:Key policy, "*" is this key only
  #checkov:skip=CKV_AWS_111:Key policy, "*" is this key only
  #checkov:skip=CKV_AWS_356:Key policy, "*" is this key only
  statement {
    sid       = "AccountAdministersKey"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
}

resource "aws_s3_bucket" "scratch" {
  #checkov:skip=CKV2_AWS_62:Scratch data of one run; nothing consumes its events
  #checkov:skip=CKV_AWS_144:Scratch data of one run, destroyed with the run
  #checkov:skip=CKV_AWS_18:Scratch data of one run; CloudTrail data events audit access
  bucket        = local.name
  force_destroy = var.force_destroy_scratch
}

resource "aws_s3_bucket_ownership_controls" "scratch" {
  bucket = aws_s3_bucket.scratch.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "scratch" {
  bucket                  = aws_s3_bucket.scratch.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "scratch" {
  bucket = aws_s3_bucket.scratch.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = local.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "scratch" {
  bucket = aws_s3_bucket.scratch.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "scratch" {
  bucket = aws_s3_bucket.scratch.id

  rule {
    id     = "expire-scratch"
    status = "Enabled"

    filter {}

    expiration {
      days = var.scratch_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.scratch]
}

data "aws_iam_policy_document" "scratch_bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.scratch.arn, "${aws_s3_bucket.scratch.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "scratch" {
  bucket = aws_s3_bucket.scratch.id
  policy = data.aws_iam_policy_document.scratch_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.scratch]
}

# Role of the run's SageMaker training and transform jobs: the scratch bucket, the lake
# prefixes it needs, and the key through S3 only.
data "aws_iam_policy_document" "job_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "job" {
  name                 = local.name
  description          = "SageMaker jobs of batch run ${var.run_key}"
  assume_role_policy   = data.aws_iam_policy_document.job_assume.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "job" {
  statement {
    sid       = "ScratchObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.scratch.arn}/*"]
  }

  statement {
    sid       = "ScratchList"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.scratch.arn]
  }

  dynamic "statement" {
    for_each = length(local.lake_read) > 0 ? [1] : []

    content {
      sid       = "ReadPreparedSeries"
      actions   = ["s3:GetObject"]
      resources = [for arn in local.lake_read : "${arn}/prepared/${var.run_key}/*"]
    }
  }

  dynamic "statement" {
    for_each = length(local.lake_write) > 0 ? [1] : []

    content {
      sid       = "WriteModelsAndForecasts"
      actions   = ["s3:PutObject"]
      resources = [for arn in local.lake_write : "${arn}/*/${var.run_key}/*"]
    }
  }

  statement {
    sid       = "UseKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "WriteJobLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:CreateLogGroup"]
    resources = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/sagemaker/*"]
  }
}

resource "aws_iam_role_policy" "job" {
  name   = "batch-run-access"
  role   = aws_iam_role.job.id
  policy = data.aws_iam_policy_document.job.json
}

# Jobs in the VPC get no ingress and reach only HTTPS inside the VPC (interface
# endpoints) and S3 through its gateway endpoint.
resource "aws_security_group" "jobs" {
  #checkov:skip=CKV2_AWS_5:Attached to the SageMaker jobs that the DAG starts
  count = var.vpc_id == "" ? 0 : 1

  name        = local.name
  description = "SageMaker jobs of batch run ${var.run_key}: egress to HTTPS endpoints only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_egress_rule" "jobs_https_vpc" {
  count = var.vpc_id == "" ? 0 : 1

  security_group_id = aws_security_group.jobs[0].id
  description       = "HTTPS to VPC interface endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "jobs_https_s3" {
  count = var.vpc_id != "" && var.s3_prefix_list_id != "" ? 1 : 0

  security_group_id = aws_security_group.jobs[0].id
  description       = "HTTPS to S3 through the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id
}
