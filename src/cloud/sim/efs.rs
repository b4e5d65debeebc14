//! EFS access points: `creating` → `available` → `deleting` → gone.
//!
//! Invariants:
//! * Like real EFS, CreateAccessPoint is idempotent by client token only: the same token
//!   returns the existing access point, a different token creates another one even for the
//!   same root path. Preventing duplicates is the reconciler's job (observe first).
//! * Every access point carries `names::tags(key)`; observation finds it by those tags.

use serde::{Deserialize, Serialize};

use super::clock::{Ctx, Millis, base, hex_id};
use super::inventory::{Inventory, RecordKey};
use super::view::AccessPointView;
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

    pub fn view(&self, t: Millis) -> Option<AccessPointView> {
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
        })
    }
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
}
