//! `wpfleet`: the command line. `serve` runs the API and the reconciler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wpfleet::api::auth::{Auth, Verifier, dev_claims};
use wpfleet::reconcile::ShardSettings;
use wpfleet::server::{self, AuthSettings, CloudChoice, ServeConfig, SimCloudConfig, StoreChoice};
use wpfleet::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "wpfleet",
    version,
    about = "A desired-state controller for hosted WordPress instances",
    long_about = "wpfleet records the desired state of WordPress instances (ECS service, EFS \
                  access point, RDS database, CloudWatch log group) and runs a reconciler that \
                  converges the cloud towards it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the reconciler (embedded store + simulated cloud by default).
    Serve(Box<ServeArgs>),
    /// Print a development token signed with an HS256 secret (the one `serve` uses).
    Token(TokenArgs),
    /// Serve a simulated cloud over HTTP for several `serve --cloud sim-remote` replicas.
    SimCloud(SimCloudArgs),
    /// Manage the desired-state store (`store init` creates the DynamoDB table).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run a benchmark (simulated cloud, default rate limits); prints its ratio last.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the API's OpenAPI 3.1 document (what `GET /openapi.json` serves), or with
    /// `--markdown` the reference in docs/API.md.
    Openapi(OpenapiArgs),
    /// Move a restore's recovered files into place (what the AWS driver's relocation task
    /// runs, with the EFS file system root mounted; docs/AWS.md).
    RelocateRestore(wpfleet::cloud::relocate::RelocateArgs),
    #[command(flatten)]
    Client(wpfleet::cli::CliCommand),
}

#[derive(Debug, clap::Args)]
struct OpenapiArgs {
    /// Print the Markdown reference instead of the JSON document.
    #[arg(long)]
    markdown: bool,
}

#[derive(Debug, clap::Args)]
struct SimCloudArgs {
    /// Address to listen on (no authentication: keep it on loopback).
    #[arg(long, env = "WPFLEET_SIM_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Directory of the simulated cloud's inventory (`sim-cloud.redb`).
    #[arg(long, env = "WPFLEET_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Divides every simulated duration.
    #[arg(long, env = "WPFLEET_SIM_SPEED", default_value_t = 1.0)]
    sim_speed: f64,
    /// Log format.
    #[arg(long, env = "WPFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Create the DynamoDB table with its indexes and TTL (standard AWS configuration:
    /// region, credentials, `AWS_ENDPOINT_URL` for a local endpoint). An existing table
    /// with the right shape is fine, so this can run on every deploy.
    Init(StoreInitArgs),
}

#[derive(Debug, clap::Args)]
struct StoreInitArgs {
    /// Table name.
    #[arg(long, env = "WPFLEET_TABLE", default_value = "wpfleet")]
    table: String,
}

/// `--store`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// `wpfleet.redb` in the data dir (one process).
    Embedded,
    /// A DynamoDB table (`--table`), shared by several replicas; implies shard leasing.
    Dynamodb,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// N instances created at once: wall time to all ACTIVE / the rate-limit lower bound.
    Converge(BenchArgs),
    /// One full resync of N converged instances: cloud calls per instance.
    Resync(BenchArgs),
    /// PUTs spread over time: p50/p99 from PUT reply to the first mutating cloud call.
    Latency(LatencyBenchArgs),
    /// PUT throughput through HTTP versus raw Store writes.
    Api(ApiBenchArgs),
    /// RSS with N converged instances tracked and resyncing.
    Memory(MemoryBenchArgs),
}

#[derive(Debug, clap::Args)]
struct LatencyBenchArgs {
    /// How many PUTs.
    #[arg(long, default_value_t = 1000)]
    puts: usize,
    /// Mean PUTs per second (Poisson arrivals). Each PUT's pass describes RDS twice and
    /// RDS admits 10 calls/s, so above ~4/s the PUTs alone exhaust the RDS budget.
    #[arg(long, default_value_t = 2.0)]
    rate: f64,
    /// Converged instances the PUTs go to, round robin.
    #[arg(long, default_value_t = 200)]
    fleet: usize,
    /// Divides simulated durations (rate limits stay as they are).
    #[arg(long, default_value_t = 100.0)]
    sim_speed: f64,
}

