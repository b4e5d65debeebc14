output "wpfleet_table_name" {
  description = "The table name: serve --store dynamodb --table <this> (WPFLEET_TABLE)."
  value       = aws_dynamodb_table.wpfleet.name
}

output "wpfleet_table_arn" {
  description = "The table's ARN."
  value       = aws_dynamodb_table.wpfleet.arn
}

output "wpfleet_store_policy_arn" {
  description = "The controller's store policy, to attach to its role when it is not wpfleet_controller_role_name."
  value       = aws_iam_policy.wpfleet_store.arn
}
