//! The kubectl-style client: `wpfleet apply`, `get`, `describe`, `scale`, … talk to a
//! running `wpfleet serve` over its HTTP API.
//!
//! # Layout
//! * `mod.rs`: the commands and their flags (clap), and [`run`].
//! * `commands`: one function per command; each reads, calls the API, prints.
//! * `client`: the HTTP client (base URL, bearer token, typed errors).
//! * `manifest`: `apply -f` files: YAML/JSON parsing and validation with the model's rules.
//! * `diff`: what `apply --dry-run` would change.
//! * `describe`: the human-readable page of one instance.
//! * `resource`: a lenient read-only view of the server's replies; readiness lives here.
//! * `output`: tables, ages, JSON/YAML, the one-line error.
//! * `wait`: `--wait` polling.
//!
//! Exit codes: 0 success; 1 the command failed (one `error: …` line on stderr); 2 bad usage
//! (clap); 3 a `--wait` ended with something failed or not ready in time.

mod client;
mod commands;
mod describe;
mod diff;
mod manifest;
mod output;
mod resource;
mod wait;

#[cfg(test)]
mod examples_tests;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::model::{InstanceId, InstanceKey, TenantId};
pub use client::DEFAULT_SERVER;

/// The command failed: the request was refused, the server was unreachable, input was bad.
pub const EXIT_ERROR: u8 = 1;
/// A `--wait` ended with an instance (or backup, restore, reconcile) failed or not done in
/// time; what was requested was accepted.
pub const EXIT_NOT_READY: u8 = 3;

/// The exit-code paragraph of `--help`, as a literal so `concat!` can use it.
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 success, 1 error, 2 bad usage, \
         3 --wait ended with something failed or not ready in time."
    };
}

const WAIT_HELP: &str = exit_codes!();

/// The client commands. `main` flattens these into its own subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Create or update instances from manifest files (YAML or JSON).
    #[command(after_help = APPLY_HELP)]
    Apply(ApplyArgs),
    /// List instances (all tenants, one tenant) or show one.
    #[command(after_help = GET_HELP)]
    Get(GetArgs),
    /// Show one instance in detail: spec, status, conditions, tasks, events.
    Describe(InstanceArgs),
    /// Set the number of tasks of an instance.
    #[command(after_help = WAIT_HELP)]
    Scale(ScaleArgs),
    /// Suspend an instance: stop its tasks and database, keep its data.
    #[command(after_help = WAIT_HELP)]
    Suspend(ChangeArgs),
    /// Resume a suspended instance.
    #[command(after_help = WAIT_HELP)]
    Resume(ChangeArgs),
    /// Back up an instance (EFS recovery point and RDS snapshot); prints the backup id.
    #[command(after_help = WAIT_HELP)]
    Backup(BackupArgs),
    /// List the backups of an instance.
    Backups(InstanceArgs),
    /// Restore an instance from one of its backups.
    #[command(after_help = WAIT_HELP)]
    Restore(RestoreArgs),
    /// Print an instance's logs: `timestamp logStream message`.
    Logs(LogsArgs),
    /// Show the last events of an instance: what the reconciler decided and did.
    Events(EventsArgs),
    /// Exit 0 if the server is alive (`/healthz`; with `--ready`, `/readyz`), else 1: the
    /// container health check (the runtime image has no shell or curl).
    Healthcheck(HealthcheckArgs),
    /// Delete an instance (ordered teardown; the final snapshot is kept).
    Delete(InstanceArgs),
    /// Ask the controller to reconcile now instead of at the next resync.
    #[command(after_help = RECONCILE_HELP)]
    ReconcileNow(ReconcileArgs),
}

const APPLY_HELP: &str = concat!(
    "Examples:
  wpfleet apply -f desired_state/             every *.yaml, *.yml, *.json in name order
  wpfleet apply -f blog.yaml -f shop.yaml --wait
  wpfleet apply -f desired_state/ --dry-run   show what would change, change nothing
  cat blog.yaml | wpfleet apply -f -

Every document is validated before anything is sent. Each instance prints one line:
  instance acme/blog created | configured | unchanged

",
    exit_codes!()
);

