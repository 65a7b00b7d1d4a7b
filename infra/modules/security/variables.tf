variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
}

variable "tags" {
  description = "Tags of every resource, on top of the provider's default tags."
  type        = map(string)
  default     = {}
}

variable "bucket_names" {
  description = "Lake bucket names by zone: raw, prepared, models, forecasts, quarantine."
  type        = map(string)

  validation {
    condition     = alltrue([for zone in ["raw", "prepared", "models", "forecasts", "quarantine"] : contains(keys(var.bucket_names), zone)])
    error_message = "The bucket_names map needs the keys raw, prepared, models, forecasts and quarantine."
  }
}

variable "trail_bucket_name" {
  description = "Name of the dedicated CloudTrail bucket."
  type        = string
}

variable "trail_retention_days" {
  description = "Days CloudTrail log files are kept."
  type        = number
  default     = 2555
}

variable "audited_bucket_names" {
  description = "Buckets whose object-level (data) events CloudTrail records."
  type        = list(string)
  default     = []
}

variable "trusted_services" {
  description = "Service principals allowed to assume each service role (gateway, lake_writer, airflow)."
  type        = map(list(string))
  default = {
    gateway     = ["ecs-tasks.amazonaws.com"]
    lake_writer = ["ecs-tasks.amazonaws.com"]
    airflow     = ["airflow.amazonaws.com", "airflow-env.amazonaws.com"]
  }
}

variable "msk_cluster_name" {
  description = "Name of the MSK cluster, for the kafka-cluster permissions."
  type        = string
}

variable "sqs_queue_name" {
  description = "Name of the SQS fallback queue that the lake writer drains."
  type        = string
}

variable "cache_replication_group_id" {
  description = "ElastiCache replication group id the gateway connects to."
  type        = string
}

variable "cache_user_id" {
  description = "ElastiCache RBAC user id of the application."
  type        = string
}

variable "passable_role_arns" {
  description = "Roles Airflow may pass to Glue and SageMaker (the ml module's roles)."
  type        = list(string)
  default     = []
}

variable "tf_state_bucket_name" {
  description = "Existing bucket holding Terraform state; batch stacks use keys under saodf/batch/."
  type        = string
}
