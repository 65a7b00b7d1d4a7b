# ElastiCache Redis: encrypted at rest with the cache key and in transit (TLS required),
# RBAC users instead of the open default user, allkeys-lru like the local Redis.

resource "aws_elasticache_subnet_group" "this" {
  name       = "${var.name_prefix}-redis"
  subnet_ids = var.private_subnet_ids
  tags       = var.tags
}

resource "aws_elasticache_parameter_group" "this" {
  name   = "${var.name_prefix}-redis7"
  family = "redis7"
  tags   = var.tags

  parameter {
    name  = "maxmemory-policy"
    value = "allkeys-lru"
  }
}

data "aws_secretsmanager_secret_version" "app_password" {
  secret_id = var.app_password_secret_id
}

# ElastiCache requires a user named "default" in every user group; this one is disabled.
resource "aws_elasticache_user" "default_disabled" {
  user_id       = "${var.name_prefix}-default-off"
  user_name     = "default"
  engine        = "REDIS"
  access_string = "off -@all"

  # "off" disables the user, so no client can log in as "default" without a password.
  authentication_mode {
    type = "no-password-required"
  }

  tags = var.tags
}

# Same rights as the local ACL user: saodf:* keys and channels, no dangerous commands
# except INFO (cache statistics).
resource "aws_elasticache_user" "app" {
  user_id       = var.app_user_id
  user_name     = var.app_user_name
  engine        = "REDIS"
  access_string = "on ~saodf:* &saodf:* +@all -@dangerous +info +ping"

  authentication_mode {
    type      = "password"
    passwords = [data.aws_secretsmanager_secret_version.app_password.secret_string]
  }

  tags = var.tags
}

resource "aws_elasticache_user_group" "this" {
  engine        = "REDIS"
  user_group_id = "${var.name_prefix}-redis-users"
  user_ids      = concat([aws_elasticache_user.default_disabled.user_id, aws_elasticache_user.app.user_id], var.tenant_user_ids)
  tags          = var.tags
}

resource "aws_cloudwatch_log_group" "slow" {
  name              = "/aws/elasticache/${var.name_prefix}-redis/slow-log"
  retention_in_days = 365
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id       = var.replication_group_id
  description                = "SAODF forecast cache"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.node_type
  num_cache_clusters         = var.node_count
  port                       = 6379
  parameter_group_name       = aws_elasticache_parameter_group.this.name
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [var.security_group_id]
  automatic_failover_enabled = true
  multi_az_enabled           = true
  at_rest_encryption_enabled = true
  kms_key_id                 = var.cache_kms_key_arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  user_group_ids             = [aws_elasticache_user_group.this.user_group_id]
  snapshot_retention_limit   = 7
  auto_minor_version_upgrade = true
  apply_immediately          = false
  tags                       = var.tags

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.slow.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }
}
