//! Manifests for `wpfleet apply -f`: loading files and directories, parsing YAML
//! (several `---` documents per file) or JSON, and validating every document before
//! anything is sent.
//!
//! A manifest is
//! ```yaml
//! apiVersion: wpfleet.io/v1
//! kind: Instance
//! metadata: { tenantId: acme, instanceId: blog }
//! spec: { ... }   # exactly the API's spec
//! ```
//! The spec is read into the crate's own `model::Spec` (unknown fields rejected) and
//! checked with `model::validate_spec`, so a manifest the client accepts is one the server
//! accepts. Every problem is reported with its file, document number (1-based, counting
//! every `---` document of the file) and field path, e.g.
//! `blog.yaml (document 2): spec.configuration.desiredCnt: unknown field …`.
//!
//! `spec.restore` is refused: it is set by `wpfleet restore` and kept by the server, so a
//! manifest naming it would claim a state the server ignores.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::{InstanceId, InstanceKey, Spec, TenantId, validate_spec};

pub const API_VERSION: &str = "wpfleet.io/v1";
pub const KIND: &str = "Instance";

/// Extensions of manifest files in a directory; other files are ignored.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// `*.schema.json` files document the format; they are not manifests.
const SCHEMA_SUFFIX: &str = ".schema.json";

/// The `-f` value that means standard input.
pub const STDIN: &str = "-";

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    /// 1-based.
    pub document: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.file, self.document)
    }
}

/// One valid manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub source: Source,
    pub key: InstanceKey,
    pub spec: Spec,
}

impl Manifest {
    /// `tenant/instance`.
    pub fn name(&self) -> String {
        self.key.path()
    }

    /// The body of `PUT`: the whole manifest (the server reads `spec` and checks that
    /// `metadata` names the path).
    pub fn body(&self) -> Value {
        json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "tenantId": self.key.tenant_id,
                "instanceId": self.key.instance_id,
            },
            "spec": self.spec_json(),
        })
    }

    /// The spec as JSON, without the server-managed `restore`.
    pub fn spec_json(&self) -> Value {
        let mut spec = serde_json::to_value(&self.spec).unwrap_or(Value::Null);
        if let Some(obj) = spec.as_object_mut() {
            obj.remove("restore");
        }
        spec
    }
}

/// The shape of a document; every level rejects unknown fields.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawManifest {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawMetadata {
    tenant_id: String,
    instance_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// JSON for `.json`, YAML for anything else (YAML also reads most JSON).
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Every manifest of every path (files, directories, `-`), in order; or every problem found,
/// one per line-item, when any document is invalid.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Manifest>, Vec<String>> {
    let mut problems = vec![];
    let mut manifests = vec![];
    for file in expand(paths, &mut problems) {
        match read(&file) {
            Ok(text) => {
                let name = display_name(&file);
                let (found, bad) = parse(&text, &name, Format::of(&file));
                manifests.extend(found);
                problems.extend(bad);
            }
            Err(e) => problems.push(e),
        }
    }
    problems.extend(duplicates(&manifests));
    if manifests.is_empty() && problems.is_empty() {
        problems.push("no manifests found".into());
    }
    if problems.is_empty() {
        Ok(manifests)
    } else {
        Err(problems)
    }
}

