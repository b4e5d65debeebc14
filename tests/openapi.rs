//! The OpenAPI document (`GET /openapi.json`) stays true to the running server, and
//! `docs/API.md` stays what the generator prints.
//!
//! * Every route the router serves is documented with exactly its methods: the routes are
//!   listed here, compared with the router's own route table (read from its `Debug`
//!   output: axum has no public route listing) and with the methods the server answers
//!   on each path (the `Allow` header of its 405), and with the document's paths.
//! * Every `/v1.0` operation requires the bearer token and documents 401, and really
//!   answers 401 without one; every error response uses the shared error schema, with codes
//!   whose status is the one documented.
//! * Real responses (create, get, list, status, errors, 202 bodies, …) validate against the
//!   documented schema of their operation and status, by a small schema walker below
//!   (`validate`): `$ref`, `allOf`/`oneOf`, `type`, `required`, `properties` (undocumented
//!   properties fail), `additionalProperties`, `items`, `enum`, lengths, ranges and
//!   `date-time`. It does not evaluate `pattern` (no regex engine in the tree).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Client, TestServer, instance_path, spec};
use reqwest::Method;
use serde_json::{Value, json};

/// Every route the router serves, with its methods (HEAD, which axum adds to GET, aside).
/// A route added to the router must be added here and documented, or this test fails.
const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/v1.0/reconcile", &["POST"]),
    ("/v1.0/instances", &["GET"]),
    ("/v1.0/sim/inventory", &["GET"]),
    ("/v1.0/sim/stats", &["GET"]),
    ("/v1.0/sim/calls", &["GET"]),
    ("/v1.0/sim/faults", &["PUT"]),
    (
        "/v1.0/sim/tenants/{tenantId}/instances/{instanceId}/drift",
        &["POST"],
    ),
    ("/v1.0/tenants/{tenantId}/instances", &["GET", "POST"]),
    ("/v1.0/tenants/{tenantId}/reconcile", &["POST"]),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}",
        &["GET", "PUT", "DELETE"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/status",
        &["GET", "POST"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/reconcile",
        &["POST"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/scale",
        &["POST"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/suspend",
        &["POST"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/resume",
        &["POST"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/backup",
        &["POST"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/backups",
        &["GET"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/backups/{backupId}",
        &["GET"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/restore",
        &["POST"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/logs",
        &["GET"],
    ),
    (
        "/v1.0/tenants/{tenantId}/instances/{instanceId}/events",
        &["GET"],
    ),
];

/// The platform's error codes and their statuses: the contract `ErrorCode` must keep.
const CODES: &[(&str, u64)] = &[
    ("VALIDATION_ERROR", 400),
    ("UNAUTHORIZED", 401),
    ("FORBIDDEN", 403),
    ("INSTANCE_NOT_FOUND", 404),
    ("BACKUP_NOT_FOUND", 404),
    ("NOT_FOUND", 404),
    ("METHOD_NOT_ALLOWED", 405),
    ("INSTANCE_EXISTS", 409),
    ("CONFLICT", 409),
    ("PRECONDITION_FAILED", 412),
    ("PAYLOAD_TOO_LARGE", 413),
    ("UNSUPPORTED_MEDIA_TYPE", 415),
    ("INVALID_STATUS_TRANSITION", 422),
    ("SCALE_LIMIT_EXCEEDED", 422),
    ("BACKUP_NOT_READY", 422),
    ("RATE_LIMITED", 429),
    ("INTERNAL_ERROR", 500),
    ("SERVICE_UNAVAILABLE", 503),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Fetches the document the way a client would: no token.
async fn fetch_document(srv: &TestServer) -> Value {
    let anonymous = Client::new(&srv.running().url());
    let r = anonymous.get("/openapi.json").await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    r.body
}

/// `(path, METHOD)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    ops
}

fn listed() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(|m| (path.to_string(), m.to_string())))
        .collect()
}

/// A concrete URL path for a route template.
fn concrete(template: &str) -> String {
    template
        .replace("{tenantId}", "t1")
        .replace("{instanceId}", "blog")
        .replace("{backupId}", "bk-000000000000deadbeef")
}

/// The route paths in the router's table. axum 0.8 has no public listing; its `Debug`
/// output names them (`Node { paths: {RouteId(1): "/healthz", …} }`).
fn router_paths(srv: &TestServer) -> BTreeSet<String> {
    let r = srv.running();
    let app = wpfleet::api::AppState {
        store: r.store.clone(),
        cloud: r.sim.clone().expect("the in-process simulated cloud"),
        auth: r.auth.clone(),
        trigger: r.reconciler.trigger(),
        reconciler: r.reconciler.clone(),
        sim: r.sim.clone(),
        retention_days: 30,
        live_tasks: Default::default(),
    };
    let debug = format!("{:?}", wpfleet::api::router(app));
    // The fallback router (404s) comes after the routes and is not a route.
    let routes = debug.split("fallback_router").next().unwrap_or("");
    let table = routes
        .split("node: Node { paths: {")
        .nth(1)
        .unwrap_or_else(|| panic!("axum's Router Debug output changed; update router_paths"));
    let paths: BTreeSet<String> = table
        .split("RouteId(")
        .skip(1)
        .filter_map(|entry| entry.split('"').nth(1))
        .map(str::to_owned)
        .collect();
    assert!(
        paths.contains("/healthz"),
        "could not read the route table from axum's Router Debug output: {table}"
    );
    paths
}

/// The methods the server answers on `path`: the `Allow` header of a 405 to a method
/// nothing routes.
async fn served_methods(c: &Client, path: &str) -> BTreeSet<String> {
    let probe = Method::from_bytes(b"PROBE").unwrap();
    let res = c
        .http
        .request(probe, c.url(&concrete(path)))
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(
        res.status().as_u16(),
        405,
        "{path}: a route must answer 405"
    );
    let allow = res
        .headers()
        .get("allow")
        .unwrap_or_else(|| panic!("{path}: no Allow header on the 405"))
        .to_str()
        .unwrap()
        .to_owned();
    allow
        .split(',')
        .map(|m| m.trim().to_owned())
        // axum answers HEAD wherever it answers GET; HEAD is not documented separately.
        .filter(|m| m != "HEAD" && !m.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1() {
    let srv = TestServer::start().await;
    let doc = fetch_document(&srv).await;
    let version = doc["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // Every operation has a unique operationId, a summary and at least one response.
    let mut ids = BTreeSet::new();
    for (path, method) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: id"));
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        assert!(op["summary"].is_string(), "{method} {path}: no summary");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}: no responses"
        );
        // Every `{param}` of the path is a documented, required path parameter.
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            let documented = op["parameters"].as_array().into_iter().flatten().any(|p| {
                p["name"] == name && p["in"] == "path" && p["required"] == Value::Bool(true)
            });
            assert!(
                documented,
                "{method} {path}: path parameter {name} undocumented"
            );
        }
    }

    // Every $ref points at something.
    let mut refs = vec![];
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(!resolve(&doc, &r).is_null(), "dangling $ref {r}");
    }

    // The same document as `wpfleet openapi` prints.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wpfleet"))
        .arg("openapi")
        .output()
        .expect("run wpfleet openapi");
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).expect("wpfleet openapi prints JSON");
    assert_eq!(
        printed, doc,
        "`wpfleet openapi` and GET /openapi.json differ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_with_its_methods() {
    let srv = TestServer::start().await;
    let doc = fetch_document(&srv).await;
    let listed = listed();

    let listed_paths: BTreeSet<String> = ROUTES.iter().map(|(p, _)| p.to_string()).collect();
    let routed = router_paths(&srv);
    assert_eq!(
        routed, listed_paths,
        "the router's routes differ from ROUTES in tests/openapi.rs: add the new route \
         there and document it (#[utoipa::path] on the handler, listed in api::openapi)"
    );

    let documented = documented(&doc);
    let undocumented: Vec<_> = listed.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&listed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not routed: {unserved:?}"
    );

    for (path, methods) in ROUTES {
        let served = served_methods(&srv.client, path).await;
        let want: BTreeSet<String> = methods.iter().map(|m| m.to_string()).collect();
        assert_eq!(served, want, "{path}: the server answers other methods");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_auth_and_its_errors() {
    let srv = TestServer::start().await;
    let doc = fetch_document(&srv).await;

    // The codes and statuses.
    let codes: BTreeMap<String, u64> = doc["components"]["schemas"]["ErrorCode"]["oneOf"]
        .as_array()
        .expect("ErrorCode is a oneOf")
        .iter()
        .map(|c| {
            (
                c["title"].as_str().unwrap().to_owned(),
                c["x-http-status"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeMap<String, u64> = CODES.iter().map(|(c, s)| (c.to_string(), *s)).collect();
    assert_eq!(codes, want);

    // The shared error schema.
    let error = resolve(&doc, "#/components/schemas/ErrorObject");
    assert_eq!(error["required"], json!(["code", "message", "details"]));
    let body = resolve(&doc, "#/components/schemas/ErrorBody");
    assert_eq!(body["required"], json!(["error"]));

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");

    let anonymous = Client::new(&srv.running().url());
    for (path, method) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let what = format!("{method} {path}");
        let guarded = path.starts_with("/v1.0/");
        let responses = op["responses"].as_object().unwrap();
        if guarded {
            assert_eq!(op["security"], json!([{"bearer": []}]), "{what}: security");
            assert!(responses.contains_key("401"), "{what}: no 401");
            assert!(responses.contains_key("403"), "{what}: no 403");
        } else {
            assert!(
                op["security"].is_null(),
                "{what}: an open route needs no token"
            );
            assert!(
                !responses.contains_key("401"),
                "{what}: an open route has no 401"
            );
        }
        let mut error_responses = 0;
        for (status, response) in responses {
            let code: u64 = status.parse().unwrap();
            if code < 400 || (path == "/readyz" && code == 503) {
                continue; // /readyz's 503 is a Readiness body: probes read the status
            }
            let response = resolve_value(&doc, response);
            let schema = &response["content"]["application/json"]["schema"];
            assert_eq!(
                schema["allOf"][0]["$ref"], "#/components/schemas/ErrorBody",
                "{what} {status}: not the error schema"
            );
            let listed = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("{what} {status}: no codes"));
            for c in listed {
                let c = c.as_str().unwrap();
                assert_eq!(codes.get(c), Some(&code), "{what}: {c} under {status}");
            }
            error_responses += 1;
        }
        assert!(error_responses > 0, "{what}: no error response documented");

        // And the server agrees: no token, no service.
        let r = anonymous
            .send(
                anonymous
                    .http
                    .request(method.parse().unwrap(), anonymous.url(&concrete(&path)))
                    .json(&json!({})),
            )
            .await;
        if guarded {
            r.expect_error(401, "UNAUTHORIZED");
            check(&doc, &path, &method, &r);
        } else {
            assert_ne!(r.status, 401, "{what} wants a token");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_match_their_documented_schemas() {
    let srv = TestServer::start().await;
    let doc = fetch_document(&srv).await;
    let c = &srv.client;
    let tenant = "/v1.0/tenants/{tenantId}/instances";
    let instance = "/v1.0/tenants/{tenantId}/instances/{instanceId}";
    let at = |suffix: &str| format!("{instance}/{suffix}");

    let mut body = spec(2);
    body["instanceId"] = json!("blog");
    let created = c.post("/v1.0/tenants/t1/instances", &body).await;
    assert_eq!(created.status, 202, "{:#}", created.body);
    check(&doc, tenant, "POST", &created);

    let path = instance_path("t1", "blog");
    check(&doc, instance, "GET", &c.get(&path).await);
    check(
        &doc,
        &at("status"),
        "GET",
        &c.get(&format!("{path}/status")).await,
    );
    check(
        &doc,
        tenant,
        "GET",
        &c.get("/v1.0/tenants/t1/instances").await,
    );

    // Converged, the resource has resources, tasks and conditions to check.
    c.wait_phase("t1", "blog", "ACTIVE").await;
    check(&doc, instance, "GET", &c.get(&path).await);
    check(
        &doc,
        &at("status"),
        "GET",
        &c.get(&format!("{path}/status")).await,
    );
    check(
        &doc,
        tenant,
        "GET",
        &c.get("/v1.0/tenants/t1/instances?limit=1").await,
    );
    check(
        &doc,
        "/v1.0/instances",
        "GET",
        &c.get("/v1.0/instances").await,
    );
    let scaled = c
        .post(&format!("{path}/scale"), &json!({"desiredCount": 3}))
        .await;
    check(&doc, &at("scale"), "POST", &scaled);
    check(&doc, instance, "PUT", &c.put(&path, &spec(3)).await);

    // The 202 bodies.
    let reconcile = c.post(&format!("{path}/reconcile"), &json!({})).await;
    check(&doc, &at("reconcile"), "POST", &reconcile);
    check(
        &doc,
        "/v1.0/reconcile",
        "POST",
        &c.post("/v1.0/reconcile", &json!({})).await,
    );
    let backup = c.post(&format!("{path}/backup"), &json!({})).await;
    check(&doc, &at("backup"), "POST", &backup);
    let backup_id = backup.body["backupId"].as_str().unwrap().to_owned();
    check(
        &doc,
        &at("backups"),
        "GET",
        &c.get(&format!("{path}/backups")).await,
    );
    let one = c.get(&format!("{path}/backups/{backup_id}")).await;
    check(&doc, &at("backups/{backupId}"), "GET", &one);
    check(
        &doc,
        &at("logs"),
        "GET",
        &c.get(&format!("{path}/logs")).await,
    );
    let events = c.get(&format!("{path}/events")).await;
    assert!(!events.body["events"].as_array().unwrap().is_empty());
    check(&doc, &at("events"), "GET", &events);

    // Errors, each against its operation's documented response for that status.
    let missing = c.get(&instance_path("t1", "nope")).await;
    missing.expect_error(404, "INSTANCE_NOT_FOUND");
    check(&doc, instance, "GET", &missing);
    let invalid = c
        .post("/v1.0/tenants/t1/instances", &json!({"tier": "GOLD"}))
        .await;
    invalid.expect_error(400, "VALIDATION_ERROR");
    check(&doc, tenant, "POST", &invalid);
    let exists = c.post("/v1.0/tenants/t1/instances", &body).await;
    exists.expect_error(409, "INSTANCE_EXISTS");
    check(&doc, tenant, "POST", &exists);
    let too_many = c
        .post(&format!("{path}/scale"), &json!({"desiredCount": 11}))
        .await;
    too_many.expect_error(422, "SCALE_LIMIT_EXCEEDED");
    check(&doc, &at("scale"), "POST", &too_many);
    let stale = c
        .send(
            c.http
                .delete(c.url(&path))
                .header("if-match", "\"not-the-version\""),
        )
        .await;
    stale.expect_error(412, "PRECONDITION_FAILED");
    check(&doc, instance, "DELETE", &stale);
    let no_backup = c
        .get(&format!("{path}/backups/bk-000000000000deadbeef"))
        .await;
    no_backup.expect_error(404, "BACKUP_NOT_FOUND");
    check(&doc, &at("backups/{backupId}"), "GET", &no_backup);

    let deleted = c.delete(&path).await;
    check(&doc, instance, "DELETE", &deleted);
    let suspend = c.post(&format!("{path}/suspend"), &json!({})).await;
    suspend.expect_error(422, "INVALID_STATUS_TRANSITION");
    check(&doc, &at("suspend"), "POST", &suspend);

    check(&doc, "/healthz", "GET", &c.get("/healthz").await);
    check(&doc, "/readyz", "GET", &c.get("/readyz").await);
}

#[test]
fn docs_api_md_is_what_the_generator_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wpfleet"))
        .args(["openapi", "--markdown"])
        .output()
        .expect("run wpfleet openapi --markdown");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/API.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if generated != committed {
        let line = generated
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || generated.lines().count().min(committed.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "docs/API.md is out of date (first difference at line {line}). Regenerate it \
             with:\n\n    {}\n",
            wpfleet::api::openapi::REGENERATE
        );
    }
}

/// The schema walker itself: it must fail on what it claims to check.
#[test]
fn the_validator_rejects_what_it_should() {
    let doc = json!({"components": {"schemas": {
        "Base": {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string", "maxLength": 3},
            "at": {"type": ["string", "null"], "format": "date-time"}}},
        "View": {"allOf": [{"$ref": "#/components/schemas/Base"},
            {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}]},
    }}});
    let schema = json!({"$ref": "#/components/schemas/View"});
    let errors = |value: Value| {
        let mut e = vec![];
        validate(&doc, &schema, &value, "$", true, &mut e);
        e
    };
    assert_eq!(
        errors(json!({"id": "a", "at": null, "n": 2})),
        Vec::<String>::new()
    );
    assert!(!errors(json!({"n": 2})).is_empty(), "missing required");
    assert!(!errors(json!({"id": "abcd"})).is_empty(), "too long");
    assert!(!errors(json!({"id": 1})).is_empty(), "wrong type");
    assert!(
        !errors(json!({"id": "a", "n": 0})).is_empty(),
        "below minimum"
    );
    assert!(
        !errors(json!({"id": "a", "n": 1.5})).is_empty(),
        "not an integer"
    );
    assert!(
        !errors(json!({"id": "a", "at": "yesterday"})).is_empty(),
        "not a date-time"
    );
    assert!(
        !errors(json!({"id": "a", "extra": 1})).is_empty(),
        "undocumented property"
    );
}

/// Checks a real reply against the documentation of `METHOD template`: its status is
/// documented, the body validates against that response's schema, an error's code is one
/// listed there, and the documented `ETag` / `Location` headers are present.
fn check(doc: &Value, template: &str, method: &str, reply: &common::Reply) {
    let what = format!("{method} {template} → {}", reply.status);
    let op = &doc["paths"][template][method.to_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let response = &op["responses"][reply.status.to_string()];
    assert!(
        response.is_object(),
        "{what}: status not documented; body {:#}",
        reply.body
    );
    let response = resolve_value(doc, response);
    let schema = &response["content"]["application/json"]["schema"];
    let mut errors = vec![];
    validate(doc, schema, &reply.body, "$", true, &mut errors);
    // A property under an `allOf` is checked once per part and once strictly.
    errors.sort();
    errors.dedup();
    assert!(
        errors.is_empty(),
        "{what}: {errors:#?}\nbody: {:#}",
        reply.body
    );
    for (header, got) in [("ETag", &reply.etag), ("Location", &reply.location)] {
        if response["headers"].get(header).is_some() {
            assert!(got.is_some(), "{what}: documented header {header} missing");
        }
    }
}

/// Validates `value` against `schema`, pushing one message per violation. With `strict`,
/// an object may carry only documented properties (unless `additionalProperties` says
/// otherwise): a field a handler adds without documenting it fails.
fn validate(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    strict: bool,
    errors: &mut Vec<String>,
) {
    if let Some(r) = schema["$ref"].as_str() {
        validate(doc, resolve(doc, r), value, at, strict, errors);
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            validate(doc, part, value, at, false, errors);
        }
        // Each part documents some of the properties (a flattened struct, or a part that
        // narrows one): strictness applies to their union, at every depth.
        if strict && let Some(obj) = value.as_object() {
            for (key, v) in obj {
                let parts = property_schemas(doc, schema, key);
                match parts.as_slice() {
                    [] => errors.push(format!("{at}.{key}: not documented")),
                    [one] => validate(doc, one, v, &format!("{at}.{key}"), true, errors),
                    many => {
                        let union = json!({ "allOf": many });
                        validate(doc, &union, v, &format!("{at}.{key}"), true, errors);
                    }
                }
            }
        }
        return;
    }
    for (combinator, want_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(alternatives) = schema[combinator].as_array() {
            let matching = alternatives
                .iter()
                .filter(|alt| {
                    let mut scratch = vec![];
                    validate(doc, alt, value, at, strict, &mut scratch);
                    scratch.is_empty()
                })
                .count();
            if matching == 0 || (want_one && matching > 1) {
                errors.push(format!(
                    "{at}: {matching} alternatives of {combinator} match"
                ));
            }
            return;
        }
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {values:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
        errors.push(format!("{at}: {value} is not {types:?}"));
        return;
    }
    match value {
        Value::Object(obj) => {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                if !obj.contains_key(name) {
                    errors.push(format!("{at}.{name}: required but missing"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, v) in obj {
                let here = format!("{at}.{key}");
                if let Some(p) = properties.and_then(|p| p.get(key)) {
                    validate(doc, p, v, &here, strict, errors);
                } else if schema["additionalProperties"].is_object() {
                    validate(
                        doc,
                        &schema["additionalProperties"],
                        v,
                        &here,
                        strict,
                        errors,
                    );
                } else if schema["additionalProperties"] == Value::Bool(false)
                    || (strict && properties.is_some())
                {
                    errors.push(format!("{here}: not documented"));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                validate(
                    doc,
                    &schema["items"],
                    item,
                    &format!("{at}[{i}]"),
                    strict,
                    errors,
                );
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| len < min)
                || schema["maxLength"].as_u64().is_some_and(|max| len > max)
            {
                errors.push(format!("{at}: length {len} out of range"));
            }
            if schema["format"] == "date-time" && chrono::DateTime::parse_from_rfc3339(s).is_err() {
                errors.push(format!("{at}: {s} is not a date-time"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap();
            if schema["minimum"].as_f64().is_some_and(|min| n < min)
                || schema["maximum"].as_f64().is_some_and(|max| n > max)
            {
                errors.push(format!("{at}: {n} out of range"));
            }
        }
        _ => {}
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => false,
    }
}

/// The schemas `schema` gives property `key`, through `$ref` and `allOf`.
fn property_schemas(doc: &Value, schema: &Value, key: &str) -> Vec<Value> {
    if let Some(r) = schema["$ref"].as_str() {
        return property_schemas(doc, resolve(doc, r), key);
    }
    let mut found: Vec<Value> = schema["properties"].get(key).cloned().into_iter().collect();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        found.extend(property_schemas(doc, part, key));
    }
    found
}

fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let mut target = doc;
    for part in reference.trim_start_matches("#/").split('/') {
        target = &target[part];
    }
    target
}

fn resolve_value<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => resolve(doc, r),
        None => value,
    }
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::String(r)) = obj.get("$ref") {
                into.push(r.clone());
            }
            obj.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}
