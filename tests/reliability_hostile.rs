//! Reliability 5 (issue 7): hostile input. Requests are generated from the server's own
//! OpenAPI document (`GET /openapi.json`): every documented operation, with path ids,
//! query parameters, `If-Match` and bodies drawn from the schemas and then corrupted
//! (wrong types, missing and unknown fields, huge and unicode strings, deep nesting,
//! invalid JSON, wrong content type, traversal and unicode tricks in ids, 10 kB ids).
//! Property: no answer is a 5xx; every error is the typed `{"error":{"code","message",
//! "details"}}` with a status the operation documents. Then every `/v1.0` operation is
//! called with hostile JWTs (alg none, wrong key, expired, another tenant, tampered
//! payload, HS256 signed with the RS256 public key): each is refused and changes nothing.
//!
//! `WPFLEET_SOAK=1` sends twenty times as many generated requests.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::harness::{figure, seed, sized};
use common::{Client, Reply, TestServer, instance_path, spec};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use wpfleet::api::auth::dev_claims;

const TEST: &str = "hostile";
const SECRET: &str = "hostile-input-secret-0123456789";

/// One documented operation.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    path: String,
    params: Vec<Value>,
    body: Option<Value>,
    statuses: Vec<u16>,
    secured: bool,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = vec![];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            out.push(Operation {
                method: method.to_uppercase(),
                path: path.clone(),
                params: op["parameters"].as_array().cloned().unwrap_or_default(),
                body: op["requestBody"]["content"]["application/json"]["schema"]
                    .as_object()
                    .map(|s| Value::Object(s.clone())),
                statuses: op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter_map(|k| k.parse().ok())
                    .collect(),
                secured: path.starts_with("/v1.0"),
            });
        }
    }
    out
}

/// Path segments: valid and existing ones, and every trick a path id can play. They are
/// sent as written (already percent-encoded where needed).
fn hostile_id(rng: &mut StdRng, valid: &str) -> String {
    let long = "a".repeat(10 * 1024);
    let tricks = [
        valid,
        valid,
        valid,
        "nope",
        "..",
        "%2e%2e",
        "..%2F..%2Fetc%2Fpasswd",
        "%2F",
        "a%00b",
        "%C0%AE%C0%AE",
        "t%E2%80%AE1",
        "%EF%BD%94%EF%BC%91",
        "t%E2%80%8B1",
        "%F0%9F%92%A9",
        "T1",
        "a--b",
        "-a",
        "a-",
        "a%20b",
        "%25",
        "%ZZ",
        "$(id)",
        "null",
        "%3Cscript%3E",
        &long,
    ];
    (*tricks.choose(rng).unwrap()).to_owned()
}

fn hostile_string(rng: &mut StdRng) -> String {
    let options = [
        String::new(),
        "x".repeat(rng.random_range(1..5000)),
        "\u{202e}evil\u{200b}".into(),
        "\u{0000}".into(),
        "💩".repeat(50),
        "'; DROP TABLE instances; --".into(),
        "../../etc/passwd".into(),
        "-1".into(),
        "1e999".into(),
        "2024-13-45T99:99:99Z".into(),
        "+275760-09-13T00:00:00Z".into(),
    ];
    options.choose(rng).unwrap().clone()
}

fn hostile_value(rng: &mut StdRng, depth: usize) -> Value {
    match rng.random_range(0..9) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(-1),
        4 => json!(rng.random::<f64>() * 1e300),
        5 => json!(hostile_string(rng)),
        6 if depth < 3 => json!([hostile_value(rng, depth + 1)]),
        7 if depth < 3 => json!({ hostile_string(rng): hostile_value(rng, depth + 1) }),
        _ => json!(u64::MAX),
    }
}

