//! Settings of the AWS driver (`serve --cloud aws`): the shared infrastructure it runs
//! instances on (it never creates any of it), the IAM roles it hands to AWS, what each
//! instance runs, and the request budget. Every flag has a `WPFLEET_AWS_*` variable.
//!
//! Invariant: settings are validated before the driver starts; a bad value is an error at
//! start, never a failure at the first reconcile.

use std::time::Duration;

use super::budget::RateLimits;

/// CloudWatch Logs accepts only these retention periods (days).
pub const LOG_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Everything the driver needs to know about the account it works in.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// ECS cluster (name or ARN) the services run on.
    pub cluster: String,
    /// EFS file system holding every instance's directory (`fs-…`).
    pub file_system_id: String,
    /// Subnets of the tasks (awsvpc).
    pub subnets: Vec<String>,
    /// Security groups of the tasks.
    pub security_groups: Vec<String>,
    /// RDS DB subnet group; the account's default VPC when absent.
    pub db_subnet_group: Option<String>,
    /// Security groups of the databases (default: those of the tasks).
    pub db_security_groups: Vec<String>,
    /// AWS Backup vault for the file system's recovery points.
    pub backup_vault: String,
    /// The role AWS Backup assumes for backup and restore jobs.
    pub backup_role_arn: String,
    /// The role ECS uses to pull the image, read the DB secret and write logs.
    pub task_execution_role_arn: String,
    /// The role WordPress runs as (EFS IAM authorization).
    pub task_role_arn: String,
    /// Image of the relocation task (its entrypoint is `wpfleet`: the controller's own
    /// image), which moves a restore's files out of AWS Backup's recovery directory.
    pub relocation_image: String,
    /// The role the relocation task runs as: EFS client mount, write and root access on
    /// the file system (it mounts the file system root, not an access point).
    pub relocation_task_role_arn: String,
    /// Image repository of WordPress; instances run `{repository}:{tag}` where the tag
    /// comes from their spec (`6.5-php8.2-apache`).
    pub wordpress_image: String,
    /// Task size (Fargate units).
    pub task_cpu: String,
    pub task_memory: String,
    /// RDS engine and version (version: the engine's default when absent).
    pub db_engine: String,
    pub db_engine_version: Option<String>,
    /// The master user; its password is generated and kept by RDS in Secrets Manager
    /// (`ManageMasterUserPassword`), and tasks read it from there.
    pub db_master_username: String,
    /// KMS key of that secret (the account's `aws/secretsmanager` key when absent).
    pub db_secret_kms_key_id: Option<String>,
    /// Retention of each instance's log group.
    pub log_retention_days: u32,
    /// Client-side request budget.
    pub rate_limits: RateLimits,
    /// Upper bound of `poll_interval` (tests shorten it; AWS's own pace is the default).
    pub max_poll_interval: Duration,
    /// How often every DB instance and snapshot is listed to find the ones of data epochs
    /// this process did not create itself (other replicas, before a restart).
    pub discovery_interval: Duration,
    /// Endpoint for every service (a local AWS-compatible server); the SDK's own
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables work too.
    pub endpoint_url: Option<String>,
    /// Region; otherwise the SDK's usual chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
}

