# The long-lived platform: network, keys and audit, lake, stream, cache and ML services.
# Per-run resources are in ../batch, which the DAG applies and destroys.

data "aws_caller_identity" "current" {}

locals {
  buckets = {
    for zone in ["raw", "prepared", "models", "forecasts", "quarantine"] :
    zone => "${var.name_prefix}-${zone}"
  }
  msk_cluster_name = "${var.name_prefix}-telemetry"
  cache_group_id   = "${var.name_prefix}-forecasts"
  cache_user_id    = "${var.name_prefix}-app"
  tags             = { "saodf:environment" = var.environment }
}

module "security" {
  source = "../modules/security"

  name_prefix                = var.name_prefix
  tags                       = local.tags
  bucket_names               = local.buckets
  trail_bucket_name          = "${var.name_prefix}-cloudtrail"
  audited_bucket_names       = values(local.buckets)
  msk_cluster_name           = local.msk_cluster_name
  sqs_queue_name             = var.sqs_queue_name
  cache_replication_group_id = local.cache_group_id
  cache_user_id              = local.cache_user_id
  passable_role_arns         = [module.ml.sagemaker_role_arn, module.ml.glue_role_arn]
  tf_state_bucket_name       = var.tf_state_bucket_name
}

module "network" {
  source = "../modules/network"

  name_prefix           = var.name_prefix
  tags                  = local.tags
  account_id            = data.aws_caller_identity.current.account_id
  vpc_cidr              = var.vpc_cidr
  availability_zones    = var.availability_zones
  single_nat_gateway    = var.single_nat_gateway
  gateway_ingress_cidrs = var.gateway_ingress_cidrs
  logs_kms_key_arn      = module.security.kms_key_arns["logs"]
}

module "data" {
  source = "../modules/data"

  name_prefix = var.name_prefix
  tags        = local.tags
  kms_key_arn = module.security.kms_key_arns["data"]
}

module "stream" {
  source = "../modules/stream"

  name_prefix        = var.name_prefix
  tags               = local.tags
  cluster_name       = local.msk_cluster_name
  broker_count       = length(var.availability_zones)
  private_subnet_ids = module.network.private_subnet_ids
  security_group_id  = module.network.security_group_ids["msk"]
  stream_kms_key_arn = module.security.kms_key_arns["stream"]
  logs_kms_key_arn   = module.security.kms_key_arns["logs"]
  queue_name         = var.sqs_queue_name
  dlq_name           = "${var.sqs_queue_name}-dlq"
}

module "cache" {
  source = "../modules/cache"

  name_prefix            = var.name_prefix
  tags                   = local.tags
  replication_group_id   = local.cache_group_id
  private_subnet_ids     = module.network.private_subnet_ids
  security_group_id      = module.network.security_group_ids["redis"]
  cache_kms_key_arn      = module.security.kms_key_arns["cache"]
  logs_kms_key_arn       = module.security.kms_key_arns["logs"]
  app_user_id            = local.cache_user_id
  app_password_secret_id = var.redis_password_secret_id
  tenant_user_ids        = module.tenants.cache_user_ids
}

module "ml" {
  source = "../modules/ml"

  name_prefix       = var.name_prefix
  tags              = local.tags
  bucket_names      = module.data.bucket_names
  data_kms_key_arn  = module.security.kms_key_arns["data"]
  logs_kms_key_arn  = module.security.kms_key_arns["logs"]
  vpc_id            = module.network.vpc_id
  private_subnet_id = module.network.private_subnet_ids[0]
  availability_zone = var.availability_zones[0]
  security_group_id = module.network.security_group_ids["workloads"]
  glue_script_path  = "${path.root}/../../etl/glue_job.py"
}

module "tenants" {
  source = "../modules/tenants"

  name_prefix                = var.name_prefix
  tags                       = local.tags
  tenants                    = var.tenants
  account_id                 = data.aws_caller_identity.current.account_id
  bucket_names               = module.data.bucket_names
  data_kms_key_arn           = module.security.kms_key_arns["data"]
  msk_cluster_name           = local.msk_cluster_name
  cache_replication_group_id = local.cache_group_id
  assuming_role_arns         = values(module.security.role_arns)
}
