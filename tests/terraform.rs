//! `deploy/terraform` stays true to the code without a cloud or the providers at hand:
//! every file parses as HCL; the table in `dynamodb.tf` has exactly the keys, indexes,
//! TTL, point-in-time recovery and billing the DynamoDB store creates with `store init`
//! (`store::dynamodb_table_shape`); the store policy in `iam_store.tf` grants exactly
//! the actions the store uses, on the table and its indexes only; every `var.X` the files
//! use is declared once. `terraform fmt -check` runs too where `terraform` is installed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hcl::{Block, Body, Expression};
use wpfleet::store::dynamodb_table_shape;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/terraform")
}

/// Every `.tf` file of the module: name → (text, parsed body).
fn files() -> BTreeMap<String, (String, Body)> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).expect("deploy/terraform") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tf") {
            let text = std::fs::read_to_string(&path).unwrap();
            let body: Body = hcl::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, (text, body));
        }
    }
    files
}

fn body_of(name: &str) -> Body {
    files()
        .remove(name)
        .unwrap_or_else(|| panic!("deploy/terraform/{name} is missing"))
        .1
}

fn block<'a>(body: &'a Body, kind: &str, labels: &[&str]) -> &'a Block {
    body.blocks()
        .find(|b| {
            b.identifier() == kind
                && b.labels()
                    .iter()
                    .map(|l| l.as_str())
                    .eq(labels.iter().copied())
        })
        .unwrap_or_else(|| panic!("no {kind} {labels:?}"))
}

fn attr<'a>(body: &'a Body, key: &str) -> &'a Expression {
    body.attributes()
        .find(|a| a.key() == key)
        .map(|a| a.expr())
        .unwrap_or_else(|| panic!("no attribute {key}"))
}

fn string(body: &Body, key: &str) -> String {
    match attr(body, key) {
        Expression::String(s) => s.clone(),
        other => panic!("{key} is not a plain string: {other:?}"),
    }
}

fn strings(body: &Body, key: &str) -> Vec<String> {
    match attr(body, key) {
        Expression::Array(items) => items
            .iter()
            .map(|e| match e {
                Expression::String(s) => s.clone(),
                other => panic!("{key} has a non-string item: {other:?}"),
            })
            .collect(),
        other => panic!("{key} is not a list: {other:?}"),
    }
}

fn enabled(body: &Body, kind: &str) -> bool {
    let b = body
        .blocks()
        .find(|b| b.identifier() == kind)
        .unwrap_or_else(|| panic!("no {kind} block"));
    matches!(attr(b.body(), "enabled"), Expression::Bool(true))
}

#[test]
fn every_file_parses_and_the_module_has_its_parts() {
    let files = files();
    for name in [
        "versions.tf",
        "variables.tf",
        "dynamodb.tf",
        "iam_store.tf",
        "outputs.tf",
    ] {
        assert!(
            files.contains_key(name),
            "deploy/terraform/{name} is missing"
        );
    }
    assert!(dir().join("README.md").exists());
}