impl AwsSettings {
    /// Settings with these required values and every default (tests, examples).
    pub fn new(cluster: &str, file_system_id: &str, subnets: &[&str], groups: &[&str]) -> Self {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Self {
            cluster: cluster.to_owned(),
            file_system_id: file_system_id.to_owned(),
            subnets: owned(subnets),
            security_groups: owned(groups),
            db_subnet_group: None,
            db_security_groups: owned(groups),
            backup_vault: "wpfleet".into(),
            backup_role_arn: "arn:aws:iam::123456789012:role/wpfleet-backup".into(),
            task_execution_role_arn: "arn:aws:iam::123456789012:role/wpfleet-task-execution".into(),
            task_role_arn: "arn:aws:iam::123456789012:role/wpfleet-task".into(),
            relocation_image: "wpfleet".into(),
            relocation_task_role_arn: "arn:aws:iam::123456789012:role/wpfleet-relocation".into(),
            wordpress_image: "wordpress".into(),
            task_cpu: "512".into(),
            task_memory: "1024".into(),
            db_engine: "mysql".into(),
            db_engine_version: None,
            db_master_username: "wordpress".into(),
            db_secret_kms_key_id: None,
            log_retention_days: 30,
            rate_limits: RateLimits::default(),
            max_poll_interval: Duration::from_secs(30),
            discovery_interval: Duration::from_secs(600),
            endpoint_url: None,
            region: None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let required = [
            ("--aws-cluster", &self.cluster),
            ("--aws-file-system-id", &self.file_system_id),
            ("--aws-backup-vault", &self.backup_vault),
            ("--aws-backup-role-arn", &self.backup_role_arn),
            (
                "--aws-task-execution-role-arn",
                &self.task_execution_role_arn,
            ),
            ("--aws-task-role-arn", &self.task_role_arn),
            ("--aws-relocation-image", &self.relocation_image),
            (
                "--aws-relocation-task-role-arn",
                &self.relocation_task_role_arn,
            ),
            ("--aws-wordpress-image", &self.wordpress_image),
            ("--aws-db-master-username", &self.db_master_username),
        ];
        for (flag, value) in required {
            if value.trim().is_empty() {
                return Err(format!("{flag} must not be empty"));
            }
        }
        if self.subnets.is_empty() || self.security_groups.is_empty() {
            return Err("--aws-subnets and --aws-security-groups need at least one id".into());
        }
        if !self.file_system_id.starts_with("fs-") {
            return Err(format!(
                "--aws-file-system-id: `{}` is not an EFS file system id (fs-…)",
                self.file_system_id
            ));
        }
        if !LOG_RETENTION_DAYS.contains(&self.log_retention_days) {
            return Err(format!(
                "--aws-log-retention-days: CloudWatch Logs accepts only {LOG_RETENTION_DAYS:?}"
            ));
        }
        // `host:port/repo` is fine; a tag on the last path segment is not.
        let last_segment = self.wordpress_image.rsplit('/').next().unwrap_or_default();
        if last_segment.contains(':') {
            return Err(
                "--aws-wordpress-image is a repository without a tag (the spec picks the tag)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The `serve` flags of the AWS driver.
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// ECS cluster the WordPress services run on (with --cloud aws).
    #[arg(long, env = "WPFLEET_AWS_CLUSTER", required_if_eq("cloud", "aws"))]
    pub aws_cluster: Option<String>,
    /// EFS file system (fs-…) holding every instance's directory.
    #[arg(
        long,
        env = "WPFLEET_AWS_FILE_SYSTEM_ID",
        required_if_eq("cloud", "aws")
    )]
    pub aws_file_system_id: Option<String>,
    /// Subnets of the tasks, comma-separated.
    #[arg(
        long,
        env = "WPFLEET_AWS_SUBNETS",
        value_delimiter = ',',
        required_if_eq("cloud", "aws")
    )]
    pub aws_subnets: Vec<String>,
    /// Security groups of the tasks, comma-separated.
    #[arg(
        long,
        env = "WPFLEET_AWS_SECURITY_GROUPS",
        value_delimiter = ',',
        required_if_eq("cloud", "aws")
    )]
    pub aws_security_groups: Vec<String>,
    /// RDS DB subnet group of the databases (default: the default VPC's).
    #[arg(long, env = "WPFLEET_AWS_DB_SUBNET_GROUP")]
    pub aws_db_subnet_group: Option<String>,
    /// Security groups of the databases, comma-separated (default: the tasks').
    #[arg(long, env = "WPFLEET_AWS_DB_SECURITY_GROUPS", value_delimiter = ',')]
    pub aws_db_security_groups: Vec<String>,
    /// AWS Backup vault for the file system's recovery points.
    #[arg(long, env = "WPFLEET_AWS_BACKUP_VAULT", required_if_eq("cloud", "aws"))]
    pub aws_backup_vault: Option<String>,
    /// IAM role AWS Backup assumes for backup and restore jobs.
    #[arg(
        long,
        env = "WPFLEET_AWS_BACKUP_ROLE_ARN",
        required_if_eq("cloud", "aws")
    )]
    pub aws_backup_role_arn: Option<String>,
    /// IAM role ECS uses to start tasks (image pull, DB secret, logs).
    #[arg(
        long,
        env = "WPFLEET_AWS_TASK_EXECUTION_ROLE_ARN",
        required_if_eq("cloud", "aws")
    )]
    pub aws_task_execution_role_arn: Option<String>,
    /// IAM role the WordPress tasks run as (EFS access).
    #[arg(
        long,
        env = "WPFLEET_AWS_TASK_ROLE_ARN",
        required_if_eq("cloud", "aws")
    )]
    pub aws_task_role_arn: Option<String>,
    /// Image of the task that moves restored files into place after an AWS Backup restore
    /// (the controller's own image: its entrypoint is `wpfleet`).
    #[arg(
        long,
        env = "WPFLEET_AWS_RELOCATION_IMAGE",
        required_if_eq("cloud", "aws")
    )]
    pub aws_relocation_image: Option<String>,
    /// IAM role that task runs as (EFS client mount, write and root access).
    #[arg(
        long,
        env = "WPFLEET_AWS_RELOCATION_TASK_ROLE_ARN",
        required_if_eq("cloud", "aws")
    )]
    pub aws_relocation_task_role_arn: Option<String>,
    /// WordPress image repository; the tag comes from each instance's versions.
    #[arg(long, env = "WPFLEET_AWS_WORDPRESS_IMAGE", default_value = "wordpress")]
    pub aws_wordpress_image: String,
    /// Fargate CPU units of a task.
    #[arg(long, env = "WPFLEET_AWS_TASK_CPU", default_value = "512")]
    pub aws_task_cpu: String,
    /// Fargate memory (MiB) of a task.
    #[arg(long, env = "WPFLEET_AWS_TASK_MEMORY", default_value = "1024")]
    pub aws_task_memory: String,
    /// RDS engine of the databases.
    #[arg(long, env = "WPFLEET_AWS_DB_ENGINE", default_value = "mysql")]
    pub aws_db_engine: String,
    /// RDS engine version (default: the engine's default).
    #[arg(long, env = "WPFLEET_AWS_DB_ENGINE_VERSION")]
    pub aws_db_engine_version: Option<String>,
    /// Master user of each database; RDS generates its password and keeps it in Secrets
    /// Manager (ManageMasterUserPassword), where the tasks read it.
    #[arg(
        long,
        env = "WPFLEET_AWS_DB_MASTER_USERNAME",
        default_value = "wordpress"
    )]
    pub aws_db_master_username: String,
    /// KMS key for the RDS-managed master password secret (default: aws/secretsmanager).
    #[arg(long, env = "WPFLEET_AWS_DB_SECRET_KMS_KEY_ID")]
    pub aws_db_secret_kms_key_id: Option<String>,
    /// Retention of each instance's CloudWatch log group, in days.
    #[arg(long, env = "WPFLEET_AWS_LOG_RETENTION_DAYS", default_value_t = 30)]
    pub aws_log_retention_days: u32,
    /// Client-side request budget overrides: `service[:Operation]=rate[/burst]`, comma-separated.
    #[arg(long, env = "WPFLEET_AWS_RATE_LIMITS", default_value = "")]
    pub aws_rate_limits: String,
    /// Longest wait between two looks at something in progress.
    #[arg(long, env = "WPFLEET_AWS_MAX_POLL_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub aws_max_poll_interval: Duration,
    /// How often all DB instances and snapshots are listed to find other data epochs.
    #[arg(long, env = "WPFLEET_AWS_DISCOVERY_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub aws_discovery_interval: Duration,
    /// Endpoint URL for every AWS service (a local AWS-compatible server).
    #[arg(long, env = "WPFLEET_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// AWS region (default: the SDK's chain, e.g. AWS_REGION).
    #[arg(long, env = "WPFLEET_AWS_REGION")]
    pub aws_region: Option<String>,
}

