output "role_arns" {
  description = "Tenant role ARNs by tenant name."
  value       = { for name, role in aws_iam_role.tenant : name => role.arn }
}

output "policy_documents" {
  description = "Permission policy JSON by tenant name, as attached to the tenant roles."
  value       = { for name, document in data.aws_iam_policy_document.tenant : name => document.json }
}

output "trust_documents" {
  description = "Trust policy JSON by tenant name."
  value       = { for name, document in data.aws_iam_policy_document.tenant_assume : name => document.json }
}

output "cache_user_ids" {
  description = "ElastiCache RBAC user ids of the tenants (IAM authentication), for the cache user group."
  value       = [for user in aws_elasticache_user.tenant : user.user_id]
}
