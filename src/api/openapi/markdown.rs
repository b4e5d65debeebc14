//! `docs/API.md`: the OpenAPI document rendered as a Markdown reference (endpoints grouped
//! by tag, with parameters, bodies, responses and error codes; then the schemas).
//!
//! It reads only the document (as JSON), never the handlers, so the reference cannot say
//! anything the document does not. The output is deterministic: `tests/openapi.rs` compares
//! it with the committed `docs/API.md`.

use std::fmt::Write;

use serde_json::{Map, Value};

/// How to regenerate `docs/API.md`; printed in the file and by the test that guards it.
pub const REGENERATE: &str = "cargo run -- openapi --markdown > docs/API.md";

/// The Markdown reference of the API's document.
pub fn markdown() -> String {
    let doc = serde_json::to_value(super::document()).unwrap_or_default();
    render(&doc)
}

const METHODS: [&str; 8] = [
    "get", "post", "put", "delete", "patch", "head", "options", "trace",
];

/// Renders an OpenAPI 3.1 document (as utoipa emits it).
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let info = &doc["info"];
    let _ = writeln!(out, "# {}", text(&info["title"]));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "<!-- Generated from the OpenAPI document by `{REGENERATE}`. Do not edit by hand: \
         tests/openapi.rs fails when this file is out of date. -->"
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Version {}, OpenAPI {}. The server serves this document as JSON at \
         `GET /openapi.json`; `wpfleet openapi` prints it.",
        text(&info["version"]),
        text(&doc["openapi"])
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", text(&info["description"]));
    let _ = writeln!(out);

    render_security(&mut out, doc);
    render_error_codes(&mut out, doc);
    render_endpoints(&mut out, doc);
    render_schemas(&mut out, doc);
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn render_security(out: &mut String, doc: &Value) {
    let Some(schemes) = doc["components"]["securitySchemes"].as_object() else {
        return;
    };
    let _ = writeln!(out, "## Authentication");
    let _ = writeln!(out);
    for (name, scheme) in schemes {
        let _ = writeln!(
            out,
            "* `{name}`: HTTP `{}` ({}). {}",
            text(&scheme["scheme"]),
            text(&scheme["bearerFormat"]),
            text(&scheme["description"])
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Endpoints below say which scheme they need; those that say none are open."
    );
    let _ = writeln!(out);
}

fn render_error_codes(out: &mut String, doc: &Value) {
    let Some(codes) = doc["components"]["schemas"]["ErrorCode"]["oneOf"].as_array() else {
        return;
    };
    let _ = writeln!(out, "## Errors");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Every error has the body [`ErrorBody`](#errorbody): \
         `{{\"error\":{{\"code\",\"message\",\"details\"}}}}`. Branch on `code`; each code \
         always comes with the same status."
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| code | status | when |");
    let _ = writeln!(out, "|---|---|---|");
    for code in codes {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            text(&code["title"]),
            code["x-http-status"],
            cell(&text(&code["description"]))
        );
    }
    let _ = writeln!(out);
}

fn render_endpoints(out: &mut String, doc: &Value) {
    let _ = writeln!(out, "## Endpoints");
    let _ = writeln!(out);
    let empty = Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    let tags = doc["tags"].as_array().cloned().unwrap_or_default();
    for tag in &tags {
        let name = text(&tag["name"]);
        let _ = writeln!(out, "### {}", title_case(&name));
        let _ = writeln!(out);
        if let Some(d) = tag["description"].as_str() {
            let _ = writeln!(out, "{d}");
            let _ = writeln!(out);
        }
        for (path, item) in paths {
            for method in METHODS {
                let op = &item[method];
                let tagged = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t.as_str() == Some(name.as_str())));
                if tagged {
                    render_operation(out, doc, method, path, op);
                }
            }
        }
    }
}

