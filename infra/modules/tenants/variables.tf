variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
}

variable "tags" {
  description = "Tags of every resource, on top of the provider's default tags."
  type        = map(string)
  default     = {}
}

variable "tenants" {
  description = "Tenant names, as `saodf tenant list` prints them: 2-32 characters of a-z 0-9 -, starting with a letter and not ending with -."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for name in var.tenants : can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", name))])
    error_message = "Each tenant name must be 2-32 characters of a-z 0-9 -, starting with a letter and not ending with -."
  }
}

variable "account_id" {
  description = "AWS account id of the platform; it goes into every resource ARN of the tenant policies."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "The account_id must be 12 digits."
  }
}

variable "bucket_names" {
  description = "Lake bucket names by zone: raw, prepared, models, forecasts, quarantine."
  type        = map(string)

  validation {
    condition     = alltrue([for zone in ["raw", "prepared", "models", "forecasts", "quarantine"] : contains(keys(var.bucket_names), zone)])
    error_message = "The bucket_names map needs the keys raw, prepared, models, forecasts and quarantine."
  }
}

variable "data_kms_key_arn" {
  description = "ARN of the KMS key of the lake buckets; tenants use it only through S3."
  type        = string
}

variable "msk_cluster_name" {
  description = "Name of the MSK cluster whose t.<tenant>. topics and consumer groups each tenant uses."
  type        = string
}

variable "cache_replication_group_id" {
  description = "ElastiCache replication group id that the tenants' cache users connect to."
  type        = string
}

variable "assuming_role_arns" {
  description = "Service roles (gateway and actions, lake writer, Airflow) allowed to assume a tenant role for one tenant's work."
  type        = list(string)
  default     = []
}
