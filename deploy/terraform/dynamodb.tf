# The DynamoDB table the controller replicas share (serve --store dynamodb). Its shape is
# the one `wpfleet store init` creates and docs/ARCHITECTURE.md ("DynamoDB table")
# describes; tests/terraform.rs fails if the two drift apart.
#
# Keys: pk (T#<tenant> | LEASES | REPLICAS) + sk (I#<instance> | B#... | A#... | E#... |
# SHARD#<n> | <replica>). Three sparse, eventually consistent indexes, all sorted by `path`
# (tenant/instance): only instance items carry their hash keys.

resource "aws_dynamodb_table" "wpfleet" {
  name         = var.wpfleet_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  deletion_protection_enabled = var.wpfleet_table_deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  attribute {
    name = "path"
    type = "S"
  }

  attribute {
    name = "shard"
    type = "N"
  }

  attribute {
    name = "entity"
    type = "S"
  }

  attribute {
    name = "pending"
    type = "S"
  }

  # list_shard: a replica resyncs only the instances of the shards it holds.
  global_secondary_index {
    name            = "shard-index"
    hash_key        = "shard"
    range_key       = "path"
    projection_type = "KEYS_ONLY"
  }

  # The operator's list of every instance, in key order, without a Scan.
  global_secondary_index {
    name            = "key-order-index"
    hash_key        = "entity"
    range_key       = "path"
    projection_type = "KEYS_ONLY"
  }

  # The pending index: instances that need reconciling; every replica polls it.
  global_secondary_index {
    name               = "pending-index"
    hash_key           = "pending"
    range_key          = "path"
    projection_type    = "INCLUDE"
    non_key_attributes = ["shard", "pendingMarker"]
  }

  # Replica heartbeats carry `ttl`; nothing else does (leases keep their fencing token).
  ttl {
    attribute_name = "ttl"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.wpfleet_table_kms_key_arn == "" ? null : var.wpfleet_table_kms_key_arn
  }

  tags = var.wpfleet_tags
}
