# Least-privilege access of the controller to its table: item reads and conditional
# writes on the table, queries of its indexes, DescribeTable (checked at start). No Scan,
# no table management (Terraform owns the table), nothing on any other table.
# TransactWriteItems needs no action of its own: it is authorized by the actions of its
# parts (PutItem, DeleteItem, ConditionCheckItem).

data "aws_iam_policy_document" "wpfleet_store" {
  statement {
    sid = "TableItems"
    actions = [
      "dynamodb:BatchGetItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:DeleteItem",
      "dynamodb:DescribeTable",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "dynamodb:UpdateItem",
    ]
    resources = [aws_dynamodb_table.wpfleet.arn]
  }

  statement {
    sid       = "IndexQueries"
    actions   = ["dynamodb:Query"]
    resources = ["${aws_dynamodb_table.wpfleet.arn}/index/*"]
  }

  # A customer-managed key must also let the controller use it.
  dynamic "statement" {
    for_each = var.wpfleet_table_kms_key_arn == "" ? [] : [var.wpfleet_table_kms_key_arn]
    content {
      sid       = "TableKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "wpfleet_store" {
  name        = "wpfleet-store-${var.wpfleet_table_name}"
  description = "wpfleet controller: items of DynamoDB table ${var.wpfleet_table_name}"
  policy      = data.aws_iam_policy_document.wpfleet_store.json
  tags        = var.wpfleet_tags
}

resource "aws_iam_role_policy_attachment" "wpfleet_store" {
  count      = var.wpfleet_controller_role_name == "" ? 0 : 1
  role       = var.wpfleet_controller_role_name
  policy_arn = aws_iam_policy.wpfleet_store.arn
}
