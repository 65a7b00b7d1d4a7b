variable "region" {
  description = "AWS region of the platform."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name; S3 bucket names are global, so make it unique to your account."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.name_prefix))
    error_message = "The name_prefix must be 2-16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name, used as a tag (for example prod or staging)."
  type        = string
  default     = "prod"
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Availability zones of the subnets, MSK brokers and cache nodes."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone."
  type        = bool
  default     = true
}

variable "gateway_ingress_cidrs" {
  description = "Client networks (CIDR blocks) allowed to reach the gateways on HTTPS; never 0.0.0.0/0."
  type        = list(string)
  default     = []
}

variable "sqs_queue_name" {
  description = "Name of the SQS fallback queue (SAODF uses telemetry-raw and telemetry-raw-dlq)."
  type        = string
  default     = "telemetry-raw"
}

variable "redis_password_secret_id" {
  description = "Secrets Manager secret holding the Redis password of the saodf user; create it first."
  type        = string
}

variable "tf_state_bucket_name" {
  description = "Existing versioned, encrypted bucket of the Terraform state (platform and batch stacks)."
  type        = string
}

variable "tenants" {
  description = "Tenant names (as `saodf tenant list` prints them); each gets an IAM role and a cache user limited to its prefixes."
  type        = list(string)
  default     = []
}
