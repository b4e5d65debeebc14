//! `desired_state/` is documentation that must stay true: every example manifest loads and
//! validates with the model's rules, and `instance.schema.json` says what the model says
//! (enums, bounds, defaults, required and allowed fields, id rules). A change to
//! `model::Spec` that forgets the schema fails here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::manifest::{self, API_VERSION, KIND};
use crate::model::{
    Configuration, DesiredState, MAX_DESIRED_COUNT, MAX_INSTANCE_ID_LEN, MAX_TENANT_ID_LEN,
    MIN_DESIRED_COUNT, SUPPORTED_PHP_VERSIONS, Spec, Tier,
};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("desired_state")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(examples_dir().join("instance.schema.json"))
        .expect("desired_state/instance.schema.json is readable");
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("expected an object, got {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Every `DesiredState`; the exhaustive match breaks the build when a variant is added.
fn all_states() -> Vec<DesiredState> {
    let all = [DesiredState::Active, DesiredState::Suspended];
    for s in all {
        match s {
            DesiredState::Active | DesiredState::Suspended => {}
        }
    }
    all.to_vec()
}

#[test]
fn every_example_loads_and_validates() {
    let manifests = manifest::load(&[examples_dir()]).unwrap_or_else(|p| panic!("{p:#?}"));
    let names: Vec<String> = manifests.iter().map(|m| m.name()).collect();
    assert_eq!(
        names,
        [
            "acme/archive",
            "acme/blog",
            "globex/docs",
            "globex/intranet",
            "globex/shop"
        ]
    );
    let find = |name: &str| manifests.iter().find(|m| m.name() == name).unwrap();
    let blog = &find("acme/blog").spec;
    assert_eq!(
        (blog.tier, blog.state, blog.configuration.desired_count),
        (Tier::Standard, DesiredState::Active, 2)
    );
    let shop = &find("globex/shop").spec;
    assert_eq!(
        (shop.tier, shop.configuration.desired_count),
        (Tier::Professional, 3)
    );
    assert_eq!(find("acme/archive").spec.state, DesiredState::Suspended);
}

#[test]
fn every_example_file_is_picked_up_and_the_schema_is_not() {
    let files = manifest::dir_manifests(&examples_dir()).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "archive.yaml",
            "blog.yaml",
            "globex-sites.yaml",
            "shop.yaml"
        ]
    );
}

#[test]
fn schema_envelope_matches_the_manifest_format() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["properties"]["apiVersion"]["const"], API_VERSION);
    assert_eq!(s["properties"]["kind"]["const"], KIND);
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(
        strings(&s["required"]),
        ["apiVersion", "kind", "metadata", "spec"]
    );
    let meta = &s["properties"]["metadata"];
    assert_eq!(meta["additionalProperties"], false);
    assert_eq!(strings(&meta["required"]), ["tenantId", "instanceId"]);
}

#[test]
fn schema_ids_follow_the_id_rules() {
    let id = &schema()["$defs"]["id"];
    assert_eq!(MAX_TENANT_ID_LEN, MAX_INSTANCE_ID_LEN);
    assert_eq!(id["maxLength"], json!(MAX_TENANT_ID_LEN));
    assert_eq!(id["minLength"], 1);
    // Lowercase alphanumerics with single inner hyphens (`model::ids`), without lookahead.
    assert_eq!(id["pattern"], "^[a-z0-9]+(-[a-z0-9]+)*$");
}

#[test]
fn schema_enums_and_defaults_equal_the_model() {
    let spec = &schema()["$defs"]["spec"];
    let props = &spec["properties"];
    let tiers: Vec<&str> = Tier::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(strings(&props["tier"]["enum"]), tiers);
    let states: Vec<&str> = all_states().iter().map(|s| s.as_str()).collect();
    assert_eq!(strings(&props["state"]["enum"]), states);
    assert_eq!(props["state"]["default"], DesiredState::default().as_str());

    let config = &props["configuration"]["properties"];
    let defaults = Configuration::default();
    assert_eq!(
        strings(&config["phpVersion"]["enum"]),
        SUPPORTED_PHP_VERSIONS
    );
    assert_eq!(config["phpVersion"]["default"], defaults.php_version);
    assert_eq!(
        config["wordpressVersion"]["default"],
        defaults.wordpress_version
    );
    let count = &config["desiredCount"];
    assert_eq!(count["minimum"], json!(MIN_DESIRED_COUNT));
    assert_eq!(count["maximum"], json!(MAX_DESIRED_COUNT));
    assert_eq!(count["default"], json!(defaults.desired_count));
}

#[test]
fn schema_tier_limits_equal_the_model() {
    let rules = schema()["$defs"]["spec"]["allOf"].clone();
    let mut limits = vec![];
    for rule in rules.as_array().expect("allOf is a list") {
        let tier = rule["if"]["properties"]["tier"]["const"]
            .as_str()
            .expect("a tier rule")
            .to_owned();
        let max =
            &rule["then"]["properties"]["configuration"]["properties"]["desiredCount"]["maximum"];
        limits.push((tier, max.clone()));
    }
    let model: Vec<(String, Value)> = Tier::ALL
        .iter()
        .map(|t| (t.as_str().to_owned(), json!(t.max_desired_count())))
        .collect();
    assert_eq!(limits, model);
}

/// A complete spec as JSON, without the server-managed `restore` (not in manifests).
fn full_spec() -> Value {
    let spec = Spec {
        organization_name: "Acme".into(),
        contact_email: "ops@acme.example".into(),
        tier: Tier::Standard,
        state: DesiredState::Active,
        configuration: Configuration::default(),
        restore: None,
    };
    let mut v = serde_json::to_value(spec).unwrap();
    v.as_object_mut().unwrap().remove("restore");
    v
}

/// The fields whose absence the model refuses, found by leaving each one out.
fn required_by_model(full: &Value, parse: impl Fn(Value) -> bool) -> BTreeSet<String> {
    keys(full)
        .into_iter()
        .filter(|k| {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(k);
            !parse(v)
        })
        .collect()
}

#[test]
fn schema_fields_and_required_fields_equal_the_model() {
    let spec = &schema()["$defs"]["spec"];
    let full = full_spec();
    assert_eq!(keys(&spec["properties"]), keys(&full));
    assert_eq!(spec["additionalProperties"], false);
    let required: BTreeSet<String> = strings(&spec["required"]).into_iter().collect();
    let model = required_by_model(&full, |v| serde_json::from_value::<Spec>(v).is_ok());
    assert_eq!(required, model);

    let config_schema = &spec["properties"]["configuration"];
    let config = &full["configuration"];
    assert_eq!(keys(&config_schema["properties"]), keys(config));
    assert_eq!(config_schema["additionalProperties"], false);
    let config_required: BTreeSet<String> = config_schema
        .get("required")
        .map(strings)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let model = required_by_model(config, |v| {
        serde_json::from_value::<Configuration>(v).is_ok()
    });
    assert_eq!(config_required, model);
}
