terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }

  # Partial configuration: the teardown runner passes bucket, key, region and lock table
  # with -backend-config, one state key per run. Locally it adds backend_override.tf,
  # which switches to a local state file inside the run's workspace.
  backend "s3" {}
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