/// Files to read: a directory means its manifest files (by name, not recursive).
pub fn expand(paths: &[PathBuf], problems: &mut Vec<String>) -> Vec<PathBuf> {
    let mut files = vec![];
    for path in paths {
        if path.as_os_str() == STDIN || !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match dir_manifests(path) {
            Ok(found) if found.is_empty() => problems.push(format!(
                "{}: no *.yaml, *.yml or *.json manifests in this directory",
                path.display()
            )),
            Ok(found) => files.extend(found),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    files
}

/// The manifest files directly in `dir`, sorted by file name.
pub fn dir_manifests(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && is_manifest_name(&path) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn is_manifest_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let ext_ok = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
    // Hidden files are editor swap files and the like.
    ext_ok && !name.starts_with('.') && !name.to_ascii_lowercase().ends_with(SCHEMA_SUFFIX)
}

fn display_name(path: &Path) -> String {
    if path.as_os_str() == STDIN {
        "<stdin>".into()
    } else {
        path.display().to_string()
    }
}

fn read(path: &Path) -> Result<String, String> {
    let name = display_name(path);
    let mut text = String::new();
    let result = if path.as_os_str() == STDIN {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    result.map_err(|e| format!("{name}: cannot read: {e}"))?;
    Ok(text)
}

/// Parses one file's text: the valid manifests and the problems, each naming its place.
pub fn parse(text: &str, file: &str, format: Format) -> (Vec<Manifest>, Vec<String>) {
    let docs = match format {
        Format::Yaml => yaml_documents(text),
        Format::Json => json_documents(text),
    };
    let mut manifests = vec![];
    let mut problems = vec![];
    for (i, doc) in docs.into_iter().enumerate() {
        let source = Source {
            file: file.to_owned(),
            document: i + 1,
        };
        match doc.and_then(|raw| raw.map(|r| check(r, &source)).transpose()) {
            Ok(Some(m)) => manifests.push(m),
            Ok(None) => {} // an empty document, e.g. after a trailing `---`
            Err(errors) => problems.extend(errors.into_iter().map(|e| format!("{source}: {e}"))),
        }
    }
    (manifests, problems)
}

type Doc = Result<Option<RawManifest>, Vec<String>>;

/// Each `---` document on its own, so one broken document does not hide the problems of
/// the others. (serde_norway's multi-document iterator also never ends after a syntax
/// error; splitting first avoids that too.)
fn yaml_documents(text: &str) -> Vec<Doc> {
    split_yaml(text)
        .into_iter()
        .map(|(first_line, chunk)| {
            // Blank lines in front keep the parser's line numbers those of the file.
            let padded = format!("{}{chunk}", "\n".repeat(first_line - 1));
            let de = serde_norway::Deserializer::from_str(&padded);
            deserialize::<Option<RawManifest>, _>(de).map_err(|e| vec![e])
        })
        .collect()
}

/// Splits a YAML stream at `---` lines, as kubectl does: `(first line, text)` per document,
/// the marker line included. Comments or blank lines before the first marker are not a
/// document (YAML agrees).
fn split_yaml(text: &str) -> Vec<(usize, &str)> {
    let mut docs = vec![];
    let (mut start, mut start_line, mut offset) = (0, 1, 0);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if is_document_marker(line) && offset > start {
            let chunk = &text[start..offset];
            if !docs.is_empty() || has_content(chunk) {
                docs.push((start_line, chunk));
            }
            (start, start_line) = (offset, i + 1);
        }
        offset += line.len();
    }
    let last = &text[start..];
    if !docs.is_empty() || has_content(last) || is_document_marker(last) {
        docs.push((start_line, last));
    }
    docs
}

fn is_document_marker(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// Anything but blank lines, comments and directives.
fn has_content(chunk: &str) -> bool {
    chunk.lines().any(|l| {
        let l = l.trim();
        !l.is_empty() && !l.starts_with('#') && !l.starts_with('%')
    })
}

/// A JSON file holds one manifest object or an array of them.
fn json_documents(text: &str) -> Vec<Doc> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return vec![Err(vec![format!("not valid JSON: {e}")])],
    };
    let items = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| deserialize::<Option<RawManifest>, _>(item).map_err(|e| vec![e]))
        .collect()
}

/// Deserializes with the failing field's path: `spec.configuration.desiredCnt: …`.
fn deserialize<'de, T, D>(de: D) -> Result<T, String>
where
    T: DeserializeOwned,
    D: serde::Deserializer<'de>,
    D::Error: fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|e| {
        let serde_path = e.path().to_string();
        let message = e.inner().to_string();
        // serde_norway puts the path in its message too; say it once.
        let message = without_path_prefix(&message, &serde_path).to_owned();
        let path = field_path(&serde_path, &message);
        let message = with_quote_hint(message);
        if path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        }
    })
}

