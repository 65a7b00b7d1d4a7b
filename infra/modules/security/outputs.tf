output "kms_key_arns" {
  description = "KMS key ARNs by domain: data, logs, stream, cache."
  value       = { for domain, key in aws_kms_key.this : domain => key.arn }
}

output "role_arns" {
  description = "Service role ARNs: gateway, lake_writer, airflow."
  value       = { for name, role in aws_iam_role.service : name => role.arn }
}

output "trail_arn" {
  description = "ARN of the CloudTrail trail."
  value       = aws_cloudtrail.this.arn
}

output "trail_bucket" {
  description = "Name of the CloudTrail bucket."
  value       = module.trail_bucket.id
}