#[derive(Debug, clap::Args)]
struct ApiBenchArgs {
    /// Creates each way.
    #[arg(long, short = 'n', default_value_t = 2000)]
    instances: usize,
    /// Requests (and store writes) in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Debug, clap::Args)]
struct MemoryBenchArgs {
    /// How many instances.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    instances: usize,
    /// How long to watch the resync after every instance is tracked.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    watch: Duration,
    /// Divides simulated durations (rate limits stay as they are).
    #[arg(long, default_value_t = 100.0)]
    sim_speed: f64,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// How many instances.
    #[arg(long, short = 'n', default_value_t = 5000)]
    instances: usize,
    /// Divides simulated durations (rate limits stay as they are).
    #[arg(long, default_value_t = 100.0)]
    sim_speed: f64,
    /// Most reconcile passes in flight (as `serve --workers`).
    #[arg(long, default_value_t = 16)]
    workers: usize,
}

/// `--cloud`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CloudKind {
    /// The simulated cloud in this process (persisted in the data dir).
    Sim,
    /// A simulated cloud served by `wpfleet sim-cloud` (see `--sim-url`).
    SimRemote,
    /// AWS through the official SDK (see the `--aws-*` flags and docs/AWS.md).
    Aws,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The secret `serve` was started with (`--jwt-secret` / `WPFLEET_JWT_SECRET`).
    #[arg(long, env = "WPFLEET_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// The tenant the token's user belongs to (`custom:tenant_id`).
    #[arg(long, required_unless_present = "operator")]
    tenant: Option<String>,
    /// Put the user in `platform-operators` (every tenant, operator-only routes).
    #[arg(long)]
    operator: bool,
    /// The subject (`sub`).
    #[arg(long, default_value = "dev-user")]
    subject: String,
    /// How long the token is valid (e.g. 1h, 7d).
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address the API listens on.
    #[arg(long, env = "WPFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Directory of the embedded store and the simulated cloud's inventory.
    #[arg(long, env = "WPFLEET_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// Where desired state lives. `dynamodb` lets several replicas share it and turns on
    /// shard leasing.
    #[arg(long, env = "WPFLEET_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,

    /// DynamoDB table, with `--store dynamodb` (create it with `wpfleet store init`).
    #[arg(long, env = "WPFLEET_TABLE", default_value = "wpfleet")]
    table: String,

    /// Most reconcile passes running at once.
    #[arg(long, env = "WPFLEET_WORKERS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: u16,

    /// How often every instance is checked for drift even without a change (e.g. 30s, 5m).
    #[arg(long, env = "WPFLEET_RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    resync_interval: Duration,

    /// Divides every simulated cloud duration: 1 is realistic (RDS takes ~4 minutes to
    /// create), 20 makes a demo take seconds.
    #[arg(long, env = "WPFLEET_SIM_SPEED", default_value_t = 1.0)]
    sim_speed: f64,

    /// Days a deleted instance's record is kept (as DEPROVISIONED) before it is purged.
    #[arg(long, env = "WPFLEET_RETENTION_DAYS", default_value_t = 30)]
    retention_days: u32,

    /// Log format.
    #[arg(long, env = "WPFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,