/// Resolves `#/components/schemas/X`.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A value for `schema`, valid most of the time, corrupted some of the time.
fn generate(doc: &Value, schema: &Value, rng: &mut StdRng, depth: usize) -> Value {
    if rng.random_bool(0.12) || depth > 6 {
        return hostile_value(rng, depth);
    }
    let schema = resolve(doc, schema);
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema[combinator].as_array() {
            let pick = options.choose(rng).unwrap();
            return generate(doc, pick, rng, depth + 1);
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        return values.choose(rng).unwrap().clone();
    }
    let ty = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .choose(rng)
            .and_then(Value::as_str)
            .unwrap_or("null")
            .to_owned(),
        _ if schema["properties"].is_object() => "object".into(),
        _ => return hostile_value(rng, depth),
    };
    match ty.as_str() {
        "object" => {
            let mut obj = Map::new();
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                let keep = if required.contains(&name.as_str()) {
                    rng.random_bool(0.93)
                } else {
                    rng.random_bool(0.6)
                };
                if keep {
                    obj.insert(name.clone(), generate(doc, prop, rng, depth + 1));
                }
            }
            if rng.random_bool(0.1) {
                obj.insert("unexpectedField".into(), hostile_value(rng, depth + 1));
            }
            Value::Object(obj)
        }
        "array" => {
            let n = rng.random_range(0..3);
            Value::Array(
                (0..n)
                    .map(|_| generate(doc, &schema["items"], rng, depth + 1))
                    .collect(),
            )
        }
        "string" => {
            if rng.random_bool(0.3) {
                json!(hostile_string(rng))
            } else {
                match schema["format"].as_str() {
                    Some("date-time") => json!("2025-01-01T00:00:00Z"),
                    Some("email") => json!("ops@acme.example"),
                    _ => json!(["6.5", "8.2", "blog", "Acme Ltd", "x"].choose(rng).unwrap()),
                }
            }
        }
        "integer" => {
            let min = schema["minimum"].as_i64().unwrap_or(0);
            let max = schema["maximum"].as_i64().unwrap_or(min + 10);
            json!(rng.random_range(min - 2..=max + 2))
        }
        "number" => json!(rng.random_range(-1.0..2.0)),
        "boolean" => json!(rng.random::<bool>()),
        _ => Value::Null,
    }
}

/// Raw bodies that no schema produces.
fn raw_body(rng: &mut StdRng) -> (Vec<u8>, &'static str) {
    match rng.random_range(0..6) {
        0 => (b"{\"organizationName\": ".to_vec(), "application/json"),
        1 => ("[".repeat(5000).into_bytes(), "application/json"),
        2 => (vec![b'x'; 70 * 1024], "application/json"),
        3 => (
            b"organizationName=Acme".to_vec(),
            "application/x-www-form-urlencoded",
        ),
        4 => (vec![0xff, 0xfe, 0x00, 0x7b], "application/json"),
        _ => (b"{}".to_vec(), "text/plain"),
    }
}

fn query_value(rng: &mut StdRng) -> String {
    let options = [
        "1",
        "0",
        "-1",
        "1001",
        "50",
        "abc",
        "1e309",
        "99999999999999999999",
        "",
        "%00",
        "%FF",
        "2025-01-01T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "-275000-01-01T00:00:00Z",
        "AAAA",
        "eyJub3QiOiJhIHRva2VuIn0",
    ];
    (*options.choose(rng).unwrap()).to_owned()
}

/// One generated request.
struct Generated {
    method: reqwest::Method,
    url_path: String,
    if_match: Option<String>,
    body: Option<(Vec<u8>, &'static str)>,
}

fn generate_request(doc: &Value, op: &Operation, rng: &mut StdRng) -> Generated {
    let mut path = op.path.clone();
    let mut query = vec![];
    let mut if_match = None;
    for p in &op.params {
        let name = p["name"].as_str().unwrap();
        match p["in"].as_str().unwrap() {
            "path" => {
                let valid = match name {
                    "tenantId" => "t1",
                    "instanceId" => "blog",
                    _ => "bk-0000000000010000abcd",
                };
                path = path.replace(&format!("{{{name}}}"), &hostile_id(rng, valid));
            }
            "query" if rng.random_bool(0.6) => {
                query.push(format!("{name}={}", query_value(rng)));
            }
            "header" if rng.random_bool(0.4) => {
                let v = ["\"1\"", "*", "\"999999\"", "garbage", "W/\"1\"", ""];
                if_match = Some((*v.choose(rng).unwrap()).to_owned());
            }
            _ => {}
        }
    }
    if rng.random_bool(0.1) {
        query.push(format!(
            "{}={}",
            hostile_string(rng).len(),
            query_value(rng)
        ));
    }
    let url_path = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let body = match &op.body {
        Some(_) if rng.random_bool(0.15) => Some(raw_body(rng)),
        Some(schema) => {
            let v = generate(doc, schema, rng, 0);
            Some((serde_json::to_vec(&v).unwrap(), "application/json"))
        }
        None if rng.random_bool(0.1) => Some(raw_body(rng)),
        None => None,
    };
    Generated {
        method: op.method.parse().unwrap(),
        url_path,
        if_match,
        body,
    }
}

/// Sends `g`; a request that gets no answer is sent once more on a new connection, since a
/// server that stops reading a body it does not want closes the connection, and a pooled
/// connection the next request picked may be the one being closed. Only a request that
/// gets no answer twice counts as unanswered.
async fn send(c: &Client, g: &Generated) -> Result<Reply, String> {
    match send_on(c, &c.http, g).await {
        Ok(r) => Ok(r),
        Err(_) => {
            let fresh = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            send_on(c, &fresh, g).await
        }
    }
}

async fn send_on(c: &Client, http: &reqwest::Client, g: &Generated) -> Result<Reply, String> {
    let mut req = http.request(g.method.clone(), c.url(&g.url_path));
    if let Some(v) = &g.if_match {
        req = req.header("if-match", v);
    }
    if let Some((bytes, ctype)) = &g.body {
        req = req.header("content-type", *ctype).body(bytes.clone());
    }
    let req = match &c.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let res = req.send().await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let bytes = res.bytes().await.map_err(|e| e.to_string())?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Reply {
        status,
        etag: None,
        location: None,
        body,
    })
}

