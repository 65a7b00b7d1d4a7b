variable "name_prefix" {
  description = "Prefix of every resource name."
  type        = string
}

variable "tags" {
  description = "Tags of every resource, on top of the provider's default tags."
  type        = map(string)
  default     = {}
}

variable "cluster_name" {
  description = "Name of the MSK cluster."
  type        = string
}

variable "kafka_version" {
  description = "Apache Kafka version of the MSK cluster."
  type        = string
  default     = "3.6.0"
}

variable "broker_count" {
  description = "Number of brokers, a multiple of the number of private subnets."
  type        = number
  default     = 3
}

variable "broker_instance_type" {
  description = "MSK broker instance type."
  type        = string
  default     = "kafka.m7g.large"
}

variable "broker_volume_gb" {
  description = "EBS storage per broker in GiB."
  type        = number
  default     = 100
}

variable "private_subnet_ids" {
  description = "Private subnets of the brokers."
  type        = list(string)
}

variable "security_group_id" {
  description = "Security group of the brokers (9098 from the workloads group)."
  type        = string
}

variable "stream_kms_key_arn" {
  description = "KMS key ARN for MSK storage and the SQS queues."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key ARN of the broker log group."
  type        = string
}

variable "queue_name" {
  description = "Name of the SQS fallback queue of the ingest router."
  type        = string
  default     = "telemetry-raw"
}

variable "dlq_name" {
  description = "Name of the SQS dead-letter queue."
  type        = string
  default     = "telemetry-raw-dlq"
}

variable "max_receive_count" {
  description = "Receives before a message moves to the dead-letter queue."
  type        = number
  default     = 5
}
