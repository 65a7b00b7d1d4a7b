variable "run_key" {
  description = "Run key of the pipeline run that owns this stack (window-... or interval-...)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$", var.run_key))
    error_message = "The run_key must be 1-128 characters of letters, digits and ._:+- ."
  }
}

variable "run_slug" {
  description = "The run key as lowercase letters, digits and hyphens, at most 40 characters, for resource names."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,39}$", var.run_slug))
    error_message = "The run_slug must be 1-40 lowercase letters, digits or hyphens."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name; S3 bucket names are global, so make it unique to your account."
  type        = string
  default     = "saodf"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.name_prefix))
    error_message = "The name_prefix must be 2-16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the batch stack."
  type        = string
  default     = "us-east-1"
}

variable "kms_key_arn" {
  description = "ARN of the platform's data KMS key; empty creates a key for this run (local emulation)."
  type        = string
  default     = ""
}

variable "vpc_id" {
  description = "VPC of the training and transform jobs; empty skips the jobs' security group."
  type        = string
  default     = ""
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; job egress on 443 is limited to it (VPC endpoints) and to the S3 prefix list."
  type        = string
  default     = "10.40.0.0/16"
}

variable "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint, so jobs reach S3 without the NAT gateway; empty omits the rule."
  type        = string
  default     = ""
}

variable "lake_bucket_arns" {
  description = "ARNs of the lake buckets the run's jobs read (prepared) and write (models, forecasts)."
  type = object({
    prepared  = string
    models    = string
    forecasts = string
  })
  default = {
    prepared  = ""
    models    = ""
    forecasts = ""
  }
}

variable "scratch_expiration_days" {
  description = "Days after which objects in the scratch bucket expire even if teardown never ran."
  type        = number
  default     = 3

  validation {
    condition     = var.scratch_expiration_days >= 1 && var.scratch_expiration_days <= 30
    error_message = "The scratch_expiration_days must be between 1 and 30."
  }
}

variable "force_destroy_scratch" {
  description = "Delete the scratch bucket's objects on destroy; false makes destroy fail while objects remain."
  type        = bool
  default     = true
}
