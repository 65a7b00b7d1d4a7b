variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
}

variable "tags" {
  description = "Tags of every resource, on top of the provider's default tags."
  type        = map(string)
  default     = {}
}

variable "account_id" {
  description = "AWS account id, for the flow-log role's trust condition."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC (a /16 leaves room for /24 public and /20 private subnets)."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 16
    error_message = "The vpc_cidr must be a valid IPv4 CIDR block of size /16 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones, one public and one private subnet in each (at least 2 for MSK and Redis failover)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 6
    error_message = "Give between 2 and 6 availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone (zone-redundant)."
  type        = bool
  default     = true
}

variable "gateway_ingress_cidrs" {
  description = "Named client networks allowed to reach the gateways on HTTPS; never 0.0.0.0/0."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.gateway_ingress_cidrs : can(cidrhost(cidr, 0)) && !endswith(cidr, "/0")])
    error_message = "Each gateway_ingress_cidrs entry must be a CIDR block narrower than /0."
  }
}

variable "interface_endpoint_services" {
  description = "AWS services reached through interface endpoints (service name after com.amazonaws.REGION.)."
  type        = list(string)
  default     = ["sagemaker.api", "sagemaker.runtime", "sts", "logs", "kms", "glue", "sqs", "ecr.api", "ecr.dkr"]
}

variable "logs_kms_key_arn" {
  description = "KMS key ARN that encrypts the flow-log group."
  type        = string
}
