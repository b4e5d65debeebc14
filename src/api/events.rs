//! `GET …/events`: the instance's last events (what the reconciler decided and did), as
//! the store keeps them. A read; the reconciler is the only writer of events.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::InstancePath;
use super::instances::load;
use super::openapi::documented_errors;
use super::views::{Link, Links, instance_href};
use crate::model::Event;

/// An instance's kept events, oldest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventListView {
    /// At most the last 20; a repeat of the same event is one entry with a `count`.
    pub events: Vec<Event>,
    /// `self` and `instance`.
    #[serde(rename = "_links")]
    #[schema(value_type = BTreeMap<String, Link>)]
    pub links: Links,
}

documented_errors!(EventErrors = [ValidationError, InstanceNotFound, ServiceUnavailable]);

/// List an instance's events
///
/// The last 20 things the reconciler decided and did (steps applied or failed, phase
/// changes, convergence, drift repaired, backups and restores), oldest first. An event
/// that repeats (a step failing on every retry) is one entry with a `count` and its first
/// and last time.
#[utoipa::path(
    get,
    path = "/v1.0/tenants/{tenantId}/instances/{instanceId}/events",
    tag = "events",
    operation_id = "listInstanceEvents",
    params(InstancePath),
    responses(
        (status = 200, description = "The instance's events.", body = EventListView),
        EventErrors,
    )
)]
pub async fn list(
    State(app): State<AppState>,
    InstancePath(key): InstancePath,
) -> Result<Response, ApiError> {
    load(&app, &key).await?;
    let events = app.store.list_events(&key).await?;
    let instance = instance_href(&key);
    let mut links = Links::new();
    links.insert(
        "self",
        Link {
            href: format!("{instance}/events"),
            method: None,
        },
    );
    links.insert(
        "instance",
        Link {
            href: instance,
            method: None,
        },
    );
    Ok(axum::Json(EventListView { events, links }).into_response())
}
