output "vpc_id" {
  description = "VPC id."
  value       = module.network.vpc_id
}

output "bucket_names" {
  description = "Lake bucket names by zone."
  value       = module.data.bucket_names
}

output "kms_key_arns" {
  description = "KMS key ARNs by domain."
  value       = module.security.kms_key_arns
}

output "role_arns" {
  description = "Service role ARNs: gateway, lake_writer, airflow, sagemaker, glue."
  value = merge(module.security.role_arns, {
    sagemaker = module.ml.sagemaker_role_arn
    glue      = module.ml.glue_role_arn
  })
}

output "msk_bootstrap_brokers" {
  description = "MSK bootstrap brokers (TLS, IAM authentication)."
  value       = module.stream.bootstrap_brokers_iam
}

output "sqs_queue_url" {
  description = "URL of the SQS fallback queue."
  value       = module.stream.queue_url
}

output "redis_endpoint" {
  description = "Primary endpoint of the Redis replication group (TLS on 6379)."
  value       = module.cache.primary_endpoint
}

output "glue_job_name" {
  description = "Name of the preprocessing Glue job."
  value       = module.ml.glue_job_name
}

# Environment of the Airflow workers, so that the DAG's batch stack joins this platform.
output "batch_stack_env" {
  description = "Variables for the Airflow workers: TF_VAR_* inputs of the batch stack and SAODF_* settings."
  value = {
    SAODF_TARGET             = "aws"
    SAODF_AWS_REGION         = var.region
    SAODF_LAKE_URL           = "s3://${module.data.bucket_names["raw"]}"
    SAODF_TF_NAME_PREFIX     = var.name_prefix
    SAODF_TF_STATE_BUCKET    = var.tf_state_bucket_name
    TF_VAR_kms_key_arn       = module.security.kms_key_arns["data"]
    TF_VAR_vpc_id            = module.network.vpc_id
    TF_VAR_vpc_cidr          = module.network.vpc_cidr
    TF_VAR_s3_prefix_list_id = module.network.s3_prefix_list_id
    TF_VAR_lake_bucket_arns = jsonencode({
      prepared  = module.data.bucket_arns["prepared"]
      models    = module.data.bucket_arns["models"]
      forecasts = module.data.bucket_arns["forecasts"]
    })
  }
}

output "tenant_role_arns" {
  description = "IAM role ARNs of the tenants by tenant name."
  value       = module.tenants.role_arns
}
