# Variables of the store half of the deployment (dynamodb.tf, iam_store.tf).
#
# The controller's IAM role is `wpfleet_controller_role_name`, declared in iam_cloud.tf:
# both the store policy (iam_store.tf) and the cloud policy (iam_cloud.tf) are attached
# to it when it is set.

variable "wpfleet_table_name" {
  description = "DynamoDB table of desired state, status, backups, events, shard leases and heartbeats (serve --table / WPFLEET_TABLE)."
  type        = string
  default     = "wpfleet"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.wpfleet_table_name))
    error_message = "A DynamoDB table name is 3 to 255 characters of A-Z, a-z, 0-9, '_', '-' and '.'."
  }
}

variable "wpfleet_table_deletion_protection" {
  description = "Refuse DeleteTable (turn off only to tear a test deployment down)."
  type        = bool
  default     = true
}

variable "wpfleet_table_kms_key_arn" {
  description = "Customer-managed KMS key for the table; empty uses the AWS-owned key."
  type        = string
  default     = ""
}

variable "wpfleet_tags" {
  description = "Tags for the resources created here."
  type        = map(string)
  default     = { application = "wpfleet" }
}
