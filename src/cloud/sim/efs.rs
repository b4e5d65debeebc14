//! EFS: access points (`creating` → `available` → `deleting` → gone) and the directories
//! they expose, with content (`data`), so tests can follow what WordPress wrote through a
//! backup and a restore.
//!
//! Invariants:
//! * Like real EFS, CreateAccessPoint is idempotent by client token only: the same token
//!   returns the existing access point, a different token creates another one even for the
//!   same root path. Preventing duplicates is the reconciler's job (observe first).
//! * Every access point carries `names::tags(key)`; observation finds it by those tags.
//! * A directory exists from the moment an access point is created on it, or a job writing
//!   it completes (a restore job into its recovery directory, a relocation into its
//!   target), and then for good (deleting an access point keeps the files, as on EFS),
//!   unless a relocation moved it away. Its content at `t` is whichever came last: the
//!   last write (`DirRec`), or the last job write completed by `t` (derived from the job,
//!   never stored twice).

use serde::{Deserialize, Serialize};

use super::clock::{Ctx, Millis, base, hex_id};
use super::inventory::{Inventory, RecordKey};
use super::view::{AccessPointView, DirectoryView};
use crate::cloud::{AccessPointState, CloudResult, ObservedAccessPoint, names};
use crate::model::InstanceKey;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AccessPointRec {
    pub id: String,
    pub key: InstanceKey,
    pub root_path: String,
    pub client_token: String,
    pub tags: Vec<(String, String)>,
    pub created_at: Millis,
    pub available_at: Millis,
    /// When DeleteAccessPoint was accepted, and when the access point is then gone.
    pub deleting_at: Option<Millis>,
    pub gone_at: Option<Millis>,
}

impl AccessPointRec {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:elasticfilesystem:eu-west-1:123456789012:access-point/{}",
            self.id
        )
    }

    /// The state at `t`; `None` once it is gone.
    pub fn state(&self, t: Millis) -> Option<AccessPointState> {
        if self.gone_at.is_some_and(|g| g <= t) {
            None
        } else if self.deleting_at.is_some_and(|d| d <= t) {
            Some(AccessPointState::Deleting)
        } else if t >= self.available_at {
            Some(AccessPointState::Available)
        } else {
            Some(AccessPointState::Creating)
        }
    }

    pub fn is_gone(&self, t: Millis) -> bool {
        self.state(t).is_none()
    }

    pub fn observed(&self, t: Millis) -> Option<ObservedAccessPoint> {
        Some(ObservedAccessPoint {
            id: self.id.clone(),
            arn: self.arn(),
            state: self.state(t)?,
            root_path: self.root_path.clone(),
        })
    }

    /// The view, showing `data` as its directory's content.
    pub fn view(&self, t: Millis, data: &str) -> Option<AccessPointView> {
        let state = match self.state(t)? {
            AccessPointState::Creating => "creating",
            AccessPointState::Available => "available",
            AccessPointState::Deleting => "deleting",
            AccessPointState::Error => "error",
        };
        Some(AccessPointView {
            id: self.id.clone(),
            arn: self.arn(),
            root_path: self.root_path.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
            state: state.to_owned(),
            data: data.to_owned(),
        })
    }
}

/// A directory of the file system, with the last content written to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DirRec {
    pub root_path: String,
    pub data: String,
    pub created_at: Millis,
    /// When `data` was written; a restore completed later overrides it.
    pub written_at: Millis,
}

impl Inventory {
    pub(super) fn create_access_point(
        &mut self,
        ctx: &Ctx,
        key: &InstanceKey,
        root_path: &str,
        token: &str,
    ) -> CloudResult<()> {
        let same_token = self
            .ap_by_token
            .get(token)
            .and_then(|id| self.access_points.get(id))
            .is_some_and(|ap| !ap.is_gone(ctx.now));
        if same_token {
            return Ok(());
        }
        let rec = AccessPointRec {
            id: format!("fsap-{}", hex_id(17)),
            key: key.clone(),
            root_path: root_path.to_owned(),
            client_token: token.to_owned(),
            tags: names::tags(key),
            created_at: ctx.now,
            available_at: ctx.after(base::AP_CREATE),
            deleting_at: None,
            gone_at: None,
        };
        // EFS creates the root directory (CreationInfo) if it is not there; an existing one
        // (e.g. written by a restore) is exposed as it is.
        if self.directory_at(root_path, ctx.now).is_none() {
            self.write_directory(root_path, "", ctx.now);
        }
        self.touch(RecordKey::AccessPoint(rec.id.clone()));
        self.insert_access_point(rec);
        Ok(())
    }

    pub(super) fn delete_access_point(&mut self, ctx: &Ctx, id: &str) -> CloudResult<()> {
        let Some(ap) = self.access_points.get_mut(id) else {
            return Ok(());
        };
        if ap.is_gone(ctx.now) || ap.deleting_at.is_some() {
            return Ok(());
        }
        ap.deleting_at = Some(ctx.now);
        ap.gone_at = Some(ctx.after(base::AP_DELETE));
        self.touch(RecordKey::AccessPoint(id.to_owned()));
        Ok(())
    }

    /// The access point `id` unless it is gone at `t`.
    pub(super) fn live_access_point(&self, id: &str, t: Millis) -> Option<&AccessPointRec> {
        self.access_points.get(id).filter(|ap| !ap.is_gone(t))
    }

    /// The access points tagged with `key` that exist at `t`, oldest first.
    pub(super) fn access_points_of(&self, key: &InstanceKey, t: Millis) -> Vec<&AccessPointRec> {
        let mut aps: Vec<&AccessPointRec> = self
            .ap_by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| self.access_points.get(id))
            .filter(|ap| !ap.is_gone(t))
            .collect();
        aps.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        aps
    }

    /// The content of directory `root` at `t`; `None` if it does not exist then.
    pub(super) fn directory_at(&self, root: &str, t: Millis) -> Option<&str> {
        if self.moved_away(root, t).is_some() {
            return None;
        }
        let written = self
            .directories
            .get(root)
            .filter(|d| d.created_at <= t)
            .map(|d| (d.written_at, d.data.as_str()));
        let restored = self.last_job_write(root, t);
        match (written, restored) {
            (Some(w), Some(r)) => Some(if r.0 > w.0 { r.1 } else { w.1 }),
            (w, r) => w.or(r).map(|(_, data)| data),
        }
    }

    /// Writes `data` into directory `root` at `t`, creating it if needed.
    pub(super) fn write_directory(&mut self, root: &str, data: &str, t: Millis) {
        let dir = self
            .directories
            .entry(root.to_owned())
            .or_insert_with(|| DirRec {
                root_path: root.to_owned(),
                data: String::new(),
                created_at: t,
                written_at: t,
            });
        dir.created_at = dir.created_at.min(t);
        dir.data = data.to_owned();
        dir.written_at = t;
        self.touch(RecordKey::Directory(root.to_owned()));
    }

    /// Every directory that exists at `t`, by root path.
    pub(super) fn directory_views(&self, t: Millis) -> Vec<DirectoryView> {
        let mut roots: Vec<&str> = self
            .directories
            .keys()
            .map(String::as_str)
            .chain(self.job_written_roots())
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
            .into_iter()
            .filter_map(|root| {
                self.directory_at(root, t).map(|data| DirectoryView {
                    root_path: root.to_owned(),
                    data: data.to_owned(),
                })
            })
            .collect()
    }
}
