variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
}

variable "tags" {
  description = "Tags of every resource, on top of the provider's default tags."
  type        = map(string)
  default     = {}
}

variable "replication_group_id" {
  description = "Id of the Redis replication group."
  type        = string
}

variable "node_type" {
  description = "Cache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "node_count" {
  description = "Nodes in the replication group, at least 2 for automatic failover across zones."
  type        = number
  default     = 2

  validation {
    condition     = var.node_count >= 2 && var.node_count <= 6
    error_message = "The node_count must be between 2 and 6 (Multi-AZ failover needs a replica)."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets of the cache nodes."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group of the cache (6379 from the workloads group)."
  type        = string
}

variable "cache_kms_key_arn" {
  description = "KMS key ARN for encryption at rest."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key ARN of the slow-log group."
  type        = string
}

variable "app_user_id" {
  description = "RBAC user id of the application."
  type        = string
}

variable "app_user_name" {
  description = "Redis user name of the application (SAODF_REDIS_USER)."
  type        = string
  default     = "saodf"
}

variable "app_password_secret_id" {
  description = "Secrets Manager secret (name or ARN) whose value is the application's Redis password (16-128 characters)."
  type        = string
}

variable "tenant_user_ids" {
  description = "RBAC user ids of the tenants (the tenants module's cache_user_ids), added to the user group."
  type        = list(string)
  default     = []
}
