output "cluster_arn" {
  description = "ARN of the MSK cluster."
  value       = aws_msk_cluster.this.arn
}

output "bootstrap_brokers_iam" {
  description = "Bootstrap brokers for TLS with IAM authentication (port 9098)."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_iam
}

output "queue_url" {
  description = "URL of the SQS fallback queue."
  value       = aws_sqs_queue.raw.id
}

output "dlq_url" {
  description = "URL of the SQS dead-letter queue."
  value       = aws_sqs_queue.dlq.id
}