/// JSON's `"wordpressVersion": 6.5` is a number, not the string the spec wants; say how to
/// fix it. (YAML reads a plain `6.5` as whatever the field expects, so this is JSON's.)
fn with_quote_hint(message: String) -> String {
    let numeric = ["floating point", "integer"]
        .iter()
        .any(|t| message.starts_with(&format!("invalid type: {t}")));
    if numeric && message.contains("expected a string") {
        format!("{message} (quote the value, e.g. \"6.5\")")
    } else {
        message
    }
}

/// `spec.configuration: unknown field …` → `unknown field …` when the prefix is (a parent
/// of) the path reported anyway.
fn without_path_prefix<'m>(message: &'m str, path: &str) -> &'m str {
    let Some((prefix, rest)) = message.split_once(": ") else {
        return message;
    };
    let within = path
        .strip_prefix(prefix)
        .is_some_and(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['));
    if within { rest } else { message }
}

/// serde names a missing or unknown field at its parent; name the field itself.
fn field_path(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    let named = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))
        .and_then(|rest| rest.split('`').next());
    match named {
        Some(field) if !field.is_empty() && !path.ends_with(field) => {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        }
        _ => path.to_owned(),
    }
}

/// What serde cannot check: constants, ids, the model's rules.
fn check(raw: RawManifest, source: &Source) -> Result<Manifest, Vec<String>> {
    let mut errors = vec![];
    if raw.api_version != API_VERSION {
        errors.push(format!("apiVersion: must be {API_VERSION}"));
    }
    if raw.kind != KIND {
        errors.push(format!("kind: must be {KIND}"));
    }
    let tenant = TenantId::parse(&raw.metadata.tenant_id)
        .map_err(|e| errors.push(format!("metadata.tenantId: {e}")))
        .ok();
    let instance = InstanceId::parse(&raw.metadata.instance_id)
        .map_err(|e| errors.push(format!("metadata.instanceId: {e}")))
        .ok();
    if raw.spec.restore.is_some() {
        errors
            .push("spec.restore: is set by `wpfleet restore`, not by a manifest; remove it".into());
    }
    errors.extend(
        validate_spec(&raw.spec)
            .into_iter()
            .map(|f| format!("spec.{}: {}", f.field, f.message)),
    );
    match (tenant, instance) {
        (Some(t), Some(i)) if errors.is_empty() => Ok(Manifest {
            source: source.clone(),
            key: InstanceKey::new(t, i),
            spec: raw.spec,
        }),
        _ => Err(errors),
    }
}

