output "vpc_id" {
  description = "VPC id."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "VPC CIDR block."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnet ids (NAT gateways only)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnet ids of every workload."
  value       = aws_subnet.private[*].id
}

output "security_group_ids" {
  description = "Security group ids: workloads, redis, msk, endpoints."
  value = {
    workloads = aws_security_group.workloads.id
    redis     = aws_security_group.redis.id
    msk       = aws_security_group.msk.id
    endpoints = aws_security_group.endpoints.id
  }
}

output "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint, for egress rules."
  value       = aws_vpc_endpoint.s3.prefix_list_id
}