    /// HS256 secret for bearer tokens (development). Without it (and without --jwks) a
    /// random one is generated and an operator token is printed at start.
    #[arg(
        long,
        env = "WPFLEET_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwks"
    )]
    jwt_secret: Option<String>,

    /// RS256 key set for bearer tokens (production): a JWKS file or an https URL, such as
    /// a Cognito user pool's `…/.well-known/jwks.json`.
    #[arg(long, env = "WPFLEET_JWKS")]
    jwks: Option<String>,

    /// Required `iss` claim, if set.
    #[arg(long, env = "WPFLEET_JWT_ISSUER")]
    jwt_issuer: Option<String>,

    /// Required `aud` claim, if set.
    #[arg(long, env = "WPFLEET_JWT_AUDIENCE")]
    jwt_audience: Option<String>,

    /// The cloud to reconcile against.
    #[arg(long, env = "WPFLEET_CLOUD", value_enum, default_value_t = CloudKind::Sim)]
    cloud: CloudKind,

    /// URL of `wpfleet sim-cloud`, with `--cloud sim-remote`.
    #[arg(long, env = "WPFLEET_SIM_URL", required_if_eq("cloud", "sim-remote"))]
    sim_url: Option<String>,

    /// Lease shards of instances among replicas (needed when several replicas share a
    /// store). This replica's name in the leases; default: host name and process id.
    #[arg(long, env = "WPFLEET_REPLICA_ID")]
    replica_id: Option<String>,

    /// Take part in shard leasing even without `--replica-id`.
    #[arg(long, env = "WPFLEET_LEASE_SHARDS")]
    lease_shards: bool,

    /// How long a shard lease lasts without renewal; a dead replica's shards are taken
    /// over after about this long.
    #[arg(long, env = "WPFLEET_LEASE_TTL", default_value = "15s", value_parser = parse_duration)]
    lease_ttl: Duration,

    /// An instance not converged for longer than this counts as stuck
    /// (`wpfleet_instances_stuck`, the stuck alert).
    #[arg(long, env = "WPFLEET_STUCK_AFTER", default_value = "15m", value_parser = parse_duration)]
    stuck_after: Duration,

    /// How often the pending index is polled for work written through other replicas.
    #[arg(long, env = "WPFLEET_PENDING_POLL", default_value = "1s", value_parser = parse_duration)]
    pending_poll: Duration,

    /// The AWS driver's settings (with `--cloud aws`).
    #[command(flatten)]
    aws: wpfleet::cloud::aws::AwsArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 30s, 5m, 1h)"))?;
    if d < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wpfleet: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Token(args) => token(args).map(|()| ExitCode::SUCCESS),
            Command::SimCloud(args) => sim_cloud(args).await.map(|()| ExitCode::SUCCESS),
            Command::Store(StoreCommand::Init(args)) => {
                store_init(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Bench(which) => bench(which).await.map(|()| ExitCode::SUCCESS),
            Command::Openapi(args) => {
                openapi(args);
                Ok(ExitCode::SUCCESS)
            }
            Command::RelocateRestore(args) => Ok(wpfleet::cloud::relocate::run(args)),
            Command::Client(cmd) => wpfleet::cli::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wpfleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let config = ServeConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        workers: usize::from(args.workers),
        resync_interval: args.resync_interval,
        sim_speed: args.sim_speed,
        retention_days: args.retention_days,
        auth: AuthSettings {
            jwt_secret: args.jwt_secret,
            jwks: args.jwks,
            issuer: args.jwt_issuer,
            audience: args.jwt_audience,
        },
        cloud: match (args.cloud, args.sim_url) {
            (CloudKind::SimRemote, Some(url)) => CloudChoice::SimRemote { url },
            (CloudKind::Aws, _) => CloudChoice::Aws(Box::new(
                args.aws.into_settings().map_err(anyhow::Error::msg)?,
            )),
            _ => CloudChoice::Sim,
        },
        store: match args.store {
            StoreKind::Embedded => StoreChoice::Embedded,
            StoreKind::Dynamodb => StoreChoice::DynamoDb {
                table: args.table.clone(),
            },
        },
        // A shared store means other replicas may be running: lease, never assume.
        shards: (args.lease_shards
            || args.replica_id.is_some()
            || args.store == StoreKind::Dynamodb)
            .then(|| {
                let mut settings =
                    ShardSettings::new(args.replica_id.unwrap_or_else(default_replica_id));
                settings.lease_ttl = args.lease_ttl;
                settings.pending_poll = args.pending_poll;
                settings
            }),
        stuck_after: args.stuck_after,
        ..ServeConfig::default()
    };
    let running = server::start(config.clone()).await?;
    println!("wpfleet is serving on {}", running.url());
    let cloud = match &config.cloud {
        CloudChoice::Sim => format!("simulated (speed x{})", config.sim_speed),
        CloudChoice::SimRemote { url } => format!("simulated, served by {url}"),
        CloudChoice::Aws(aws) => format!(
            "AWS (cluster {}, file system {})",
            aws.cluster, aws.file_system_id
        ),
    };
    let store = match &config.store {
        StoreChoice::Embedded => format!("embedded ({})", config.data_dir.display()),
        StoreChoice::DynamoDb { table } => format!("DynamoDB table {table}"),
    };
    println!("  store: {store}, cloud: {cloud}");
    if let Some(shards) = &config.shards {
        println!("  replica: {} (leasing shards)", shards.replica_id);
    }
    if let Some(token) = &running.dev_token {
        println!("  development operator token (valid 24h):");
        println!("  export WPFLEET_TOKEN={token}");
        println!(
            "  try:   curl -H \"Authorization: Bearer $WPFLEET_TOKEN\" {}/v1.0/tenants/t1/instances",
            running.url()
        );
    }
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing passes in flight");
        token.cancel();
    });
    running.wait().await;
    Ok(())
}

