//! `wpfleet serve`: wires the store, the cloud, the reconciler and the API together.
//!
//! The caller owns shutdown: [`start`] returns a [`Running`] server; cancelling its token
//! (or calling [`Running::stop`]) stops accepting requests, lets passes in flight finish,
//! and returns once everything has stopped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::auth::{Auth, Verifier, dev_claims, load_jwks};
use crate::api::{self, AppState};
use crate::cloud::Cloud;
use crate::cloud::aws::{AwsCloud, AwsSettings};
use crate::cloud::budget::{Budget, Paced};
use crate::cloud::remote::RemoteCloud;
use crate::cloud::sim::{SimCloud, SimConfig, SimLimits};
use crate::metrics::Metrics;
use crate::reconcile::{Backoff, Reconciler, RunConfig, ShardSettings, Shards};
use crate::store::{DynamoStore, EmbeddedStore, Store};

/// Everything `serve` needs; the CLI fills it from flags and `WPFLEET_*` variables.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub workers: usize,
    pub resync_interval: Duration,
    pub sim_speed: f64,
    pub retention_days: u32,
    pub backoff: Backoff,
    pub auth: AuthSettings,
    pub cloud: CloudChoice,
    /// An instance not converged for longer than this counts as stuck.
    pub stuck_after: Duration,
    /// Shard leasing for several replicas on a shared store; `None`: this process owns
    /// every instance (the embedded store cannot be shared anyway).
    pub shards: Option<ShardSettings>,
    /// Where desired state and status live.
    pub store: StoreChoice,
}

/// Which `Store` the server keeps desired state in.
#[derive(Debug, Clone, Default)]
pub enum StoreChoice {
    /// `wpfleet.redb` in the data dir: one process, nothing to set up.
    #[default]
    Embedded,
    /// A DynamoDB table (standard AWS configuration), shared by several replicas.
    DynamoDb { table: String },
}

/// Which cloud the reconciler drives.
#[derive(Debug, Clone, Default)]
pub enum CloudChoice {
    /// The simulated cloud, in this process, persisted in the data dir.
    #[default]
    Sim,
    /// A simulated cloud served by `wpfleet sim-cloud` (shared by several replicas).
    SimRemote { url: String },
    /// Real AWS (or a local AWS-compatible server) through the AWS SDK.
    Aws(Box<AwsSettings>),
}

/// How `/v1.0` callers are authenticated.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// HS256 shared secret; generated (and printed in a token) when neither this nor
    /// `jwks` is set.
    pub jwt_secret: Option<String>,
    /// RS256 key set: a file path or an http(s) URL (production, e.g. Cognito's).
    pub jwks: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// How long the operator token printed at start stays valid.
pub const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            workers: 16,
            resync_interval: Duration::from_secs(300),
            sim_speed: 1.0,
            retention_days: 30,
            backoff: Backoff::default(),
            auth: AuthSettings::default(),
            cloud: CloudChoice::Sim,
            stuck_after: Duration::from_secs(15 * 60),
            shards: None,
            store: StoreChoice::Embedded,
        }
    }
}

