variable "name" {
  description = "Globally unique bucket name."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the KMS key for SSE-KMS default encryption."
  type        = string
}

variable "tags" {
  description = "Tags of the bucket, on top of the provider's default tags."
  type        = map(string)
  default     = {}
}

variable "force_destroy" {
  description = "Delete all objects when the bucket is destroyed."
  type        = bool
  default     = false
}

variable "access_log_bucket" {
  description = "Bucket that receives S3 server access logs; empty disables access logging."
  type        = string
  default     = ""
}

variable "infrequent_access_after_days" {
  description = "Days before objects move to STANDARD_IA; 0 keeps them in STANDARD."
  type        = number
  default     = 30
}

variable "glacier_after_days" {
  description = "Days before objects move to GLACIER_IR; 0 disables the transition."
  type        = number
  default     = 0
}

variable "expiration_days" {
  description = "Days before current objects expire; 0 keeps them."
  type        = number
  default     = 0
}

variable "noncurrent_version_days" {
  description = "Days before noncurrent object versions are deleted."
  type        = number
  default     = 30
}

variable "require_kms_uploads" {
  description = "Reject PutObject requests that ask for an encryption other than aws:kms."
  type        = bool
  default     = true
}

variable "extra_policy_json" {
  description = "Additional bucket policy statements (JSON) merged into the TLS-only policy."
  type        = string
  default     = ""
}