/// Why an answer breaks the property, if it does.
fn violation(op: &Operation, r: &Reply) -> Option<String> {
    if r.status >= 500 {
        return Some(format!("{} is a 5xx", r.status));
    }
    if r.status < 400 {
        return None;
    }
    let e = &r.body["error"];
    if !(e["code"].is_string() && e["message"].is_string() && e["details"].is_object()) {
        return Some(format!("{} is not a typed error", r.status));
    }
    // A mangled id can route elsewhere (404 / 405 of the router): not this operation's.
    let routed_elsewhere = matches!(r.status, 404 | 405);
    if !op.statuses.contains(&r.status) && !routed_elsewhere {
        return Some(format!("{} is not documented for the operation", r.status));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_hostile_requests_get_typed_errors_and_no_5xx() {
    let cases = sized(3000, 60_000);
    let mut rng = StdRng::seed_from_u64(seed(TEST));
    let srv = TestServer::start().await;
    let c = srv.client.clone();
    let doc = c.get("/openapi.json").await.body;
    let ops = operations(&doc);
    assert!(ops.len() >= 25, "the document lists the operations");
    // Something to find: an instance with a completed backup.
    assert_eq!(
        c.put(&instance_path("t1", "blog"), &spec(2)).await.status,
        201
    );
    let (fuzzed, fault_ops): (Vec<Operation>, Vec<Operation>) =
        ops.into_iter().partition(|o| o.path != "/v1.0/sim/faults");
    let requests: Vec<(Operation, Generated)> = (0..cases)
        .map(|_| {
            let op = fuzzed.choose(&mut rng).unwrap().clone();
            let g = generate_request(&doc, &op, &mut rng);
            (op, g)
        })
        .collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = vec![];
    let mut answers = futures::stream::iter(requests.iter())
        .map(|(op, g)| {
            let c = c.clone();
            async move { (op, g, send(&c, g).await) }
        })
        .buffer_unordered(16);
    while let Some((op, g, result)) = answers.next().await {
        match result {
            Ok(r) => {
                *by_status.entry(r.status).or_default() += 1;
                if let Some(why) = violation(op, &r) {
                    failures.push(format!(
                        "{} {} ({} {}): {why}: {:#}",
                        g.method,
                        truncated(&g.url_path),
                        op.method,
                        op.path,
                        r.body
                    ));
                }
            }
            Err(e) => failures.push(format!(
                "{} {}: no answer: {e}",
                g.method,
                truncated(&g.url_path)
            )),
        }
    }
    drop(answers);
    // Fault settings change how the simulated cloud answers later calls: fuzzed one at a
    // time, each followed by a reset.
    for _ in 0..sized(200, 2000) {
        let op = &fault_ops[0];
        let g = generate_request(&doc, op, &mut rng);
        let r = send(&c, &g).await.expect("answer");
        *by_status.entry(r.status).or_default() += 1;
        if let Some(why) = violation(op, &r) {
            failures.push(format!("PUT /v1.0/sim/faults: {why}: {:#}", r.body));
        }
        assert_eq!(c.put("/v1.0/sim/faults", &json!({})).await.status, 200);
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} requests broke the property:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        by_status.keys().any(|s| *s < 300),
        "nothing was accepted: {by_status:?}"
    );
    assert!(
        by_status.contains_key(&400),
        "nothing was refused: {by_status:?}"
    );
    figure(TEST, "generated_requests", cases);
    figure(TEST, "answers", format!("{by_status:?}"));
}

fn truncated(s: &str) -> String {
    if s.len() > 120 {
        format!("{}…({} bytes)", &s[..120], s.len())
    } else {
        s.to_owned()
    }
}

fn sign_hs(claims: &impl serde::Serialize, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// The token with its payload replaced by `claims` (signature kept).
fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

fn concrete(path: &str) -> String {
    path.replace("{tenantId}", "t1")
        .replace("{instanceId}", "blog")
        .replace("{backupId}", "bk-0000000000010000abcd")
}

/// Calls every `/v1.0` operation with `token`; each must answer `status` with `code`.
async fn every_operation_refuses(
    srv: &TestServer,
    ops: &[Operation],
    name: &str,
    token: &str,
    want: impl Fn(&Operation) -> (u16, &'static str),
) -> usize {
    let c = Client::new(&srv.running().url()).with_token(Some(token.to_owned()));
    let mut n = 0;
    for op in ops.iter().filter(|o| o.secured) {
        let mut req = c
            .http
            .request(op.method.parse().unwrap(), c.url(&concrete(&op.path)));
        if op.method != "GET" && op.method != "DELETE" {
            req = req.json(&spec(2));
        }
        let r = c.send(req).await;
        let (status, code) = want(op);
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{name}: {} {}: {:#}",
            op.method,
            op.path,
            r.body
        );
        r.expect_error(status, code);
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused_on_every_operation_and_change_nothing() {
    let srv = TestServer::start_with(|c| c.auth.jwt_secret = Some(SECRET.into())).await;
    let ops = operations(&srv.client.get("/openapi.json").await.body);
    let ttl = Duration::from_secs(600);
    let operator = dev_claims("mallory", None, true, ttl);
    let mut expired = dev_claims("mallory", None, true, ttl);
    expired.exp -= 3600;
    let t2_user = srv
        .running()
        .auth
        .mint(&dev_claims("eve", Some("t2"), false, ttl))
        .unwrap();
    let promoted = json!({"sub": "eve", "exp": 9_999_999_999u64, "custom:tenant_id": "t1",
        "cognito:groups": ["platform-operators"]});
    let header_none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body_operator = URL_SAFE_NO_PAD.encode(serde_json::to_string(&operator).unwrap());
    let unauthorized = |_: &Operation| (401, "UNAUTHORIZED");
    let mut checked = 0;
    for (name, token) in [
        ("alg none", format!("{header_none}.{body_operator}.")),
        (
            "wrong key",
            sign_hs(&operator, b"another-secret-0123456789"),
        ),
        ("expired", sign_hs(&expired, SECRET.as_bytes())),
        ("tampered payload", tampered(&t2_user, &promoted)),
        ("garbage", "not.a.jwt".to_owned()),
        ("empty", String::new()),
    ] {
        checked += every_operation_refuses(&srv, &ops, name, &token, unauthorized).await;
    }
    // Another tenant's user: authenticated, but no access to t1 or operator routes.
    checked += every_operation_refuses(&srv, &ops, "another tenant", &t2_user, |_| {
        (403, "FORBIDDEN")
    })
    .await;
    // Nothing any of them sent was written.
    let all = srv.client.get("/v1.0/instances").await;
    assert_eq!(all.body["instances"], json!([]), "{:#}", all.body);
    let calls = srv.client.get("/v1.0/sim/stats").await;
    assert_eq!(calls.body["mutating_calls"], 0, "{:#}", calls.body);

    // RS256 (Cognito-style): algorithm confusion and alg none fail there too.
    let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks.json");
    let rs = TestServer::start_with(|c| c.auth.jwks = Some(jwks.into())).await;
    let public = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-test-rsa.pub.pem"
    ))
    .unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("test-key-1".into());
    let confused =
        jsonwebtoken::encode(&hs, &operator, &EncodingKey::from_secret(&public)).unwrap();
    for (name, token) in [
        ("alg confusion", confused),
        ("alg none", format!("{header_none}.{body_operator}.")),
    ] {
        checked += every_operation_refuses(&rs, &ops, name, &token, unauthorized).await;
    }
    figure(TEST, "hostile_token_requests", checked);
}