/// `host-pid`: unique per process, recognisable in leases and logs.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".into());
    format!("{host}-{}", std::process::id())
}

async fn sim_cloud(args: SimCloudArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let running = server::start_sim_cloud(SimCloudConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        sim_speed: args.sim_speed,
    })
    .await?;
    println!("wpfleet sim-cloud is serving on {}", running.url());
    println!(
        "  replicas: wpfleet serve --cloud sim-remote --sim-url {}",
        running.url()
    );
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        token.cancel();
    });
    running.wait().await;
    Ok(())
}

async fn store_init(args: StoreInitArgs) -> anyhow::Result<()> {
    use wpfleet::store::{DynamoStore, TableCreated};
    let created = DynamoStore::init(&args.table).await?;
    match created {
        TableCreated::New => println!("created table {} (indexes, TTL)", args.table),
        TableCreated::Existing => println!("table {} exists and has the right shape", args.table),
    }
    Ok(())
}

async fn bench(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Converge(a) => {
            wpfleet::bench::converge(a.instances, a.sim_speed, a.workers).await?
        }
        BenchCommand::Resync(a) => wpfleet::bench::resync(a.instances, a.sim_speed).await?,
        BenchCommand::Latency(a) => {
            let args = wpfleet::bench::LatencyArgs {
                puts: a.puts,
                rate: a.rate,
                fleet: a.fleet,
                speed: a.sim_speed,
            };
            wpfleet::bench::latency(args).await?
        }
        BenchCommand::Api(a) => wpfleet::bench::api(a.instances, a.concurrency).await?,
        BenchCommand::Memory(a) => {
            wpfleet::bench::memory(a.instances, a.watch, a.sim_speed).await?
        }
    };
    Ok(())
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let auth = Auth::new(
        Verifier::Hs256 {
            secret: args.secret.into_bytes(),
        },
        None,
        None,
    );
    let claims = dev_claims(
        &args.subject,
        args.tenant.as_deref(),
        args.operator,
        args.ttl,
    );
    let token = auth
        .mint(&claims)
        .ok_or_else(|| anyhow::anyhow!("could not sign the token"))?;
    println!("{token}");
    Ok(())
}

fn openapi(args: OpenapiArgs) {
    use wpfleet::api::openapi;
    if args.markdown {
        print!("{}", openapi::markdown());
    } else {
        println!("{}", openapi::json());
    }
}

/// SIGINT or SIGTERM (what ECS and Kubernetes send before stopping a task).
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
