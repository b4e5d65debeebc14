//! Semantic validation of a spec, and the typed rejections of a desired-state change.
//!
//! Shape errors (wrong types, unknown fields) are caught by serde at the API edge; this
//! module checks what serde cannot: ranges, formats, tier limits and lifecycle rules.

use serde::Serialize;
use utoipa::ToSchema;

use super::instance::{MAX_DESIRED_COUNT, MIN_DESIRED_COUNT, Spec};

/// One invalid field, named by its JSON path (e.g. `configuration.desiredCount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// PHP versions the WordPress images are built for.
pub const SUPPORTED_PHP_VERSIONS: [&str; 3] = ["8.1", "8.2", "8.3"];

pub const MAX_ORGANIZATION_NAME: usize = 200;
pub const MAX_EMAIL: usize = 254;

/// What `is_version` accepts, as the OpenAPI document publishes it: two or three dot-separated
/// groups of one to three digits.
pub const VERSION_PATTERN: &str = r"^[0-9]{1,3}(\.[0-9]{1,3}){1,2}$";

pub fn organization_name_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ORGANIZATION_NAME))
        .description(Some("Not blank, no control characters."))
        .build()
}

pub fn contact_email_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
            utoipa::openapi::schema::KnownFormat::Email,
        )))
        .max_length(Some(MAX_EMAIL))
        .build()
}

/// Every problem with a spec, in field order; empty when valid.
pub fn validate_spec(spec: &Spec) -> Vec<FieldError> {
    let mut errors = vec![];
    let name = spec.organization_name.trim();
    if name.is_empty() {
        errors.push(FieldError::new("organizationName", "must not be empty"));
    } else if spec.organization_name.chars().count() > MAX_ORGANIZATION_NAME {
        errors.push(FieldError::new(
            "organizationName",
            format!("must be at most {MAX_ORGANIZATION_NAME} characters"),
        ));
    } else if spec.organization_name.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "organizationName",
            "must not contain control characters",
        ));
    }
    if !is_plausible_email(&spec.contact_email) {
        errors.push(FieldError::new(
            "contactEmail",
            "must be an email address like name@example.com",
        ));
    }
    if let Err(message) = check_desired_count(spec.tier, spec.configuration.desired_count) {
        errors.push(FieldError::new("configuration.desiredCount", message));
    }
    if !is_version(&spec.configuration.wordpress_version) {
        errors.push(FieldError::new(
            "configuration.wordpressVersion",
            "must be a version like 6.5 or 6.5.3",
        ));
    }
    if !SUPPORTED_PHP_VERSIONS.contains(&spec.configuration.php_version.as_str()) {
        errors.push(FieldError::new(
            "configuration.phpVersion",
            format!("must be one of {}", SUPPORTED_PHP_VERSIONS.join(", ")),
        ));
    }
    if let Some(restore) = &spec.restore
        && (restore.backup_id.is_empty() || restore.request_id.is_empty())
    {
        errors.push(FieldError::new(
            "restore",
            "backupId and requestId must not be empty",
        ));
    }
    errors
}

/// The platform range (2–10) and the tier's ceiling.
pub fn check_desired_count(tier: super::Tier, n: u32) -> Result<(), String> {
    let max = tier.max_desired_count();
    if !(MIN_DESIRED_COUNT..=MAX_DESIRED_COUNT).contains(&n) {
        return Err(format!(
            "must be between {MIN_DESIRED_COUNT} and {MAX_DESIRED_COUNT}"
        ));
    }
    if n > max {
        return Err(format!("tier {} allows at most {max} tasks", tier.as_str()));
    }
    Ok(())
}

fn is_plausible_email(s: &str) -> bool {
    if s.len() > MAX_EMAIL || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

fn is_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Configuration, DesiredState, Tier};

    fn spec() -> Spec {
        Spec {
            organization_name: "Acme".into(),
            contact_email: "ops@acme.example".into(),
            tier: Tier::Standard,
            state: DesiredState::Active,
            configuration: Configuration::default(),
            restore: None,
        }
    }

    fn fields(s: &Spec) -> Vec<String> {
        validate_spec(s).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_default_spec_is_valid() {
        assert!(validate_spec(&spec()).is_empty());
    }

    #[test]
    fn each_rule_names_its_field() {
        type Case = (fn(&mut Spec), &'static str);
        let cases: Vec<Case> = vec![
            (|s| s.organization_name = "  ".into(), "organizationName"),
            (
                |s| s.organization_name = "x".repeat(201),
                "organizationName",
            ),
            (
                |s| s.organization_name = "a\u{0}b".into(),
                "organizationName",
            ),
            (|s| s.contact_email = "nope".into(), "contactEmail"),
            (|s| s.contact_email = "a@b".into(), "contactEmail"),
            (|s| s.contact_email = "a b@c.d".into(), "contactEmail"),
            (
                |s| s.configuration.desired_count = 1,
                "configuration.desiredCount",
            ),
            (
                |s| s.configuration.desired_count = 11,
                "configuration.desiredCount",
            ),
            (
                |s| s.configuration.desired_count = 5,
                "configuration.desiredCount",
            ), // STANDARD max 4
            (
                |s| s.configuration.wordpress_version = "latest".into(),
                "configuration.wordpressVersion",
            ),
            (
                |s| s.configuration.wordpress_version = "6".into(),
                "configuration.wordpressVersion",
            ),
            (
                |s| s.configuration.php_version = "7.4".into(),
                "configuration.phpVersion",
            ),
        ];
        for (mutate, field) in cases {
            let mut s = spec();
            mutate(&mut s);
            assert_eq!(fields(&s), vec![field.to_string()], "{s:?}");
        }
    }

    #[test]
    fn tier_limits() {
        assert!(check_desired_count(Tier::Standard, 4).is_ok());
        assert!(check_desired_count(Tier::Standard, 5).is_err());
        assert!(check_desired_count(Tier::Professional, 6).is_ok());
        assert!(check_desired_count(Tier::Professional, 7).is_err());
        assert!(check_desired_count(Tier::Enterprise, 10).is_ok());
        assert!(check_desired_count(Tier::Enterprise, 11).is_err());
        assert!(check_desired_count(Tier::Enterprise, 1).is_err());
    }
}
