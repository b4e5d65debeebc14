//! Cloud resource names, derived from `(tenantId, instanceId)` and nothing else.
//!
//! Deriving names (instead of remembering generated ones) is what makes every step
//! idempotent and lets a controller that lost its status find what it created before.
//!
//! Invariant: different keys never map to the same name. Ids may contain hyphens, so
//! `wp-{tenant}-{instance}` alone is ambiguous (`a-b`/`c` vs `a`/`b-c`); names that join the
//! two ids with a hyphen carry 8 hex digits of a hash of the unambiguous `tenant/instance`.

use sha2::{Digest, Sha256};

use crate::model::InstanceKey;

/// Tag keys the platform already uses; every resource carries them.
pub const TAG_TENANT: &str = "bbws:tenant-id";
pub const TAG_INSTANCE: &str = "bbws:instance-id";
pub const TAG_MANAGED_BY: &str = "managed-by";
pub const MANAGED_BY: &str = "wpfleet";

/// RDS identifiers: 1–63 chars, letter first, no `--`, no trailing `-`.
const RDS_MAX: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    /// ECS service name.
    pub service: String,
    /// CloudWatch Logs group.
    pub log_group: String,
    /// RDS identifier of the original data generation (before any restore).
    db_base: String,
    /// EFS directory of the original data generation.
    root_base: String,
}

/// The data generation of an instance: `None` until its first restore, then a short id of
/// the restore request. A restore creates a new database and directory (RDS and AWS Backup
/// cannot restore in place), named after the generation, so names stay derivable.
pub type Epoch<'a> = Option<&'a str>;

/// The epoch a restore request starts: 8 hex digits of a hash of its id (request ids are
/// ours, but hashing keeps any id short and name-safe).
pub fn epoch_of(restore_request_id: &str) -> String {
    let digest = Sha256::digest(restore_request_id.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl ResourceNames {
    pub fn for_key(key: &InstanceKey) -> Self {
        let hash = short_hash(key);
        let joined = format!("{}-{}", key.tenant_id, key.instance_id);
        // Room for `wp-` + stem + `-` + hash + `-` + epoch within RDS's 63 characters.
        let room = RDS_MAX - "wp-".len() - 1 - hash.len() - 1 - 8;
        let mut stem: String = joined.chars().take(room).collect();
        while stem.ends_with('-') {
            stem.pop();
        }
        Self {
            service: format!("wp-{joined}-{hash}"),
            db_base: format!("wp-{stem}-{hash}"),
            log_group: format!("/wpfleet/{}/{}", key.tenant_id, key.instance_id),
            root_base: format!("/tenants/{}/{}", key.tenant_id, key.instance_id),
        }
    }

    /// The RDS identifier of a data generation.
    pub fn database(&self, epoch: Epoch<'_>) -> String {
        match epoch {
            None => self.db_base.clone(),
            Some(e) => format!("{}-{e}", self.db_base),
        }
    }

    /// The EFS directory (access point root) of a data generation.
    pub fn access_point_root(&self, epoch: Epoch<'_>) -> String {
        match epoch {
            None => self.root_base.clone(),
            Some(e) => format!("{}/restore-{e}", self.root_base),
        }
    }

    /// The snapshot taken of a database before it is deleted with the instance.
    pub fn final_snapshot(db_identifier: &str) -> String {
        format!("{db_identifier}-final")
    }

    /// The snapshot taken of a database a restore superseded, before it is retired.
    pub fn retirement_snapshot(db_identifier: &str) -> String {
        format!("{db_identifier}-retired")
    }

    /// The RDS snapshot of a backup.
    pub fn backup_snapshot(&self, backup_id: &str) -> String {
        format!("{}-{backup_id}", self.db_base)
    }
}

/// The tags every resource of `key` carries.
pub fn tags(key: &InstanceKey) -> Vec<(String, String)> {
    vec![
        (TAG_TENANT.into(), key.tenant_id.to_string()),
        (TAG_INSTANCE.into(), key.instance_id.to_string()),
        (TAG_MANAGED_BY.into(), MANAGED_BY.into()),
    ]
}

fn short_hash(key: &InstanceKey) -> String {
    let digest = Sha256::digest(key.path().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_rds_identifier(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= RDS_MAX
            && s.as_bytes()[0].is_ascii_alphabetic()
            && !s.ends_with('-')
            && !s.contains("--")
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    #[test]
    fn names_are_stable_and_readable() {
        let n = ResourceNames::for_key(&InstanceKey::from_strs("t1", "blog"));
        assert!(n.service.starts_with("wp-t1-blog-"), "{}", n.service);
        assert_eq!(n.database(None), n.service);
        assert_eq!(n.log_group, "/wpfleet/t1/blog");
        assert_eq!(n.access_point_root(None), "/tenants/t1/blog");
        assert_eq!(
            n.access_point_root(Some("ab12cd34")),
            "/tenants/t1/blog/restore-ab12cd34"
        );
        assert_eq!(
            n.database(Some("ab12cd34")),
            format!("{}-ab12cd34", n.service)
        );
        assert_eq!(
            ResourceNames::final_snapshot(&n.database(None)),
            format!("{}-final", n.service)
        );
        assert_eq!(
            n,
            ResourceNames::for_key(&InstanceKey::from_strs("t1", "blog"))
        );
    }

    #[test]
    fn ambiguous_joins_get_different_names() {
        let a = ResourceNames::for_key(&InstanceKey::from_strs("a-b", "c"));
        let b = ResourceNames::for_key(&InstanceKey::from_strs("a", "b-c"));
        assert_ne!(a.service, b.service);
        assert_ne!(a.database(None), b.database(None));
        assert_ne!(a.log_group, b.log_group);
    }

    #[test]
    fn epochs_are_short_hex_and_stable() {
        let e = epoch_of("rs-0123");
        assert_eq!(e.len(), 8);
        assert!(e.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(e, epoch_of("rs-0123"));
        assert_ne!(e, epoch_of("rs-0124"));
    }

    #[test]
    fn longest_ids_still_give_valid_rds_identifiers() {
        let long = "a-".repeat(31) + "a"; // 63 chars, hyphen at every truncation point
        for (t, i) in [
            (long.as_str(), long.as_str()),
            ("t1", "blog"),
            ("x", long.as_str()),
        ] {
            let n = ResourceNames::for_key(&InstanceKey::from_strs(t, i));
            for epoch in [None, Some("ab12cd34")] {
                let db = n.database(epoch);
                assert!(valid_rds_identifier(&db), "{db}");
            }
        }
    }
}
