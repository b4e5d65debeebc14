# IAM for the AWS driver (serve --cloud aws): the roles it hands to AWS (AWS Backup, the
# ECS task execution role, the WordPress task role, the relocation task role) and the
# controller's own permissions on ECS, EFS, RDS, AWS Backup and CloudWatch Logs.
# docs/AWS.md explains each.
#
# The shared infrastructure itself (cluster, file system, vault, network) is not created
# here; its names come in as variables.

# Variables of this file (kept here rather than in variables.tf, which another part of
# the deployment owns).
variable "wpfleet_ecs_cluster_name" {
  description = "ECS cluster the WordPress services run on (--aws-cluster)."
  type        = string
}

variable "wpfleet_efs_file_system_id" {
  description = "EFS file system holding the instances' directories (--aws-file-system-id)."
  type        = string
}

variable "wpfleet_backup_vault_name" {
  description = "AWS Backup vault for the file system's recovery points (--aws-backup-vault)."
  type        = string
}

variable "wpfleet_db_subnet_group_name" {
  description = "RDS DB subnet group of the databases (--aws-db-subnet-group)."
  type        = string
  default     = "*"
}

variable "wpfleet_controller_role_name" {
  description = "IAM role the controller runs as; the cloud policy is attached to it when set."
  type        = string
  default     = ""
}

data "aws_partition" "wpfleet_cloud" {}
data "aws_region" "wpfleet_cloud" {}
data "aws_caller_identity" "wpfleet_cloud" {}

locals {
  wpfleet_arn_prefix = "arn:${data.aws_partition.wpfleet_cloud.partition}"
  wpfleet_region     = data.aws_region.wpfleet_cloud.name
  wpfleet_account    = data.aws_caller_identity.wpfleet_cloud.account_id
  wpfleet_cluster    = "${local.wpfleet_arn_prefix}:ecs:${local.wpfleet_region}:${local.wpfleet_account}:cluster/${var.wpfleet_ecs_cluster_name}"
  wpfleet_services   = "${local.wpfleet_arn_prefix}:ecs:${local.wpfleet_region}:${local.wpfleet_account}:service/${var.wpfleet_ecs_cluster_name}/wp-*"
  wpfleet_tasks      = "${local.wpfleet_arn_prefix}:ecs:${local.wpfleet_region}:${local.wpfleet_account}:task/${var.wpfleet_ecs_cluster_name}/*"
  wpfleet_relocate   = "${local.wpfleet_arn_prefix}:ecs:${local.wpfleet_region}:${local.wpfleet_account}:task-definition/wp-*-relocate:*"
  wpfleet_fs         = "${local.wpfleet_arn_prefix}:elasticfilesystem:${local.wpfleet_region}:${local.wpfleet_account}:file-system/${var.wpfleet_efs_file_system_id}"
  wpfleet_aps        = "${local.wpfleet_arn_prefix}:elasticfilesystem:${local.wpfleet_region}:${local.wpfleet_account}:access-point/*"
  wpfleet_rds        = "${local.wpfleet_arn_prefix}:rds:${local.wpfleet_region}:${local.wpfleet_account}"
  wpfleet_logs       = "${local.wpfleet_arn_prefix}:logs:${local.wpfleet_region}:${local.wpfleet_account}:log-group:/wpfleet/*"
  wpfleet_vault      = "${local.wpfleet_arn_prefix}:backup:${local.wpfleet_region}:${local.wpfleet_account}:backup-vault:${var.wpfleet_backup_vault_name}"
  wpfleet_rps        = "${local.wpfleet_arn_prefix}:backup:${local.wpfleet_region}:${local.wpfleet_account}:recovery-point:*"
  wpfleet_rds_secret = "${local.wpfleet_arn_prefix}:secretsmanager:${local.wpfleet_region}:${local.wpfleet_account}:secret:rds!*"
}

# --- Roles the controller hands to AWS -------------------------------------------------

data "aws_iam_policy_document" "wpfleet_ecs_tasks_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# ECS starts tasks with it: pulls the image, reads the RDS-managed DB secret, writes logs.
resource "aws_iam_role" "wpfleet_task_execution" {
  name               = "wpfleet-task-execution"
  assume_role_policy = data.aws_iam_policy_document.wpfleet_ecs_tasks_trust.json
}

