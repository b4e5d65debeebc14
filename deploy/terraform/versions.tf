# Terraform and provider versions for the wpfleet deployment (the DynamoDB store here,
# the cloud permissions in iam_cloud.tf). Configure the AWS provider (region, profile or
# role) in the root module that uses this one, or with the standard AWS_* variables.

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}