fn render_operation(out: &mut String, doc: &Value, method: &str, path: &str, op: &Value) {
    let _ = writeln!(
        out,
        "#### `{} {path}`: {}",
        method.to_uppercase(),
        text(&op["summary"])
    );
    let _ = writeln!(out);
    if let Some(d) = op["description"].as_str() {
        let _ = writeln!(out, "{}", d.replace('\n', " "));
        let _ = writeln!(out);
    }
    let security: Vec<String> = op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|req| req.keys().map(|k| format!("`{k}`")))
        .collect();
    let _ = writeln!(
        out,
        "* Operation id: `{}`. Auth: {}.",
        text(&op["operationId"]),
        if security.is_empty() {
            "none".to_owned()
        } else {
            security.join(", ")
        }
    );
    if let Some(body) = op["requestBody"].as_object() {
        for (media, content) in body
            .get("content")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "* Body ({media}{}): {}",
                if body.get("required") == Some(&Value::Bool(true)) {
                    ", required"
                } else {
                    ""
                },
                type_of(&content["schema"])
            );
        }
    }
    let _ = writeln!(out);
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        let _ = writeln!(out, "| parameter | in | type | required | description |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for p in params {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                text(&p["name"]),
                text(&p["in"]),
                cell(&type_of(&p["schema"])),
                if p["required"] == Value::Bool(true) {
                    "yes"
                } else {
                    "no"
                },
                cell(&text(&p["description"]))
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "| status | body | description |");
    let _ = writeln!(out, "|---|---|---|");
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        let response = resolve(doc, response);
        let codes = error_codes(response);
        let content = response["content"]["application/json"]["schema"].clone();
        let body = if !codes.is_empty() {
            let codes: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
            format!("[`ErrorBody`](#errorbody): {}", codes.join(", "))
        } else if content.is_null() {
            String::new()
        } else {
            type_of(&content)
        };
        let mut description = if codes.is_empty() {
            text(&response["description"])
        } else {
            String::new()
        };
        if let Some(headers) = response["headers"].as_object() {
            let names: Vec<String> = headers.keys().map(|h| format!("`{h}`")).collect();
            let _ = write!(
                description,
                "{}Headers: {}.",
                if description.is_empty() { "" } else { " " },
                names.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "| {status} | {} | {} |",
            cell(&body),
            cell(&description)
        );
    }
    let _ = writeln!(out);
}

/// The codes an error response narrows `ErrorBody.error.code` to (empty if not an error).
fn error_codes(response: &Value) -> Vec<String> {
    let schema = &response["content"]["application/json"]["schema"];
    schema["allOf"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            s["properties"]["error"]["properties"]["code"]["enum"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|c| text(&c))
        .collect()
}

/// Follows a `$ref` into `components` (one level; that is all the document uses).
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let Some(location) = value["$ref"].as_str() else {
        return value;
    };
    let mut target = doc;
    for part in location.trim_start_matches("#/").split('/') {
        target = &target[part];
    }
    target
}

fn render_schemas(out: &mut String, doc: &Value) {
    let _ = writeln!(out, "## Schemas");
    let _ = writeln!(out);
    let empty = Map::new();
    let schemas = doc["components"]["schemas"].as_object().unwrap_or(&empty);
    for (name, schema) in schemas {
        let _ = writeln!(out, "### {name}");
        let _ = writeln!(out);
        if let Some(d) = schema["description"].as_str() {
            let _ = writeln!(out, "{}", d.replace('\n', " "));
            let _ = writeln!(out);
        }
        // `#[serde(flatten)]` appears as allOf: the referenced schema's fields, plus these.
        let mut parts = vec![schema];
        if let Some(all) = schema["allOf"].as_array() {
            let bases: Vec<String> = all
                .iter()
                .filter_map(|s| s["$ref"].as_str())
                .map(link)
                .collect();
            if !bases.is_empty() {
                let _ = writeln!(out, "All the fields of {}, and:", bases.join(", "));
                let _ = writeln!(out);
            }
            parts = all.iter().filter(|s| s["$ref"].is_null()).collect();
        }
        let properties = properties_of(&parts);
        if !properties.is_empty() {
            render_properties(out, schema, &properties);
        } else if name == "ErrorCode" {
            let _ = writeln!(out, "One of the codes in [Errors](#errors).");
            let _ = writeln!(out);
        } else if let Some(alternatives) = schema["oneOf"].as_array() {
            let _ = writeln!(out, "One of:");
            let _ = writeln!(out);
            for alternative in alternatives {
                if alternative["$ref"].is_string() {
                    let _ = writeln!(out, "* {}", type_of(alternative));
                    continue;
                }
                let _ = writeln!(
                    out,
                    "* {}: {}",
                    text(&alternative["title"]),
                    description_of(alternative)
                );
            }
            let _ = writeln!(out);
            for alternative in alternatives {
                let properties = properties_of(&[alternative]);
                if !properties.is_empty() {
                    let _ = writeln!(out, "{}:", text(&alternative["title"]));
                    let _ = writeln!(out);
                    render_properties(out, alternative, &properties);
                }
            }
        } else {
            let _ = writeln!(out, "{}.", type_of(schema));
            let _ = writeln!(out);
        }
    }
}

/// `(name, schema, required)` of each property of these (allOf) parts, in order.
fn properties_of<'a>(parts: &[&'a Value]) -> Vec<(&'a String, &'a Value, bool)> {
    parts
        .iter()
        .flat_map(|part| {
            let required: Vec<&str> = part["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            part["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(k, v)| (k, v, required.contains(&k.as_str())))
        })
        .collect()
}