const GET_HELP: &str = "Examples:
  wpfleet get                  every instance of every tenant
  wpfleet get acme             the instances of tenant acme
  wpfleet get acme blog -o yaml";

const RECONCILE_HELP: &str = concat!(
    "Examples:
  wpfleet reconcile-now acme blog --wait
  wpfleet reconcile-now --tenant acme
  wpfleet reconcile-now --all --wait

",
    exit_codes!()
);

/// Where the API is and how to authenticate; on every client command.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// URL of the wpfleet API (`wpfleet serve`); empty means the default.
    #[arg(long, env = "WPFLEET_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,

    /// Bearer token sent as `Authorization: Bearer <token>`.
    #[arg(
        long,
        env = "WPFLEET_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// How long a `--wait` may take.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Wait until done (instances ready, backup or restore finished), printing progress.
    #[arg(long)]
    pub wait: bool,

    /// Give up waiting after this long (e.g. 90s, 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = output::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// `TENANT ID`.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Tenant id.
    #[arg(value_name = "TENANT", value_parser = parse_tenant)]
    pub tenant: TenantId,

    /// Instance id.
    #[arg(value_name = "ID", value_parser = parse_instance)]
    pub id: InstanceId,
}

impl Target {
    pub fn key(&self) -> InstanceKey {
        InstanceKey::new(self.tenant.clone(), self.id.clone())
    }
}

#[derive(Debug, Clone, Args)]
pub struct InstanceArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub conn: Connection,
}

/// A change whose result can be waited for (instance ready again).
#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// A manifest file, a directory of them (not recursive), or `-` for stdin. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR",
        required = true
    )]
    pub files: Vec<PathBuf>,

    /// Show what would change (a diff of spec fields) without changing anything.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,

    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Only this tenant's instances.
    #[arg(value_name = "TENANT", value_parser = parse_tenant)]
    pub tenant: Option<TenantId>,

    /// Only this instance (needs TENANT).
    #[arg(value_name = "ID", value_parser = parse_instance)]
    pub id: Option<InstanceId>,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Check readiness (`/readyz`: the store answers, shards are held) instead of liveness.
    #[arg(long)]
    pub ready: bool,

    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub target: Target,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub target: Target,

    /// The number of tasks wanted (2–10, and at most the tier's limit).
    #[arg(value_name = "N")]
    pub count: u32,

    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub target: Target,

    /// The backup to restore from (see `wpfleet backups`).
    #[arg(value_name = "BACKUP_ID", value_parser = parse_backup_id)]
    pub backup_id: String,

    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: Target,

    /// Only events of the last DURATION (e.g. 15m, 1h, 2d).
    #[arg(long, value_parser = output::parse_duration, value_name = "DURATION",
          conflicts_with_all = ["start", "end"])]
    pub since: Option<Duration>,

    /// Only events at or after this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub start: Option<String>,

    /// Only events before this time (RFC 3339).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub end: Option<String>,

    /// Print at most N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    #[command(flatten)]
    pub conn: Connection,
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("scope").required(true).args(["tenant", "for_tenant", "all"]))]
pub struct ReconcileArgs {
    /// Tenant of the one instance to reconcile.
    #[arg(value_name = "TENANT", value_parser = parse_tenant, requires = "id")]
    pub tenant: Option<TenantId>,

    /// The one instance to reconcile.
    #[arg(value_name = "ID", value_parser = parse_instance, requires = "tenant")]
    pub id: Option<InstanceId>,

    /// Reconcile every instance of this tenant.
    #[arg(long = "tenant", value_name = "TENANT", value_parser = parse_tenant)]
    pub for_tenant: Option<TenantId>,

    /// Reconcile every instance of every tenant.
    #[arg(long)]
    pub all: bool,

    /// Wait until every affected instance has handled the request.
    #[arg(long)]
    pub wait: bool,

    /// Give up waiting after this long.
    #[arg(long, default_value = "10m", value_parser = output::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,

    #[command(flatten)]
    pub conn: Connection,
}

