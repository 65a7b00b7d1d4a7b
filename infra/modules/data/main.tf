# The lake: one private, SSE-KMS bucket per zone with lifecycle rules that match how
# long each zone's data is useful.

locals {
  zones = {
    raw = {
      infrequent_access_after_days = 30
      glacier_after_days           = 90
      expiration_days              = var.raw_retention_days
    }
    prepared = {
      infrequent_access_after_days = 30
      glacier_after_days           = 0
      expiration_days              = 180
    }
    models = {
      infrequent_access_after_days = 90
      glacier_after_days           = 0
      expiration_days              = 0
    }
    forecasts = {
      infrequent_access_after_days = 30
      glacier_after_days           = 0
      expiration_days              = 90
    }
    quarantine = {
      infrequent_access_after_days = 0
      glacier_after_days           = 0
      expiration_days              = var.quarantine_retention_days
    }
  }
}

module "bucket" {
  source   = "../bucket"
  for_each = local.zones

  name                         = "${var.name_prefix}-${each.key}"
  kms_key_arn                  = var.kms_key_arn
  tags                         = merge(var.tags, { "saodf:zone" = each.key })
  access_log_bucket            = var.access_log_bucket
  infrequent_access_after_days = each.value.infrequent_access_after_days
  glacier_after_days           = each.value.glacier_after_days
  expiration_days              = each.value.expiration_days
  noncurrent_version_days      = 30
}