/// The same instance twice would be applied twice, the second silently winning.
fn duplicates(manifests: &[Manifest]) -> Vec<String> {
    let mut problems = vec![];
    for (i, m) in manifests.iter().enumerate() {
        if let Some(first) = manifests[..i].iter().find(|o| o.key == m.key) {
            problems.push(format!(
                "{}: instance {} is already defined in {}",
                m.source,
                m.name(),
                first.source
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DesiredState, Tier};

    const BLOG: &str = "apiVersion: wpfleet.io/v1
kind: Instance
metadata:
  tenantId: acme
  instanceId: blog
spec:
  organizationName: Acme
  contactEmail: ops@acme.example
  tier: STANDARD
  configuration:
    desiredCount: 3
";

    fn yaml(text: &str) -> (Vec<Manifest>, Vec<String>) {
        parse(text, "m.yaml", Format::Yaml)
    }

    #[test]
    fn a_yaml_manifest_reads_into_the_model() {
        let (ms, errors) = yaml(BLOG);
        assert!(errors.is_empty(), "{errors:?}");
        let m = &ms[0];
        assert_eq!(m.name(), "acme/blog");
        assert_eq!(m.spec.tier, Tier::Standard);
        assert_eq!(m.spec.state, DesiredState::Active);
        assert_eq!(m.spec.configuration.desired_count, 3);
        assert_eq!(m.spec.configuration.php_version, "8.2", "model default");
        assert_eq!(
            m.source,
            Source {
                file: "m.yaml".into(),
                document: 1
            }
        );
        assert_eq!(m.body()["metadata"]["instanceId"], "blog");
        assert!(m.body()["spec"].get("restore").is_none());
    }

    #[test]
    fn multi_document_yaml_counts_every_document() {
        let shop = BLOG.replace("blog", "shop");
        let text = format!("---\n{BLOG}---\n# only a comment\n---\n{shop}---\n");
        let (ms, errors) = yaml(&text);
        assert!(errors.is_empty(), "{errors:?}");
        let found: Vec<(String, usize)> =
            ms.iter().map(|m| (m.name(), m.source.document)).collect();
        assert_eq!(
            found,
            [("acme/blog".to_string(), 1), ("acme/shop".to_string(), 3)]
        );
    }

    #[test]
    fn yaml_streams_split_at_marker_lines() {
        let starts = |text: &str| -> Vec<usize> { split_yaml(text).iter().map(|d| d.0).collect() };
        assert_eq!(starts("a: 1\n"), [1]);
        assert_eq!(starts("# c\n---\na: 1\n"), [2]);
        assert_eq!(starts("a: 1\n---\nb: 2\n--- # x\nc: 3\n"), [1, 2, 4]);
        assert_eq!(starts("a: |\n  ---\n---not-a-marker: 1\n"), [1]);
        assert_eq!(starts(""), Vec::<usize>::new());
        assert_eq!(starts("---\n"), [1]);
    }

    #[test]
    fn errors_carry_file_line_numbers() {
        let typo = BLOG.replace("desiredCount", "desiredCnt");
        let (_, errors) = yaml(&format!("{BLOG}---\n{typo}"));
        // BLOG is 11 lines; the marker is line 12; `desiredCnt` is line 23.
        assert!(errors[0].ends_with("at line 23 column 5"), "{errors:?}");
    }

    #[test]
    fn json_files_hold_one_manifest_or_an_array() {
        let one: Value = serde_norway::from_str(BLOG).unwrap();
        let (ms, errors) = parse(&one.to_string(), "m.json", Format::Json);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ms.len(), 1);
        let mut other = one.clone();
        other["metadata"]["instanceId"] = json!("shop");
        let (ms, errors) = parse(&json!([one, other]).to_string(), "m.json", Format::Json);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ms[1].name(), "acme/shop");
        assert_eq!(ms[1].source.document, 2);
        let (_, errors) = parse("{not json", "m.json", Format::Json);
        assert!(
            errors[0].starts_with("m.json (document 1): not valid JSON"),
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_fields_name_file_document_and_path() {
        let typo = BLOG.replace("desiredCount", "desiredCnt");
        let text = format!("{BLOG}---\n{typo}");
        let (_, errors) = yaml(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "m.yaml (document 2): spec.configuration.desiredCnt: unknown field `desiredCnt`"
            ),
            "{errors:?}"
        );
        let (_, errors) = yaml(&BLOG.replace("kind:", "labels: {}\nkind:"));
        assert!(
            errors[0].starts_with("m.yaml (document 1): labels: unknown field"),
            "{errors:?}"
        );
        let (_, errors) = yaml(&BLOG.replace("  tenantId: acme\n", ""));
        assert!(
            errors[0].starts_with("m.yaml (document 1): metadata.tenantId: missing field"),
            "{errors:?}"
        );
    }

    #[test]
    fn model_rules_apply_and_all_problems_are_listed() {
        let bad = BLOG
            .replace("wpfleet.io/v1", "wpfleet.io/v2")
            .replace("tenantId: acme", "tenantId: Acme")
            .replace("desiredCount: 3", "desiredCount: 5") // STANDARD allows 4
            .replace("ops@acme.example", "nobody");
        let (ms, errors) = yaml(&bad);
        assert!(ms.is_empty());
        assert_eq!(
            errors,
            [
                "m.yaml (document 1): apiVersion: must be wpfleet.io/v1",
                "m.yaml (document 1): metadata.tenantId: may contain only lowercase letters a-z, \
                 digits 0-9 and single hyphens, and must start and end with a letter or digit",
                "m.yaml (document 1): spec.contactEmail: must be an email address like name@example.com",
                "m.yaml (document 1): spec.configuration.desiredCount: tier STANDARD allows at most 4 tasks",
            ]
        );
    }

    #[test]
    fn restore_and_bad_enums_are_refused() {
        let with_restore = format!("{BLOG}  restore: {{backupId: b, requestId: r}}\n");
        let (_, errors) = yaml(&with_restore);
        assert!(
            errors[0].contains("spec.restore: is set by `wpfleet restore`"),
            "{errors:?}"
        );
        let (_, errors) = yaml(&BLOG.replace("STANDARD", "GOLD"));
        assert!(
            errors[0].starts_with("m.yaml (document 1): spec.tier: unknown variant `GOLD`"),
            "{errors:?}"
        );
    }

    #[test]
    fn unquoted_versions_get_a_hint() {
        // YAML reads a plain 6.5 as the string the spec wants; JSON does not.
        let (ms, _) = yaml(&format!("{BLOG}    wordpressVersion: 6.10\n"));
        assert_eq!(ms[0].spec.configuration.wordpress_version, "6.10");
        let mut v: Value = serde_norway::from_str(BLOG).unwrap();
        v["spec"]["configuration"]["wordpressVersion"] = json!(6.5);
        let (_, errors) = parse(&v.to_string(), "m.json", Format::Json);
        assert!(
            errors[0].starts_with(
                "m.json (document 1): spec.configuration.wordpressVersion: invalid type: floating point `6.5`, expected a string"
            ),
            "{errors:?}"
        );
        assert!(
            errors[0].ends_with("(quote the value, e.g. \"6.5\")"),
            "{errors:?}"
        );
    }

    #[test]
    fn broken_yaml_is_a_problem_not_a_panic() {
        let (ms, errors) = yaml("apiVersion: [unclosed\n");
        assert!(ms.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("m.yaml (document 1): "), "{errors:?}");
        let (_, errors) = yaml("- a\n- b\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        // A syntax error in one document does not hide the next one's problems.
        let text = format!("a: [unclosed\n---\n{}", BLOG.replace("STANDARD", "GOLD"));
        let (_, errors) = yaml(&text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[1].starts_with("m.yaml (document 2): spec.tier"),
            "{errors:?}"
        );
    }

    #[test]
    fn directories_read_manifests_in_name_order_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("b.yml", &BLOG.replace("blog", "b"));
        write("a.yaml", &BLOG.replace("blog", "a"));
        let c: Value = serde_norway::from_str(&BLOG.replace("blog", "c")).unwrap();
        write("c.json", &c.to_string());
        write("instance.schema.json", "{}");
        write("README.md", "# not a manifest");
        write(".swap.yaml", "garbage: [");
        std::fs::create_dir(dir.path().join("nested.yaml")).unwrap();
        let ms = load(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<String> = ms.iter().map(Manifest::name).collect();
        assert_eq!(names, ["acme/a", "acme/b", "acme/c"]);
    }

    #[test]
    fn duplicates_and_empty_inputs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, format!("{BLOG}---\n{BLOG}")).unwrap();
        let errors = load(std::slice::from_ref(&file)).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with(&format!(
                "x.yaml (document 2): instance acme/blog is already defined in {} (document 1)",
                file.display()
            )),
            "{errors:?}"
        );
        std::fs::write(&file, "# nothing\n").unwrap();
        assert_eq!(load(&[file]).unwrap_err(), ["no manifests found"]);
        let empty = tempfile::tempdir().unwrap();
        let errors = load(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(errors[0].ends_with("no *.yaml, *.yml or *.json manifests in this directory"));
        let errors = load(&[dir.path().join("missing.yaml")]).unwrap_err();
        assert!(
            errors[0].contains("missing.yaml: cannot read"),
            "{errors:?}"
        );
    }
}