fn parse_tenant(s: &str) -> Result<TenantId, String> {
    TenantId::parse(s).map_err(|e| e.to_string())
}

fn parse_instance(s: &str) -> Result<InstanceId, String> {
    InstanceId::parse(s).map_err(|e| e.to_string())
}

/// Backup ids are the server's; only refuse what could never be one.
fn parse_backup_id(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be a backup id as `wpfleet backups` prints it".into());
    }
    Ok(s.to_owned())
}

/// RFC 3339, normalized to UTC with milliseconds as the API writes times.
fn parse_time(s: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| output::rfc3339(t.with_timezone(&chrono::Utc)))
        .map_err(|e| format!("{e} (use RFC 3339, e.g. 2026-11-25T10:00:00Z)"))
}

/// Runs one client command. Failures are printed here as one `error: …` line on stderr
/// and become the exit code, so the caller only has to exit with it.
pub async fn run(cmd: CliCommand) -> anyhow::Result<ExitCode> {
    match commands::dispatch(cmd).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            output::eprint(&output::error_line(&e));
            let code = if e.downcast_ref::<wait::NotReady>().is_some() {
                EXIT_NOT_READY
            } else {
                EXIT_ERROR
            };
            Ok(ExitCode::from(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: CliCommand,
    }

    fn parse(args: &[&str]) -> Result<CliCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("wpfleet").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn the_command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn ids_are_checked_before_any_request() {
        assert!(parse(&["describe", "acme", "blog"]).is_ok());
        let e = parse(&["describe", "Acme", "blog"]).unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
        assert!(parse(&["describe", "acme", "../x"]).is_err());
    }

    #[test]
    fn reconcile_now_needs_exactly_one_scope() {
        assert!(parse(&["reconcile-now", "acme", "blog"]).is_ok());
        assert!(parse(&["reconcile-now", "--tenant", "acme", "--wait"]).is_ok());
        assert!(parse(&["reconcile-now", "--all"]).is_ok());
        assert!(parse(&["reconcile-now"]).is_err());
        assert!(
            parse(&["reconcile-now", "acme"]).is_err(),
            "ID is needed too"
        );
        assert!(parse(&["reconcile-now", "--all", "--tenant", "acme"]).is_err());
        assert!(parse(&["reconcile-now", "acme", "blog", "--all"]).is_err());
    }

    #[test]
    fn apply_flags() {
        let Ok(CliCommand::Apply(a)) = parse(&[
            "apply",
            "-f",
            "a.yaml",
            "-f",
            "dir",
            "--wait",
            "--timeout",
            "90s",
        ]) else {
            panic!("apply parses");
        };
        assert_eq!(a.files, [PathBuf::from("a.yaml"), PathBuf::from("dir")]);
        assert!(a.wait.wait);
        assert_eq!(a.wait.timeout, Duration::from_secs(90));
        assert!(parse(&["apply"]).is_err(), "-f is required");
        assert!(parse(&["apply", "-f", "x", "--dry-run", "--wait"]).is_err());
        assert!(parse(&["apply", "-f", "x", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn logs_take_since_or_a_window() {
        let Ok(CliCommand::Logs(l)) = parse(&[
            "logs",
            "acme",
            "blog",
            "--start",
            "2026-11-25T11:00:00+01:00",
        ]) else {
            panic!("logs parses");
        };
        assert_eq!(l.start.as_deref(), Some("2026-11-25T10:00:00.000Z"));
        assert!(
            parse(&[
                "logs",
                "acme",
                "blog",
                "--since",
                "1h",
                "--start",
                "2026-11-25T10:00:00Z"
            ])
            .is_err()
        );
        assert!(parse(&["logs", "acme", "blog", "--start", "yesterday"]).is_err());
        assert!(parse(&["logs", "acme", "blog", "--limit", "0"]).is_err());
    }

    #[test]
    fn connection_defaults() {
        let Ok(CliCommand::Get(g)) = parse(&["get", "--server", "http://h:1"]) else {
            panic!("get parses");
        };
        assert_eq!(g.conn.server, "http://h:1");
        assert_eq!(g.output, OutputFormat::Table);
    }
}
