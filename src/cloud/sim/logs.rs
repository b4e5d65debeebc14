//! CloudWatch Logs log groups: the one resource whose create and delete take effect at once.
//! (Their events are derived from task timelines in `log_events`.)
//!
//! Invariants:
//! * At most one log group per name; creating an existing one and deleting a missing one
//!   both succeed (the real driver maps `ResourceAlreadyExists` / `ResourceNotFound` to
//!   success the same way).
//! * A group holds only events from its `created_at` on: deleting a group deletes its
//!   events, and a re-created group starts empty. Deleting it also forgets the stopped
//!   tasks of its instance's service, which only existed to derive those events.

use serde::{Deserialize, Serialize};

use super::clock::{Ctx, Millis};
use super::inventory::{Inventory, RecordKey};
use super::view::LogGroupView;
use crate::cloud::names::ResourceNames;
use crate::cloud::{CloudResult, ObservedLogGroup};
use crate::model::InstanceKey;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogGroupRec {
    pub name: String,
    pub key: InstanceKey,
    pub retention_days: u32,
    pub created_at: Millis,
}

impl LogGroupRec {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:logs:eu-west-1:123456789012:log-group:{}",
            self.name
        )
    }

    pub fn observed(&self) -> ObservedLogGroup {
        ObservedLogGroup {
            name: self.name.clone(),
            arn: self.arn(),
        }
    }

    pub fn view(&self) -> LogGroupView {
        LogGroupView {
            name: self.name.clone(),
            tenant_id: self.key.tenant_id.to_string(),
            instance_id: self.key.instance_id.to_string(),
        }
    }
}

impl Inventory {
    pub(super) fn create_log_group(
        &mut self,
        ctx: &Ctx,
        key: &InstanceKey,
        name: &str,
        retention_days: u32,
    ) -> CloudResult<()> {
        if self.log_groups.contains_key(name) {
            return Ok(());
        }
        let rec = LogGroupRec {
            name: name.to_owned(),
            key: key.clone(),
            retention_days,
            created_at: ctx.now,
        };
        self.log_groups.insert(name.to_owned(), rec);
        self.touch(RecordKey::LogGroup(name.to_owned()));
        Ok(())
    }

    pub(super) fn delete_log_group(&mut self, name: &str) -> CloudResult<()> {
        if let Some(rec) = self.log_groups.remove(name) {
            self.touch(RecordKey::LogGroup(name.to_owned()));
            self.forget_tasks(&ResourceNames::for_key(&rec.key).service);
        }
        Ok(())
    }
}
