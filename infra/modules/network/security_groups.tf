# Workloads (gateway and actions, lake writer, Airflow workers, Glue and SageMaker jobs)
# share the "workloads" group. Redis, MSK and the interface endpoints admit only that
# group, and only on their own port. Ingress from outside the VPC is HTTPS from the
# named CIDR blocks in var.gateway_ingress_cidrs.

resource "aws_security_group" "workloads" {
  #checkov:skip=CKV2_AWS_5:Attached in the stream, cache and ml modules and by the services
  name        = "${var.name_prefix}-workloads"
  description = "SAODF services and jobs; HTTPS in only from named client networks"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-workloads" })
}

resource "aws_vpc_security_group_ingress_rule" "workloads_https_clients" {
  for_each = toset(var.gateway_ingress_cidrs)

  security_group_id = aws_security_group.workloads.id
  description       = "HTTPS to the action and ingest gateways from ${each.value}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

# Glue workers talk to each other on any TCP port; AWS requires this self-reference.
resource "aws_vpc_security_group_ingress_rule" "workloads_self" {
  #checkov:skip=CKV_AWS_24:Source is this security group, not 0.0.0.0/0
  #checkov:skip=CKV_AWS_25:Source is this security group, not 0.0.0.0/0
  #checkov:skip=CKV_AWS_260:Source is this security group, not 0.0.0.0/0
  security_group_id            = aws_security_group.workloads.id
  description                  = "Glue and Spark workers of the same job"
  ip_protocol                  = "tcp"
  from_port                    = 0
  to_port                      = 65535
  referenced_security_group_id = aws_security_group.workloads.id
}

resource "aws_vpc_security_group_egress_rule" "workloads_https" {
  security_group_id = aws_security_group.workloads.id
  description       = "HTTPS to AWS APIs (VPC endpoints, or the NAT gateway)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "workloads_redis" {
  security_group_id            = aws_security_group.workloads.id
  description                  = "Redis (TLS) in the VPC"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.redis.id
}

resource "aws_vpc_security_group_egress_rule" "workloads_msk" {
  security_group_id            = aws_security_group.workloads.id
  description                  = "MSK brokers, TLS with IAM authentication"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = aws_security_group.msk.id
}

resource "aws_vpc_security_group_egress_rule" "workloads_self" {
  security_group_id            = aws_security_group.workloads.id
  description                  = "Glue and Spark workers of the same job"
  ip_protocol                  = "tcp"
  from_port                    = 0
  to_port                      = 65535
  referenced_security_group_id = aws_security_group.workloads.id
}

resource "aws_security_group" "redis" {
  #checkov:skip=CKV2_AWS_5:Attached in the stream, cache and ml modules and by the services
  name        = "${var.name_prefix}-redis"
  description = "ElastiCache Redis: 6379 from the workloads group only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-redis" })
}

resource "aws_vpc_security_group_ingress_rule" "redis_from_workloads" {
  security_group_id            = aws_security_group.redis.id
  description                  = "Redis from SAODF workloads"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = aws_security_group.workloads.id
}

resource "aws_security_group" "msk" {
  #checkov:skip=CKV2_AWS_5:Attached in the stream, cache and ml modules and by the services
  name        = "${var.name_prefix}-msk"
  description = "MSK brokers: 9098 (TLS, IAM auth) from the workloads group only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-msk" })
}

resource "aws_vpc_security_group_ingress_rule" "msk_from_workloads" {
  security_group_id            = aws_security_group.msk.id
  description                  = "Kafka over TLS with IAM authentication from SAODF workloads"
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  referenced_security_group_id = aws_security_group.workloads.id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name_prefix}-vpc-endpoints"
  description = "Interface VPC endpoints: 443 from the workloads group only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-vpc-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_workloads" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS to AWS APIs from SAODF workloads"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.workloads.id
}
