# Stateless subnet filters behind the security groups. The public subnets hold only the
# NAT gateways: they admit return traffic on ephemeral ports and HTTPS from the named
# client networks. The private subnets admit the service ports from inside the VPC and
# return traffic on ephemeral ports, which the NAT gateway needs for responses from
# the internet (NACLs are stateless, so responses need an inbound rule).

resource "aws_network_acl" "public" {
  vpc_id     = aws_vpc.this.id
  subnet_ids = aws_subnet.public[*].id
  tags       = merge(var.tags, { Name = "${var.name_prefix}-public" })
}

resource "aws_network_acl_rule" "public_in_ephemeral" {
  #checkov:skip=CKV_AWS_231:Return traffic on ephemeral ports; the security groups admit no 3389
  network_acl_id = aws_network_acl.public.id
  rule_number    = 100
  egress         = false
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = "0.0.0.0/0"
  from_port      = 1024
  to_port        = 65535
}

resource "aws_network_acl_rule" "public_in_vpc_https" {
  network_acl_id = aws_network_acl.public.id
  rule_number    = 110
  egress         = false
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = var.vpc_cidr
  from_port      = 443
  to_port        = 443
}

resource "aws_network_acl_rule" "public_in_clients_https" {
  count = length(var.gateway_ingress_cidrs)

  network_acl_id = aws_network_acl.public.id
  rule_number    = 200 + count.index
  egress         = false
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = var.gateway_ingress_cidrs[count.index]
  from_port      = 443
  to_port        = 443
}

resource "aws_network_acl_rule" "public_out_https" {
  network_acl_id = aws_network_acl.public.id
  rule_number    = 100
  egress         = true
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = "0.0.0.0/0"
  from_port      = 443
  to_port        = 443
}

resource "aws_network_acl_rule" "public_out_ephemeral" {
  network_acl_id = aws_network_acl.public.id
  rule_number    = 110
  egress         = true
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = "0.0.0.0/0"
  from_port      = 1024
  to_port        = 65535
}

resource "aws_network_acl" "private" {
  vpc_id     = aws_vpc.this.id
  subnet_ids = aws_subnet.private[*].id
  tags       = merge(var.tags, { Name = "${var.name_prefix}-private" })
}

resource "aws_network_acl_rule" "private_in_services" {
  for_each = { https = 443, redis = 6379, kafka = 9098 }

  network_acl_id = aws_network_acl.private.id
  rule_number    = { https = 100, redis = 110, kafka = 120 }[each.key]
  egress         = false
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = var.vpc_cidr
  from_port      = each.value
  to_port        = each.value
}

resource "aws_network_acl_rule" "private_in_ephemeral" {
  #checkov:skip=CKV_AWS_231:Return traffic on ephemeral ports; the security groups admit no 3389
  network_acl_id = aws_network_acl.private.id
  rule_number    = 200
  egress         = false
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = "0.0.0.0/0"
  from_port      = 1024
  to_port        = 65535
}

resource "aws_network_acl_rule" "private_out_https" {
  network_acl_id = aws_network_acl.private.id
  rule_number    = 100
  egress         = true
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = "0.0.0.0/0"
  from_port      = 443
  to_port        = 443
}

resource "aws_network_acl_rule" "private_out_vpc" {
  for_each = { redis = 6379, kafka = 9098 }

  network_acl_id = aws_network_acl.private.id
  rule_number    = { redis = 110, kafka = 120 }[each.key]
  egress         = true
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = var.vpc_cidr
  from_port      = each.value
  to_port        = each.value
}

resource "aws_network_acl_rule" "private_out_ephemeral" {
  network_acl_id = aws_network_acl.private.id
  rule_number    = 200
  egress         = true
  protocol       = "tcp"
  rule_action    = "allow"
  cidr_block     = var.vpc_cidr
  from_port      = 1024
  to_port        = 65535
}