impl AwsArgs {
    /// Validated settings; only meaningful with `--cloud aws` (which makes the required
    /// flags required).
    pub fn into_settings(self) -> Result<AwsSettings, String> {
        let db_security_groups = if self.aws_db_security_groups.is_empty() {
            self.aws_security_groups.clone()
        } else {
            self.aws_db_security_groups
        };
        let settings = AwsSettings {
            cluster: self.aws_cluster.unwrap_or_default(),
            file_system_id: self.aws_file_system_id.unwrap_or_default(),
            subnets: self.aws_subnets,
            security_groups: self.aws_security_groups,
            db_subnet_group: self.aws_db_subnet_group,
            db_security_groups,
            backup_vault: self.aws_backup_vault.unwrap_or_default(),
            backup_role_arn: self.aws_backup_role_arn.unwrap_or_default(),
            task_execution_role_arn: self.aws_task_execution_role_arn.unwrap_or_default(),
            task_role_arn: self.aws_task_role_arn.unwrap_or_default(),
            relocation_image: self.aws_relocation_image.unwrap_or_default(),
            relocation_task_role_arn: self.aws_relocation_task_role_arn.unwrap_or_default(),
            wordpress_image: self.aws_wordpress_image,
            task_cpu: self.aws_task_cpu,
            task_memory: self.aws_task_memory,
            db_engine: self.aws_db_engine,
            db_engine_version: self.aws_db_engine_version,
            db_master_username: self.aws_db_master_username,
            db_secret_kms_key_id: self.aws_db_secret_kms_key_id,
            log_retention_days: self.aws_log_retention_days,
            rate_limits: RateLimits::parse(&self.aws_rate_limits)
                .map_err(|e| format!("--aws-rate-limits: {e}"))?,
            max_poll_interval: self.aws_max_poll_interval,
            discovery_interval: self.aws_discovery_interval,
            endpoint_url: self.aws_endpoint_url,
            region: self.aws_region,
        };
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> AwsSettings {
        AwsSettings::new("wp", "fs-0123", &["subnet-1"], &["sg-1"])
    }

    #[test]
    fn defaults_are_valid() {
        ok().validate().unwrap();
    }

    #[test]
    fn bad_settings_say_which_flag() {
        type Breaker = fn(&mut AwsSettings);
        let cases: [(Breaker, &str); 8] = [
            (|s| s.cluster.clear(), "--aws-cluster"),
            (
                |s| s.file_system_id = "vol-1".into(),
                "--aws-file-system-id",
            ),
            (|s| s.subnets.clear(), "--aws-subnets"),
            (|s| s.log_retention_days = 31, "--aws-log-retention-days"),
            (
                |s| s.wordpress_image = "ecr.example/wordpress:6".into(),
                "--aws-wordpress-image",
            ),
            (|s| s.task_role_arn = " ".into(), "--aws-task-role-arn"),
            (|s| s.relocation_image.clear(), "--aws-relocation-image"),
            (
                |s| s.relocation_task_role_arn.clear(),
                "--aws-relocation-task-role-arn",
            ),
        ];
        for (break_it, flag) in cases {
            let mut s = ok();
            break_it(&mut s);
            let err = s.validate().unwrap_err();
            assert!(err.contains(flag), "{err}");
        }
    }
}
