# The ML services: the SageMaker execution role (DeepAR training on managed Spot, batch
# transform), the Glue job role, and the Glue job that runs etl/glue_job.py.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  bucket_arn = { for zone, name in var.bucket_names : zone => "arn:${local.partition}:s3:::${name}" }
  s3_via     = "s3.${local.region}.amazonaws.com"
  script_key = "glue/glue_job.py"
}

data "aws_iam_policy_document" "sagemaker_assume" {
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

resource "aws_iam_role" "sagemaker" {
  name                 = "${var.name_prefix}-sagemaker-execution"
  assume_role_policy   = data.aws_iam_policy_document.sagemaker_assume.json
  max_session_duration = 3600
  tags                 = var.tags
}

data "aws_iam_policy_document" "sagemaker" {
  statement {
    sid       = "ReadPreparedSeries"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn["prepared"]}/*"]
  }

  statement {
    sid       = "WriteModelsAndForecasts"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${local.bucket_arn["models"]}/*", "${local.bucket_arn["forecasts"]}/*"]
  }

  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn["prepared"], local.bucket_arn["models"], local.bucket_arn["forecasts"]]
  }

  statement {
    sid       = "UseDataKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.data_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_via]
    }
  }

  statement {
    sid       = "PullAlgorithmImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = ["arn:${local.partition}:ecr:${local.region}:*:repository/forecasting-deepar"]
  }

  # GetAuthorizationToken has no resource-level permissions; AWS requires "*".
  statement {
    sid       = "AuthenticateToEcr"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "WriteJobLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/sagemaker/*"]
  }

  statement {
    sid       = "PublishJobMetrics"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["/aws/sagemaker/TrainingJobs", "/aws/sagemaker/TransformJobs"]
    }
  }

  # Jobs in VPC mode create their network interfaces in the private subnets only.
  statement {
    sid       = "CreateJobInterfaces"
    actions   = ["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:Vpc"
      values   = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:vpc/${var.vpc_id}"]
    }
  }

  statement {
    sid       = "DescribeNetwork"
    actions   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "sagemaker" {
  name   = "sagemaker-jobs"
  role   = aws_iam_role.sagemaker.id
  policy = data.aws_iam_policy_document.sagemaker.json
}

data "aws_iam_policy_document" "glue_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["glue.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "glue" {
  name                 = "${var.name_prefix}-glue-preprocess"
  assume_role_policy   = data.aws_iam_policy_document.glue_assume.json
  max_session_duration = 3600
  tags                 = var.tags
}

data "aws_iam_policy_document" "glue" {
  statement {
    sid       = "ReadRawAndScript"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arn["raw"]}/*", "${local.bucket_arn["models"]}/glue/*"]
  }

  statement {
    sid       = "WritePreparedAndQuarantine"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.bucket_arn["prepared"]}/*", "${local.bucket_arn["quarantine"]}/*", "${local.bucket_arn["models"]}/glue-temp/*"]
  }

  statement {
    sid       = "ListLake"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn["raw"], local.bucket_arn["prepared"], local.bucket_arn["quarantine"], local.bucket_arn["models"]]
  }

  statement {
    sid       = "UseDataKeyThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.data_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_via]
    }
  }

  statement {
    sid       = "EncryptJobLogs"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [var.logs_kms_key_arn]
  }

  statement {
    sid       = "WriteJobLogs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:AssociateKmsKey"]
    resources = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws-glue/*"]
  }

  statement {
    sid       = "ReadNetworkForConnection"
    actions   = ["ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcEndpoints", "ec2:DescribeRouteTables", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs"]
    resources = ["*"]
  }

  statement {
    sid       = "CreateJobInterfaces"
    actions   = ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:CreateTags", "ec2:DeleteTags"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:Vpc"
      values   = ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:vpc/${var.vpc_id}"]
    }
  }
}

resource "aws_iam_role_policy" "glue" {
  name   = "glue-preprocess"
  role   = aws_iam_role.glue.id
  policy = data.aws_iam_policy_document.glue.json
}

resource "aws_s3_object" "glue_script" {
  bucket                 = var.bucket_names["models"]
  key                    = local.script_key
  source                 = var.glue_script_path
  source_hash            = filemd5(var.glue_script_path)
  server_side_encryption = "aws:kms"
  kms_key_id             = var.data_kms_key_arn
  tags                   = var.tags
}

resource "aws_glue_security_configuration" "this" {
  name = "${var.name_prefix}-glue"

  encryption_configuration {
    cloudwatch_encryption {
      cloudwatch_encryption_mode = "SSE-KMS"
      kms_key_arn                = var.logs_kms_key_arn
    }

    job_bookmarks_encryption {
      job_bookmarks_encryption_mode = "CSE-KMS"
      kms_key_arn                   = var.logs_kms_key_arn
    }

    s3_encryption {
      s3_encryption_mode = "SSE-KMS"
      kms_key_arn        = var.data_kms_key_arn
    }
  }
}

resource "aws_glue_connection" "vpc" {
  name            = "${var.name_prefix}-vpc"
  connection_type = "NETWORK"

  physical_connection_requirements {
    availability_zone      = var.availability_zone
    subnet_id              = var.private_subnet_id
    security_group_id_list = [var.security_group_id]
  }

  tags = var.tags
}

resource "aws_glue_job" "preprocess" {
  name                   = "${var.name_prefix}-preprocess"
  description            = "Outliers, imputation, resampling and DeepAR JSON Lines for one pipeline run"
  role_arn               = aws_iam_role.glue.arn
  glue_version           = "4.0"
  worker_type            = "G.1X"
  number_of_workers      = var.glue_workers
  timeout                = 60
  max_retries            = 1
  security_configuration = aws_glue_security_configuration.this.name
  connections            = [aws_glue_connection.vpc.name]
  tags                   = var.tags

  command {
    name            = "glueetl"
    script_location = "s3://${var.bucket_names["models"]}/${local.script_key}"
    python_version  = "3"
  }

  # raw_url and output_url are passed per run by the DAG (GlueJobOperator script_args).
  default_arguments = {
    "--job-language"                     = "python"
    "--enable-continuous-cloudwatch-log" = "true"
    "--enable-metrics"                   = "true"
    "--TempDir"                          = "s3://${var.bucket_names["models"]}/glue-temp/"
    "--additional-python-modules"        = var.glue_python_modules
  }

  execution_property {
    max_concurrent_runs = 2
  }
}
