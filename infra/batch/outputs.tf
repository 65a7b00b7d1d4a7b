output "scratch_bucket" {
  description = "Name of the run's scratch bucket (training checkpoints, transform input and output)."
  value       = aws_s3_bucket.scratch.bucket
}

output "job_role_arn" {
  description = "ARN of the run's SageMaker job role, limited to the scratch bucket and the lake."
  value       = aws_iam_role.job.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the scratch bucket."
  value       = local.kms_key_arn
}

output "job_security_group_id" {
  description = "Security group of the run's jobs, or null when no VPC was given."
  value       = one(aws_security_group.jobs[*].id)
}
