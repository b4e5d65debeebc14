//! Identity of an instance: `(tenantId, instanceId)`.
//!
//! Ids are validated once, at the edge, and are plain newtypes afterwards. Cloud resource
//! names are derived from them (`cloud::names`), so the alphabet is the intersection of what
//! ECS, RDS, EFS tags and CloudWatch Logs accept: lowercase ASCII letters, digits and single
//! inner hyphens. That also rules out path traversal, unicode look-alikes and separators the
//! store uses in its keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest tenant id accepted. Tenant ids in the platform are UUIDs (36 chars) or slugs.
pub const MAX_TENANT_ID_LEN: usize = 63;
/// Longest instance id accepted.
pub const MAX_INSTANCE_ID_LEN: usize = 63;

/// What [`check_id`] accepts, as the regular expression the OpenAPI document publishes:
/// runs of `[a-z0-9]` joined by single hyphens (length is checked separately).
pub const ID_PATTERN: &str = "^[a-z0-9]+(-[a-z0-9]+)*$";

/// Why an id was rejected; the message names the rule, never echoes a huge input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error(
        "may contain only lowercase letters a-z, digits 0-9 and single hyphens, \
         and must start and end with a letter or digit"
    )]
    BadCharacters,
}

fn check_id(s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > max {
        return Err(IdError::TooLong { max });
    }
    let bytes = s.as_bytes();
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let well_formed = ok_char(bytes[0])
        && ok_char(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| ok_char(b) || b == b'-')
        && !s.contains("--");
    if well_formed {
        Ok(())
    } else {
        Err(IdError::BadCharacters)
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id(s, $max)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check_id(&s, $max)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Built from the same constants the parser checks, so the document cannot drift.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema($max).into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// The schema of an id at most `max` characters long.
pub fn id_schema(max: usize) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(ID_PATTERN))
        .description(Some(format!(
            "1–{max} characters: lowercase letters a-z, digits 0-9 and single inner hyphens"
        )))
        .build()
}

id_type!(
    /// A tenant of the platform.
    TenantId,
    MAX_TENANT_ID_LEN
);
id_type!(
    /// An instance, unique within its tenant.
    InstanceId,
    MAX_INSTANCE_ID_LEN
);

impl InstanceId {
    /// A fresh id for a create request that did not name one.
    pub fn generate() -> Self {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("wp-{}", &hex[..12]))
    }
}

/// The key of an instance everywhere: store, work queue, cloud names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceKey {
    pub tenant_id: TenantId,
    pub instance_id: InstanceId,
}

impl InstanceKey {
    pub fn new(tenant_id: TenantId, instance_id: InstanceId) -> Self {
        Self {
            tenant_id,
            instance_id,
        }
    }

    /// Test and tooling convenience; panics on an invalid id.
    pub fn from_strs(tenant: &str, instance: &str) -> Self {
        Self::new(
            TenantId::parse(tenant).expect("valid tenant id"),
            InstanceId::parse(instance).expect("valid instance id"),
        )
    }

    /// `tenant/instance`. `/` cannot occur in either id, so this is unambiguous.
    pub fn path(&self) -> String {
        format!("{}/{}", self.tenant_id, self.instance_id)
    }

    /// Inverse of [`InstanceKey::path`].
    pub fn parse_path(s: &str) -> Option<Self> {
        let (t, i) = s.split_once('/')?;
        Some(Self::new(
            TenantId::parse(t).ok()?,
            InstanceId::parse(i).ok()?,
        ))
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant_id, self.instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_label_like_ids() {
        for ok in ["t1", "blog", "a", "my-blog-2", "0abc", &"a".repeat(63)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
            assert!(InstanceId::parse(ok).is_ok(), "{ok}");
        }
    }

    /// `ID_PATTERN` read literally: non-empty `[a-z0-9]` runs joined by single hyphens.
    /// Every short string over a small alphabet must be judged alike by it and `check_id`.
    #[test]
    fn the_published_pattern_says_what_check_id_does() {
        assert_eq!(ID_PATTERN, "^[a-z0-9]+(-[a-z0-9]+)*$");
        let pattern = |s: &str| {
            s.split('-').all(|run| {
                !run.is_empty()
                    && run
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
        };
        let alphabet = ['a', '0', '-', 'A', '_'];
        let mut strings = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = strings
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(longer);
        }
        strings.sort();
        strings.dedup();
        for s in strings.iter().filter(|s| !s.is_empty()) {
            assert_eq!(pattern(s), check_id(s, 63).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        let long = "a".repeat(64);
        let huge = "a".repeat(10_000);
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "A",
            "a_b",
            "a/b",
            "..",
            "../etc",
            "a.b",
            "é",
            "a b",
            "аbc", // Cyrillic a
            "a\u{200b}b",
            &long,
            &huge,
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = InstanceId::generate();
        let b = InstanceId::generate();
        assert_ne!(a, b);
        assert!(InstanceId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn path_round_trips() {
        let k = InstanceKey::from_strs("t1", "blog");
        assert_eq!(k.path(), "t1/blog");
        assert_eq!(InstanceKey::parse_path("t1/blog"), Some(k));
        assert_eq!(InstanceKey::parse_path("t1"), None);
        assert_eq!(InstanceKey::parse_path("t1/Blog"), None);
    }
}
