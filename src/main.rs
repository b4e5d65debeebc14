//! `wpfleet`: the command line. `serve` runs the API and the reconciler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use wpfleet::server::{self, ServeConfig};
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
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address the API listens on.
    #[arg(long, env = "WPFLEET_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Directory of the embedded store and the simulated cloud's inventory.
    #[arg(long, env = "WPFLEET_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

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
            Command::Serve(args) => serve(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
        ..ServeConfig::default()
    };
    let running = server::start(config.clone()).await?;
    println!("wpfleet is serving on {}", running.url());
    println!(
        "  store: embedded ({}), cloud: simulated (speed x{})",
        config.data_dir.display(),
        config.sim_speed
    );
    println!("  try:   curl {}/v1.0/tenants/t1/instances", running.url());
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing passes in flight");
        token.cancel();
    });
    running.wait().await;
    Ok(())
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
