output "primary_endpoint" {
  description = "Primary endpoint address of the replication group (TLS on 6379)."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "replication_group_arn" {
  description = "ARN of the replication group."
  value       = aws_elasticache_replication_group.this.arn
}