/// A started server.
pub struct Running {
    /// Where it listens (useful when started on port 0).
    pub addr: SocketAddr,
    /// The in-process simulated cloud, when that is the cloud.
    pub sim: Option<Arc<SimCloud>>,
    pub store: Arc<dyn Store>,
    pub reconciler: Arc<Reconciler>,
    pub auth: Arc<Auth>,
    /// An operator token, when tokens are HS256 (development); printed at start.
    pub dev_token: Option<String>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The in-process simulated cloud.
    ///
    /// # Panics
    /// If the server runs on another cloud (a test-helper convenience).
    pub fn sim(&self) -> &SimCloud {
        self.sim
            .as_deref()
            .expect("this server does not run on the in-process simulated cloud")
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server and waits for the API and the reconciler to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the server has stopped (after its token was cancelled).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    check_sim_speed(config.sim_speed)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let store = open_store(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let (cloud, sim) = open_cloud(&config, &metrics).await?;
    // On the simulated cloud the controller paces its calls to the simulated limits (see
    // `cloud::budget`); the AWS driver has its own budget (`cloud::aws::budget`).
    let cloud: Arc<dyn Cloud> = if sim.is_some() {
        Arc::new(Paced::new(cloud, Budget::new(SimLimits::default().rates())))
    } else {
        cloud
    };
    let shards = match &config.shards {
        Some(settings) => Shards::leased(store.clone(), settings.clone()),
        None => Shards::all(store.clone()),
    };
    let run_config = RunConfig {
        workers: config.workers.max(1),
        resync_interval: config.resync_interval,
        backoff: config.backoff,
        retention: Duration::from_secs(u64::from(config.retention_days) * 24 * 3600),
        stuck_after: config.stuck_after,
        ..RunConfig::default()
    };
    if let Some(sim) = &sim {
        sim.set_metrics(metrics.clone());
    }
    let reconciler = Reconciler::new(store.clone(), cloud.clone(), shards, run_config, metrics);
    if let Some(sim) = &sim {
        let sim = sim.clone();
        reconciler.drop_triggers_when(Arc::new(move || sim.drop_trigger()));
    }
    let auth = Arc::new(build_auth(&config.auth).await?);
    let dev_token = auth.mint(&dev_claims(
        "wpfleet-dev-operator",
        None,
        true,
        DEV_TOKEN_TTL,
    ));
    let app = AppState {
        store: store.clone(),
        cloud: cloud.clone(),
        auth: auth.clone(),
        trigger: reconciler.trigger(),
        reconciler: reconciler.clone(),
        sim: sim.clone(),
        retention_days: config.retention_days,
        live_tasks: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let router = api::router(app);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tasks.spawn(reconciler.clone().run(shutdown.clone()));
    Ok(Running {
        addr,
        sim,
        store,
        reconciler,
        auth,
        dev_token,
        shutdown,
        tasks,
    })
}

async fn open_store(config: &ServeConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreChoice::Embedded => Arc::new(
            EmbeddedStore::open(&config.data_dir)
                .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
        ),
        StoreChoice::DynamoDb { table } => Arc::new(
            DynamoStore::connect(table)
                .await
                .with_context(|| format!("connecting to the DynamoDB table {table}"))?,
        ),
    })
}

async fn open_cloud(
    config: &ServeConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<dyn Cloud>, Option<Arc<SimCloud>>)> {
    match &config.cloud {
        CloudChoice::Sim => {
            let sim = Arc::new(open_sim(config)?);
            Ok((sim.clone(), Some(sim)))
        }
        CloudChoice::SimRemote { url } => {
            let remote = RemoteCloud::connect(url)
                .await
                .with_context(|| format!("connecting to the simulated cloud at {url}"))?;
            Ok((Arc::new(remote), None))
        }
        CloudChoice::Aws(settings) => {
            let aws = AwsCloud::connect(settings.as_ref().clone()).await?;
            aws.set_metrics(metrics.clone());
            Ok((Arc::new(aws), None))
        }
    }
}

fn open_sim(config: &ServeConfig) -> anyhow::Result<SimCloud> {
    let sim_config = SimConfig {
        speed: config.sim_speed,
        ..SimConfig::default()
    };
    SimCloud::open(&config.data_dir, sim_config).with_context(|| {
        format!(
            "opening the simulated cloud in {}",
            config.data_dir.display()
        )
    })
}

async fn build_auth(settings: &AuthSettings) -> anyhow::Result<Auth> {
    let issuer = settings.issuer.clone();
    let audience = settings.audience.clone();
    if let Some(source) = &settings.jwks {
        let keys = load_jwks(source)
            .await
            .with_context(|| format!("loading the JWKS from {source}"))?;
        anyhow::ensure!(!keys.keys.is_empty(), "the JWKS at {source} has no keys");
        let verifier = Verifier::Jwks {
            keys: Arc::new(std::sync::RwLock::new(keys)),
        };
        return Ok(Auth::new(verifier, issuer, audience));
    }
    match &settings.jwt_secret {
        Some(secret) => {
            anyhow::ensure!(
                secret.len() >= 16,
                "--jwt-secret must be at least 16 characters"
            );
            let verifier = Verifier::Hs256 {
                secret: secret.clone().into_bytes(),
            };
            Ok(Auth::new(verifier, issuer, audience))
        }
        None => Ok(Auth::generated().0),
    }
}

/// `wpfleet sim-cloud`: a simulated cloud served over HTTP for several controller
/// replicas (`serve --cloud sim-remote`), with its `/v1.0/sim` introspection routes. No
/// authentication: it is a development and test tool; bind it to loopback.
pub struct SimCloudConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub sim_speed: f64,
}

pub struct RunningSimCloud {
    pub addr: SocketAddr,
    pub sim: Arc<SimCloud>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RunningSimCloud {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

pub async fn start_sim_cloud(config: SimCloudConfig) -> anyhow::Result<RunningSimCloud> {
    check_sim_speed(config.sim_speed)?;
    let sim = Arc::new(
        SimCloud::open(
            &config.data_dir,
            SimConfig {
                speed: config.sim_speed,
                ..SimConfig::default()
            },
        )
        .with_context(|| {
            format!(
                "opening the simulated cloud in {}",
                config.data_dir.display()
            )
        })?,
    );
    let served: Arc<dyn Cloud> = sim.clone();
    let router = crate::cloud::remote::router(served)
        .merge(api::sim::routes().with_state(api::sim::SimHandle(Some(sim.clone()))));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "simulated cloud server failed");
        }
    });
    Ok(RunningSimCloud {
        addr,
        sim,
        shutdown,
        tasks,
    })
}

fn check_sim_speed(speed: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        speed.is_finite() && speed > 0.0 && speed <= 100_000.0,
        "--sim-speed must be a number above 0 and at most 100000 (got {speed})"
    );
    Ok(())
}