resource "aws_iam_role_policy_attachment" "wpfleet_task_execution_managed" {
  role       = aws_iam_role.wpfleet_task_execution.name
  policy_arn = "${local.wpfleet_arn_prefix}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "wpfleet_task_execution_secrets" {
  statement {
    sid       = "ReadRdsManagedMasterSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.wpfleet_rds_secret]
  }
  statement {
    sid       = "DecryptThem"
    actions   = ["kms:Decrypt"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.wpfleet_region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "wpfleet_task_execution_secrets" {
  name   = "rds-managed-secrets"
  role   = aws_iam_role.wpfleet_task_execution.id
  policy = data.aws_iam_policy_document.wpfleet_task_execution_secrets.json
}

# WordPress runs as this role: it mounts its directory through its access point (IAM auth).
resource "aws_iam_role" "wpfleet_task" {
  name               = "wpfleet-task"
  assume_role_policy = data.aws_iam_policy_document.wpfleet_ecs_tasks_trust.json
}

data "aws_iam_policy_document" "wpfleet_task_efs" {
  statement {
    sid       = "MountThroughAccessPoints"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = [local.wpfleet_fs]
    condition {
      test     = "StringLike"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [local.wpfleet_aps]
    }
  }
}

resource "aws_iam_role_policy" "wpfleet_task_efs" {
  name   = "efs-through-access-points"
  role   = aws_iam_role.wpfleet_task.id
  policy = data.aws_iam_policy_document.wpfleet_task_efs.json
}

# The relocation task runs as this role: after an AWS Backup restore it mounts the file
# system ROOT (not an access point) as root, to move the restored files out of AWS
# Backup's recovery directory into the restore's directory (docs/AWS.md, "Restore").
resource "aws_iam_role" "wpfleet_relocation" {
  name               = "wpfleet-relocation"
  assume_role_policy = data.aws_iam_policy_document.wpfleet_ecs_tasks_trust.json
}

data "aws_iam_policy_document" "wpfleet_relocation_efs" {
  statement {
    sid = "MountTheRootAsRoot"
    actions = [
      "elasticfilesystem:ClientMount",
      "elasticfilesystem:ClientWrite",
      "elasticfilesystem:ClientRootAccess",
    ]
    resources = [local.wpfleet_fs]
  }
}

resource "aws_iam_role_policy" "wpfleet_relocation_efs" {
  name   = "efs-root-access"
  role   = aws_iam_role.wpfleet_relocation.id
  policy = data.aws_iam_policy_document.wpfleet_relocation_efs.json
}

# AWS Backup runs the backup and restore jobs with it.
data "aws_iam_policy_document" "wpfleet_backup_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["backup.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "wpfleet_backup" {
  name               = "wpfleet-backup"
  assume_role_policy = data.aws_iam_policy_document.wpfleet_backup_trust.json
}

resource "aws_iam_role_policy_attachment" "wpfleet_backup_backups" {
  role       = aws_iam_role.wpfleet_backup.name
  policy_arn = "${local.wpfleet_arn_prefix}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup"
}

resource "aws_iam_role_policy_attachment" "wpfleet_backup_restores" {
  role       = aws_iam_role.wpfleet_backup.name
  policy_arn = "${local.wpfleet_arn_prefix}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores"
}

# --- The controller's own permissions --------------------------------------------------

data "aws_iam_policy_document" "wpfleet_cloud" {
  # ECS: describes and task definition calls cannot be scoped; services are named wp-* on
  # the cluster.
  statement {
    sid = "EcsRead"
    actions = [
      "ecs:DescribeClusters",
      "ecs:DescribeServices",
      "ecs:DescribeTaskDefinition",
      "ecs:ListTasks",
      "ecs:DescribeTasks",
      "ecs:RegisterTaskDefinition",
      "ecs:ListTaskDefinitions",
      "ecs:DeregisterTaskDefinition",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "EcsServices"
    actions   = ["ecs:CreateService", "ecs:UpdateService", "ecs:DeleteService", "ecs:TagResource"]
    resources = [local.wpfleet_services, "${local.wpfleet_arn_prefix}:ecs:${local.wpfleet_region}:${local.wpfleet_account}:task-definition/wp-*:*"]
  }
  # The relocation task: only its own task definitions, only on the one cluster; its tags
  # are set at launch.
  statement {
    sid       = "EcsRelocationTasks"
    actions   = ["ecs:RunTask"]
    resources = [local.wpfleet_relocate]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.wpfleet_cluster]
    }
  }
  statement {
    sid       = "EcsTagRelocationTasksAtLaunch"
    actions   = ["ecs:TagResource"]
    resources = [local.wpfleet_tasks]
    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask"]
    }
  }
  statement {
    sid     = "PassTaskRoles"
    actions = ["iam:PassRole"]
    resources = [
      aws_iam_role.wpfleet_task_execution.arn,
      aws_iam_role.wpfleet_task.arn,
      aws_iam_role.wpfleet_relocation.arn,
    ]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  # EFS: access points on the one file system; deletes only of what wpfleet made.
  statement {
    sid = "EfsAccessPoints"
    actions = [
      "elasticfilesystem:DescribeFileSystems",
      "elasticfilesystem:DescribeAccessPoints",
      "elasticfilesystem:CreateAccessPoint",
      "elasticfilesystem:TagResource",
    ]
    resources = [local.wpfleet_fs, local.wpfleet_aps]
  }
  statement {
    sid       = "EfsDeleteOwnAccessPoints"
    actions   = ["elasticfilesystem:DeleteAccessPoint"]
    resources = [local.wpfleet_aps]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/managed-by"
      values   = ["wpfleet"]
    }
  }

  # RDS: databases and snapshots named wp-*.
  statement {
    sid       = "RdsRead"
    actions   = ["rds:DescribeDBInstances", "rds:DescribeDBSnapshots"]
    resources = ["*"]
  }
  statement {
    sid = "RdsDatabases"
    actions = [
      "rds:CreateDBInstance",
      "rds:RestoreDBInstanceFromDBSnapshot",
      "rds:ModifyDBInstance",
      "rds:StartDBInstance",
      "rds:StopDBInstance",
      "rds:DeleteDBInstance",
      "rds:CreateDBSnapshot",
      "rds:AddTagsToResource",
    ]
    resources = [
      "${local.wpfleet_rds}:db:wp-*",
      "${local.wpfleet_rds}:snapshot:wp-*",
      "${local.wpfleet_rds}:subgrp:${var.wpfleet_db_subnet_group_name}",
      "${local.wpfleet_rds}:og:*",
      "${local.wpfleet_rds}:pg:*",
      "${local.wpfleet_arn_prefix}:ec2:${local.wpfleet_region}:${local.wpfleet_account}:security-group/*",
    ]
  }
  # What RDS does on the caller's behalf for ManageMasterUserPassword.
  statement {
    sid = "RdsManagedMasterSecrets"
    actions = [
      "secretsmanager:CreateSecret",
      "secretsmanager:TagResource",
      "secretsmanager:RotateSecret",
      "secretsmanager:DescribeSecret",
      "secretsmanager:DeleteSecret",
    ]
    resources = [local.wpfleet_rds_secret]
  }
  statement {
    sid       = "RdsManagedMasterSecretsKey"
    actions   = ["kms:DescribeKey"]
    resources = ["*"]
  }

  # CloudWatch Logs: groups under /wpfleet/.
  statement {
    sid       = "LogsRead"
    actions   = ["logs:DescribeLogGroups"]
    resources = ["*"]
  }
  statement {
    sid = "LogsGroups"
    actions = [
      "logs:CreateLogGroup",
      "logs:PutRetentionPolicy",
      "logs:DeleteLogGroup",
      "logs:TagResource",
      "logs:TagLogGroup",
      "logs:FilterLogEvents",
    ]
    resources = [local.wpfleet_logs, "${local.wpfleet_logs}:*"]
  }

  # AWS Backup: jobs into and out of the one vault.
  statement {
    sid = "BackupJobs"
    actions = [
      "backup:StartBackupJob",
      "backup:StartRestoreJob",
      "backup:ListTags",
      "backup:TagResource",
    ]
    resources = [local.wpfleet_vault, local.wpfleet_rps]
  }
  # Describing jobs has no resource-level permissions.
  statement {
    sid       = "BackupJobsRead"
    actions   = ["backup:DescribeBackupJob", "backup:DescribeRestoreJob"]
    resources = ["*"]
  }
  statement {
    sid       = "PassBackupRole"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.wpfleet_backup.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["backup.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "wpfleet_cloud" {
  name        = "wpfleet-cloud"
  description = "What the wpfleet controller does in ECS, EFS, RDS, AWS Backup and CloudWatch Logs."
  policy      = data.aws_iam_policy_document.wpfleet_cloud.json
}

resource "aws_iam_role_policy_attachment" "wpfleet_cloud" {
  count      = var.wpfleet_controller_role_name == "" ? 0 : 1
  role       = var.wpfleet_controller_role_name
  policy_arn = aws_iam_policy.wpfleet_cloud.arn
}

output "wpfleet_relocation_task_role_arn" {
  description = "The relocation task's role: serve --aws-relocation-task-role-arn <this> (WPFLEET_AWS_RELOCATION_TASK_ROLE_ARN)."
  value       = aws_iam_role.wpfleet_relocation.arn
}
