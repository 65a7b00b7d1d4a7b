terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }

  # Partial configuration: pass bucket, key and region with -backend-config (see README).
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      "saodf:stack" = "platform"
      "managed-by"  = "terraform"
    }
  }
}
