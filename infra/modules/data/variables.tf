variable "name_prefix" {
  description = "Prefix of the bucket names; buckets are NAME_PREFIX-ZONE, so make it globally unique."
  type        = string
}

variable "tags" {
  description = "Tags of every bucket, on top of the provider's default tags."
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  description = "ARN of the data KMS key."
  type        = string
}

variable "access_log_bucket" {
  description = "Bucket receiving S3 server access logs; empty relies on CloudTrail data events."
  type        = string
  default     = ""
}

variable "raw_retention_days" {
  description = "Days raw telemetry is kept."
  type        = number
  default     = 730
}

variable "quarantine_retention_days" {
  description = "Days quarantined batches are kept for inspection."
  type        = number
  default     = 90
}