#[test]
fn the_table_is_the_one_store_init_creates() {
    let shape = dynamodb_table_shape();
    let body = body_of("dynamodb.tf");
    let table = block(&body, "resource", &["aws_dynamodb_table", "wpfleet"]).body();
    assert_eq!(string(table, "billing_mode"), "PAY_PER_REQUEST");
    assert_eq!(string(table, "hash_key"), shape.hash_key.0);
    assert_eq!(string(table, "range_key"), shape.range_key.0);

    // Exactly the attributes that are some key, with their types.
    let declared: BTreeMap<String, String> = table
        .blocks()
        .filter(|b| b.identifier() == "attribute")
        .map(|b| (string(b.body(), "name"), string(b.body(), "type")))
        .collect();
    let mut wanted = BTreeMap::new();
    for (name, kind) in [shape.hash_key, shape.range_key]
        .into_iter()
        .chain(shape.indexes.iter().flat_map(|i| [i.hash_key, i.range_key]))
    {
        wanted.insert(name.to_owned(), kind.to_owned());
    }
    assert_eq!(declared, wanted, "attribute blocks");

    let indexes: Vec<&Block> = table
        .blocks()
        .filter(|b| b.identifier() == "global_secondary_index")
        .collect();
    assert_eq!(
        indexes.len(),
        shape.indexes.len(),
        "global secondary indexes"
    );
    for want in &shape.indexes {
        let gsi = indexes
            .iter()
            .map(|b| b.body())
            .find(|b| string(b, "name") == want.name)
            .unwrap_or_else(|| panic!("index {} is missing", want.name));
        assert_eq!(string(gsi, "hash_key"), want.hash_key.0, "{}", want.name);
        assert_eq!(string(gsi, "range_key"), want.range_key.0, "{}", want.name);
        assert_eq!(
            string(gsi, "projection_type"),
            want.projection,
            "{}",
            want.name
        );
        let non_key: BTreeSet<String> = if want.non_key_attributes.is_empty() {
            assert!(gsi.attributes().all(|a| a.key() != "non_key_attributes"));
            BTreeSet::new()
        } else {
            strings(gsi, "non_key_attributes").into_iter().collect()
        };
        let want_non_key: BTreeSet<String> = want
            .non_key_attributes
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(non_key, want_non_key, "{}", want.name);
    }

    let ttl = table.blocks().find(|b| b.identifier() == "ttl").unwrap();
    assert_eq!(string(ttl.body(), "attribute_name"), shape.ttl_attribute);
    assert!(enabled(table, "ttl"));
    assert!(enabled(table, "point_in_time_recovery"));
    assert!(enabled(table, "server_side_encryption"));
}

#[test]
fn the_store_policy_grants_what_the_store_uses_and_no_more() {
    let shape = dynamodb_table_shape();
    let (text, body) = files().remove("iam_store.tf").expect("iam_store.tf");
    let policy = block(&body, "data", &["aws_iam_policy_document", "wpfleet_store"]).body();
    let statements: BTreeMap<String, Vec<String>> = policy
        .blocks()
        .filter(|b| b.identifier() == "statement")
        .map(|b| (string(b.body(), "sid"), strings(b.body(), "actions")))
        .collect();
    let mut table_actions = statements["TableItems"].clone();
    table_actions.sort();
    let mut wanted: Vec<String> = shape
        .controller_actions
        .iter()
        .map(|s| s.to_string())
        .collect();
    wanted.sort();
    assert_eq!(table_actions, wanted, "actions on the table");
    assert_eq!(statements["IndexQueries"], ["dynamodb:Query"]);
    assert_eq!(
        statements.len(),
        2,
        "no other static statement: {statements:?}"
    );
    for forbidden in [
        "dynamodb:Scan",
        "dynamodb:*",
        "\"*\"",
        "CreateTable",
        "DeleteTable",
    ] {
        assert!(
            !text.contains(forbidden),
            "iam_store.tf mentions {forbidden}"
        );
    }
}

#[test]
fn every_variable_used_is_declared_once() {
    let files = files();
    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    for (name, (_, body)) in &files {
        for b in body.blocks().filter(|b| b.identifier() == "variable") {
            let var = b.labels()[0].as_str().to_owned();
            if let Some(other) = declared.insert(var.clone(), name.clone()) {
                panic!("variable {var} declared in both {other} and {name}");
            }
        }
    }
    for (name, (text, _)) in &files {
        for (i, _) in text.match_indices("var.") {
            let used: String = text[i + 4..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                declared.contains_key(&used),
                "{name} uses var.{used}, which no file declares"
            );
        }
    }
}

#[test]
fn files_are_terraform_formatted_where_terraform_is_installed() {
    let out = std::process::Command::new("terraform")
        .args(["fmt", "-check", "-diff", "-no-color"])
        .current_dir(dir())
        .output();
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "terraform fmt -check:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(_) => eprintln!("terraform is not installed: formatting not checked"),
    }
}
