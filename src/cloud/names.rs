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
    /// RDS DB instance identifier.
    pub database: String,
    /// RDS snapshot taken before the database is deleted.
    pub final_snapshot: String,
    /// CloudWatch Logs group.
    pub log_group: String,
    /// Root directory of the EFS access point.
    pub access_point_root: String,
}

impl ResourceNames {
    pub fn for_key(key: &InstanceKey) -> Self {
        let hash = short_hash(key);
        let joined = format!("{}-{}", key.tenant_id, key.instance_id);
        let service = format!("wp-{joined}-{hash}");
        let room = RDS_MAX - "wp-".len() - 1 - hash.len();
        let mut stem: String = joined.chars().take(room).collect();
        while stem.ends_with('-') {
            stem.pop();
        }
        let database = format!("wp-{stem}-{hash}");
        Self {
            service,
            final_snapshot: format!("{database}-final"),
            database,
            log_group: format!("/wpfleet/{}/{}", key.tenant_id, key.instance_id),
            access_point_root: format!("/tenants/{}/{}", key.tenant_id, key.instance_id),
        }
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
        assert_eq!(n.database, n.service);
        assert_eq!(n.final_snapshot, format!("{}-final", n.database));
        assert_eq!(n.log_group, "/wpfleet/t1/blog");
        assert_eq!(n.access_point_root, "/tenants/t1/blog");
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
        assert_ne!(a.database, b.database);
        assert_ne!(a.log_group, b.log_group);
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
            assert!(valid_rds_identifier(&n.database), "{}", n.database);
        }
    }
}