fn render_properties(out: &mut String, schema: &Value, properties: &[(&String, &Value, bool)]) {
    let _ = writeln!(out, "| field | type | required | description |");
    let _ = writeln!(out, "|---|---|---|---|");
    for (field, prop, required) in properties {
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            cell(&type_of(prop)),
            if *required { "yes" } else { "no" },
            cell(&description_of(prop))
        );
    }
    if schema["additionalProperties"] == Value::Bool(false) {
        let _ = writeln!(out);
        let _ = writeln!(out, "No other fields are accepted.");
    }
    let _ = writeln!(out);
}

/// A property's description, or that of the `$ref` inside its `oneOf` (Option fields).
fn description_of(schema: &Value) -> String {
    if let Some(d) = schema["description"].as_str() {
        return d.replace('\n', " ");
    }
    schema["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|s| s["description"].as_str())
        .map(|d| d.replace('\n', " "))
        .unwrap_or_default()
}

/// A short, linked type with its constraints, e.g. ``string (1–63 chars, pattern `…`)``.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return link(r);
    }
    for combinator in ["oneOf", "anyOf"] {
        if let Some(items) = schema[combinator].as_array() {
            let types: Vec<String> = items.iter().map(type_of).collect();
            return types.join(" | ");
        }
    }
    if let Some(items) = schema["allOf"].as_array() {
        let types: Vec<String> = items.iter().map(type_of).collect();
        return types.join(" + ");
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return with_default(values.join(" | "), schema);
    }
    let types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().map(text).collect(),
        _ => vec![],
    };
    let mut shown = Vec::new();
    for t in &types {
        let rendered = match t.as_str() {
            "array" => format!("array of {}", type_of(&schema["items"])),
            "object" if schema["additionalProperties"].is_object() => {
                format!("map of {}", type_of(&schema["additionalProperties"]))
            }
            other => other.to_owned(),
        };
        shown.push(rendered);
    }
    if shown.is_empty() {
        shown.push("any".to_owned());
    }
    let mut rendered = shown.join(" | ");
    let mut constraints = Vec::new();
    if let Some(f) = schema["format"].as_str() {
        constraints.push(f.to_owned());
    }
    match (schema["minLength"].as_u64(), schema["maxLength"].as_u64()) {
        (Some(min), Some(max)) => constraints.push(format!("{min}–{max} chars")),
        (None, Some(max)) => constraints.push(format!("at most {max} chars")),
        (Some(min), None) => constraints.push(format!("at least {min} chars")),
        (None, None) => {}
    }
    match (&schema["minimum"], &schema["maximum"]) {
        (Value::Number(min), Value::Number(max)) => constraints.push(format!("{min}–{max}")),
        (Value::Number(min), _) if min.as_u64() != Some(0) => {
            constraints.push(format!("≥ {min}"));
        }
        (_, Value::Number(max)) => constraints.push(format!("≤ {max}")),
        _ => {}
    }
    if let Some(p) = schema["pattern"].as_str() {
        constraints.push(format!("pattern `{p}`"));
    }
    if !constraints.is_empty() {
        let _ = write!(rendered, " ({})", constraints.join(", "));
    }
    with_default(rendered, schema)
}

fn with_default(rendered: String, schema: &Value) -> String {
    match &schema["default"] {
        Value::Null => rendered,
        d => format!("{rendered}, default `{d}`"),
    }
}

/// `#/components/schemas/InstanceView` → `[InstanceView](#instanceview)`.
fn link(reference: &str) -> String {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    format!("[{name}](#{})", name.to_lowercase())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Text that is safe in a table cell.
fn cell(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

fn title_case(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_render_with_their_constraints() {
        let id = json!({"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^a$"});
        assert_eq!(type_of(&id), "string (1–63 chars, pattern `^a$`)");
        let limit = json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 50});
        assert_eq!(type_of(&limit), "integer (1–1000), default `50`");
        let opt = json!({"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/LastError"}]});
        assert_eq!(type_of(&opt), "null | [LastError](#lasterror)");
        let links = json!({"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Link"}});
        assert_eq!(type_of(&links), "map of [Link](#link)");
    }

    #[test]
    fn the_reference_lists_every_operation() {
        let md = markdown();
        let doc = serde_json::to_value(super::super::document()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let heading = format!("#### `{} {path}`", method.to_uppercase());
                assert!(md.contains(&heading), "{heading} missing");
            }
        }
    }
}
