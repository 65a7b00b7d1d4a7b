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
}

variable "data_kms_key_arn" {
  description = "ARN of the data KMS key (lake buckets)."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "ARN of the logs KMS key (Glue logs and bookmarks)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the jobs; their network interfaces may be created only there."
  type        = string
}

variable "private_subnet_id" {
  description = "Private subnet of the Glue connection."
  type        = string
}

variable "availability_zone" {
  description = "Availability zone of private_subnet_id."
  type        = string
}

variable "security_group_id" {
  description = "Security group of the jobs (the network module's workloads group)."
  type        = string
}

variable "glue_script_path" {
  description = "Local path of the Glue job script that is uploaded to the models bucket."
  type        = string
}

variable "glue_workers" {
  description = "Number of G.1X workers of the Glue job."
  type        = number
  default     = 2
}

variable "glue_python_modules" {
  description = "Extra Python packages of the Glue job (--additional-python-modules)."
  type        = string
  default     = "pyarrow>=15,fsspec,s3fs"
}
