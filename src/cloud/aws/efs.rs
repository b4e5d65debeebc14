//! EFS: one access point per instance and data epoch on the configured file system, rooted
//! at the instance's directory (`/tenants/{tenant}/{instance}`, or a restore's directory),
//! entered as the WordPress image's user (www-data, uid/gid 33).
//!
//! Observation lists the file system's access points (DescribeAccessPoints by file system,
//! paged) and assigns them to instances by their tags, so every epoch's access point is
//! seen, whoever created it.
//!
//! Invariant: an access point is looked up (tags + root path) before one is created. EFS
//! honours the client token only for a while, and some local servers not at all; a second
//! access point for the same directory would otherwise be created on a retry.

use std::collections::HashMap;

use aws_sdk_efs::types::{AccessPointDescription, CreationInfo, LifeCycleState, PosixUser, Tag};

use super::AwsCloud;
use super::call::{Api, AwsResult};
use super::ecs::build_error;
use super::tagged_key;
use crate::cloud::names::tags;
use crate::cloud::{AccessPointState, ObservedAccessPoint, StepOutcome};
use crate::model::InstanceKey;

const DESCRIBE_ACCESS_POINTS: Api = Api::new("efs", "DescribeAccessPoints");
const CREATE_ACCESS_POINT: Api = Api::new("efs", "CreateAccessPoint");
const DELETE_ACCESS_POINT: Api = Api::new("efs", "DeleteAccessPoint");
pub(super) const DESCRIBE_FILE_SYSTEMS: Api = Api::new("efs", "DescribeFileSystems");

/// www-data in the official WordPress image.
const WWW_DATA: i64 = 33;

impl AwsCloud {
    /// Every access point on the file system that is tagged with an instance, by instance,
    /// oldest first.
    pub(super) async fn observe_access_points(
        &self,
    ) -> AwsResult<HashMap<InstanceKey, Vec<ObservedAccessPoint>>> {
        let mut by_key: HashMap<InstanceKey, Vec<ObservedAccessPoint>> = HashMap::new();
        for ap in self.list_access_points().await? {
            let Some(key) = tagged_key(ap.tags().iter().map(|t| (Some(t.key()), Some(t.value()))))
            else {
                continue;
            };
            if let Some(observed) = observed(&ap) {
                by_key.entry(key).or_default().push(observed);
            }
        }
        Ok(by_key)
    }

    async fn list_access_points(&self) -> AwsResult<Vec<AccessPointDescription>> {
        let mut all = Vec::new();
        let mut next = None;
        loop {
            let request = self
                .clients
                .efs
                .describe_access_points()
                .file_system_id(&self.settings.file_system_id)
                .set_next_token(next)
                .send();
            let out = self.caller.send(DESCRIBE_ACCESS_POINTS, request).await?;
            all.extend(out.access_points.unwrap_or_default());
            next = out.next_token;
            if next.is_none() {
                return Ok(all);
            }
        }
    }

    /// CreateAccessPoint for `root_path`, unless the instance already has a live one there.
    pub(super) async fn create_access_point(
        &self,
        key: &InstanceKey,
        root_path: &str,
        token: &str,
    ) -> AwsResult<StepOutcome> {
        let existing = self.observe_access_points().await?;
        let live = existing
            .get(key)
            .into_iter()
            .flatten()
            .any(|ap| ap.root_path == root_path && ap.state != AccessPointState::Deleting);
        if live {
            return Ok(StepOutcome::Done);
        }
        let api = CREATE_ACCESS_POINT;
        let mut efs_tags = vec![
            Tag::builder()
                .key("Name")
                .value(format!("wpfleet {}", key.path()))
                .build()
                .map_err(|e| build_error(api, e))?,
        ];
        for (k, v) in tags(key) {
            efs_tags.push(
                Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| build_error(api, e))?,
            );
        }
        let request = self
            .clients
            .efs
            .create_access_point()
            .client_token(token)
            .file_system_id(&self.settings.file_system_id)
            .posix_user(
                PosixUser::builder()
                    .uid(WWW_DATA)
                    .gid(WWW_DATA)
                    .build()
                    .map_err(|e| build_error(api, e))?,
            )
            .root_directory(
                aws_sdk_efs::types::RootDirectory::builder()
                    .path(root_path)
                    .creation_info(
                        CreationInfo::builder()
                            .owner_uid(WWW_DATA)
                            .owner_gid(WWW_DATA)
                            .permissions("0755")
                            .build()
                            .map_err(|e| build_error(api, e))?,
                    )
                    .build(),
            )
            .set_tags(Some(efs_tags))
            .send();
        match self.caller.send(api, request).await {
            Ok(_) => Ok(StepOutcome::Done),
            // The same token with other arguments, or a race with another replica: what
            // exists is found by the next observation.
            Err(f) if f.is(&["AccessPointAlreadyExists"]) => Ok(StepOutcome::Done),
            Err(f) => Err(f),
        }
    }

    /// DeleteAccessPoint; one that is already gone is fine.
    pub(super) async fn delete_access_point(&self, id: &str) -> AwsResult<StepOutcome> {
        let request = self
            .clients
            .efs
            .delete_access_point()
            .access_point_id(id)
            .send();
        match self.caller.send(DELETE_ACCESS_POINT, request).await {
            Ok(_) => Ok(StepOutcome::Done),
            Err(f) if f.is(&["AccessPointNotFound"]) => Ok(StepOutcome::Done),
            Err(f) => Err(f),
        }
    }
}

/// The access point as the reconciler sees it; `None` once deleted.
fn observed(ap: &AccessPointDescription) -> Option<ObservedAccessPoint> {
    let state = match ap.life_cycle_state() {
        Some(LifeCycleState::Creating) => AccessPointState::Creating,
        Some(LifeCycleState::Available | LifeCycleState::Updating) => AccessPointState::Available,
        Some(LifeCycleState::Deleting) => AccessPointState::Deleting,
        Some(LifeCycleState::Deleted) => return None,
        Some(LifeCycleState::Error) => AccessPointState::Error,
        // Not stated (or a state newer than this code): treat as still being set up.
        _ => AccessPointState::Creating,
    };
    Some(ObservedAccessPoint {
        id: ap.access_point_id().unwrap_or_default().to_owned(),
        arn: ap.access_point_arn().unwrap_or_default().to_owned(),
        state,
        root_path: ap
            .root_directory()
            .and_then(|r| r.path())
            .unwrap_or("/")
            .to_owned(),
    })
}
