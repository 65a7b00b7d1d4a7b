output "bucket_names" {
  description = "Bucket names by zone."
  value       = { for zone, bucket in module.bucket : zone => bucket.id }
}

output "bucket_arns" {
  description = "Bucket ARNs by zone."
  value       = { for zone, bucket in module.bucket : zone => bucket.arn }
}
