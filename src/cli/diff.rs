//! What `apply` would change, field by field, for `--dry-run`.
//!
//! Specs are compared as JSON leaves with dotted paths (`configuration.desiredCount`), the
//! manifest's side with the model's defaults filled in, so a field left out of a manifest
//! is compared as the value the server would store. Comparing JSON rather than
//! `model::Spec` keeps the diff working when the server's spec has a field this client
//! does not know: it shows up as a change to `<none>`.
//!
//! `restore` is server-managed (set by `POST …/restore`, kept across a PUT), so it is never
//! part of a diff.

use std::collections::BTreeMap;

use serde_json::Value;

use super::output::scalar;

/// Spec fields the server manages itself; a PUT keeps them whatever the body says.
const SERVER_MANAGED: [&str; 1] = ["restore"];

/// What applying one manifest would do.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Create,
    Unchanged,
    Update(Vec<FieldChange>),
    /// The instance is being deleted: the server refuses spec changes.
    Deleting,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub path: String,
    /// `None` when the field is absent on that side.
    pub from: Option<Value>,
    pub to: Option<Value>,
}

/// Compares the server's instance (if any) with the desired spec.
pub fn plan(current: Option<&Value>, desired_spec: &Value) -> Plan {
    let Some(current) = current else {
        return Plan::Create;
    };
    if current
        .pointer("/metadata/deletionRequestedAt")
        .is_some_and(|v| !v.is_null())
    {
        return Plan::Deleting;
    }
    let changes = spec_changes(current.get("spec").unwrap_or(&Value::Null), desired_spec);
    if changes.is_empty() {
        Plan::Unchanged
    } else {
        Plan::Update(changes)
    }
}

/// Every leaf that differs, in path order.
pub fn spec_changes(current: &Value, desired: &Value) -> Vec<FieldChange> {
    let from = leaves(current);
    let to = leaves(desired);
    let mut paths: Vec<&String> = from.keys().chain(to.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| !is_server_managed(p))
        .filter_map(|p| {
            let (a, b) = (from.get(p), to.get(p));
            (a != b).then(|| FieldChange {
                path: p.clone(),
                from: a.cloned(),
                to: b.cloned(),
            })
        })
        .collect()
}

fn is_server_managed(path: &str) -> bool {
    let top = path.split('.').next().unwrap_or(path);
    SERVER_MANAGED.contains(&top)
}

/// `{"a": {"b": 1}}` → `{"a.b": 1}`. Arrays and scalars are leaves; `null` counts as absent,
/// so `"x": null` on one side equals no `x` on the other.
fn leaves(v: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    collect("", v, &mut out);
    out
}

fn collect(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect(&path, child, out);
            }
        }
        Value::Null => {}
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

/// Lines for one instance: `acme/blog: configuration.desiredCount 2 -> 4`.
pub fn render(name: &str, plan: &Plan) -> Vec<String> {
    match plan {
        Plan::Create => vec![format!("{name}: would be created")],
        Plan::Unchanged => vec![format!("{name}: unchanged")],
        Plan::Deleting => vec![format!("{name}: is being deleted; apply would be refused")],
        Plan::Update(changes) => changes
            .iter()
            .map(|c| {
                format!(
                    "{name}: {} {} -> {}",
                    c.path,
                    side(c.from.as_ref()),
                    side(c.to.as_ref())
                )
            })
            .collect(),
    }
}

fn side(v: Option<&Value>) -> String {
    v.map_or_else(|| "<none>".into(), scalar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(count: u32, org: &str) -> Value {
        json!({
            "organizationName": org, "contactEmail": "ops@acme.example", "tier": "STANDARD",
            "state": "ACTIVE",
            "configuration": {"desiredCount": count, "wordpressVersion": "6.5", "phpVersion": "8.2"},
        })
    }

    fn resource(spec: Value) -> Value {
        json!({"metadata": {"generation": 1, "deletionRequestedAt": null}, "spec": spec})
    }

    #[test]
    fn absent_instances_would_be_created() {
        assert_eq!(plan(None, &spec(2, "Acme")), Plan::Create);
        assert_eq!(
            render("t1/new", &Plan::Create),
            ["t1/new: would be created"]
        );
    }

    #[test]
    fn equal_specs_are_unchanged_whatever_restore_says() {
        let mut current = spec(2, "Acme");
        current["restore"] = json!({"backupId": "b1", "requestId": "r1"});
        let p = plan(Some(&resource(current)), &spec(2, "Acme"));
        assert_eq!(p, Plan::Unchanged);
        assert_eq!(render("t1/same", &p), ["t1/same: unchanged"]);
    }

    #[test]
    fn changes_are_listed_one_per_line_in_path_order() {
        let p = plan(Some(&resource(spec(2, "Acme"))), &spec(4, "Acme Corp"));
        assert_eq!(
            render("t1/blog", &p),
            [
                "t1/blog: configuration.desiredCount 2 -> 4",
                "t1/blog: organizationName Acme -> \"Acme Corp\"",
            ]
        );
    }

    #[test]
    fn fields_only_one_side_knows_show_as_none() {
        let mut current = spec(2, "Acme");
        current["configuration"]["cdn"] = json!(true);
        let p = plan(Some(&resource(current)), &spec(2, "Acme"));
        assert_eq!(
            render("t1/blog", &p),
            ["t1/blog: configuration.cdn true -> <none>"]
        );
    }

    #[test]
    fn deleted_instances_are_called_out() {
        let mut current = resource(spec(2, "Acme"));
        current["metadata"]["deletionRequestedAt"] = json!("2026-01-01T00:00:00Z");
        let p = plan(Some(&current), &spec(3, "Acme"));
        assert_eq!(p, Plan::Deleting);
        assert_eq!(
            render("t1/old", &p),
            ["t1/old: is being deleted; apply would be refused"]
        );
    }
}
