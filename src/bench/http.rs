//! The HTTP API served over a bench `Rig` (in-memory simulated cloud, embedded store), the
//! way `server::start` wires it, on 127.0.0.1 and a free port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Rig;
use crate::api::auth::{Auth, dev_claims};
use crate::api::{self, AppState};

pub struct Served {
    pub url: String,
    /// An operator token for the `Authorization` header.
    pub token: String,
}

pub async fn serve(rig: &Rig) -> anyhow::Result<Served> {
    let (auth, _) = Auth::generated();
    let auth = Arc::new(auth);
    let token = auth
        .mint(&dev_claims(
            "bench",
            None,
            true,
            Duration::from_secs(24 * 3600),
        ))
        .ok_or_else(|| anyhow::anyhow!("cannot mint a token"))?;
    let app = AppState {
        store: rig.store.clone(),
        cloud: rig.sim.clone(),
        auth,
        trigger: rig.reconciler.trigger(),
        reconciler: rig.reconciler.clone(),
        sim: Some(rig.sim.clone()),
        retention_days: 30,
        live_tasks: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = rig.shutdown.clone();
    tokio::spawn(async move {
        let serve =
            axum::serve(listener, api::router(app)).with_graceful_shutdown(stop.cancelled_owned());
        let _ = serve.await;
    });
    Ok(Served { url, token })
}
