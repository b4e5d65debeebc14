//! Bad input gets a typed JSON error with the platform's code, never a 5xx, and changes
//! nothing.

mod common;

use common::{TestServer, instance_path, spec};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_rejected_with_the_field_and_change_nothing() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let path = instance_path("t1", "blog");
    let created = c.put(&path, &spec(2)).await;
    assert_eq!(created.status, 201);
    let etag = created.etag.clone();

    /// (name, body, status, code, field named in the error)
    type Case<'a> = (&'a str, Vec<u8>, u16, &'a str, Option<&'a str>);
    let mut cases: Vec<Case> = vec![
        ("not json", b"{nope".to_vec(), 400, "VALIDATION_ERROR", None),
        ("empty", b"".to_vec(), 400, "VALIDATION_ERROR", Some("body")),
        (
            "array",
            b"[1,2]".to_vec(),
            400,
            "VALIDATION_ERROR",
            Some("body"),
        ),
        (
            "bad utf-8",
            b"{\"organizationName\":\"\xff\xfe\"}".to_vec(),
            400,
            "VALIDATION_ERROR",
            None,
        ),
    ];
    let json_cases = [
        (
            "unknown field",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","color":"red"}),
            "color",
        ),
        (
            "wrong type",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","configuration":{"desiredCount":"two"}}),
            "configuration.desiredCount",
        ),
        (
            "negative",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","configuration":{"desiredCount":-1}}),
            "configuration.desiredCount",
        ),
        (
            "huge number",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","configuration":{"desiredCount":1e300}}),
            "configuration.desiredCount",
        ),
        (
            "out of range",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"ENTERPRISE","configuration":{"desiredCount":11}}),
            "configuration.desiredCount",
        ),
        (
            "over tier",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","configuration":{"desiredCount":5}}),
            "configuration.desiredCount",
        ),
        (
            "bad tier",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"GOLD"}),
            "tier",
        ),
        (
            "bad email",
            json!({"organizationName":"A","contactEmail":"nope","tier":"STANDARD"}),
            "contactEmail",
        ),
        (
            "missing field",
            json!({"contactEmail":"a@b.co","tier":"STANDARD"}),
            "organizationName",
        ),
        (
            "bad version",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","configuration":{"wordpressVersion":"latest"}}),
            "configuration.wordpressVersion",
        ),
        (
            "null spec field",
            json!({"organizationName":null,"contactEmail":"a@b.co","tier":"STANDARD"}),
            "organizationName",
        ),
        (
            "bad state",
            json!({"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","state":"PAUSED"}),
            "state",
        ),
        (
            "resource with other path",
            json!({"tenantId":"t2","spec":{"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD"}}),
            "tenantId",
        ),
        (
            "resource with bad spec",
            json!({"spec":{"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD","x":1}}),
            "spec.x",
        ),
        (
            "resource with extra key",
            json!({"spec":{"organizationName":"A","contactEmail":"a@b.co","tier":"STANDARD"},"bogus":1}),
            "bogus",
        ),
    ];
    for (name, body, field) in &json_cases {
        cases.push((
            name,
            serde_json::to_vec(body).unwrap(),
            400,
            "VALIDATION_ERROR",
            Some(field),
        ));
    }
    cases.push((
        "too large",
        vec![b' '; 70 * 1024],
        413,
        "PAYLOAD_TOO_LARGE",
        None,
    ));

    for (name, body, status, code, field) in cases {
        for (method, target) in [
            (Method::PUT, path.clone()),
            (Method::POST, "/v1.0/tenants/t1/instances".to_owned()),
        ] {
            let r = c.raw(method.clone(), &target, body.clone()).await;
            assert!(r.status < 500, "{name}: {method} got {}", r.status);
            if method == Method::POST && name.starts_with("resource") {
                // POST takes only the create body; any such body is still a 400.
                r.expect_error(400, "VALIDATION_ERROR");
                continue;
            }
            let err = r.expect_error(status, code);
            if let Some(field) = field {
                let fields = err["details"]["fields"].as_array().unwrap();
                assert!(
                    fields
                        .iter()
                        .any(|f| f["field"].as_str().unwrap().starts_with(field)),
                    "{name}: {method} fields {fields:?} lack {field}"
                );
            }
        }
    }
    // Nothing changed.
    let now = c.get(&path).await;
    assert_eq!(now.etag, etag);
    assert_eq!(now.body["metadata"]["generation"], 1);
    let list = c.get("/v1.0/tenants/t1/instances").await;
    assert_eq!(list.body["instances"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_and_routes_get_typed_errors() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let long = "a".repeat(10_000);
    for (path, status, code) in [
        (
            "/v1.0/tenants/T1/instances/blog".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1.0/tenants/t1/instances/..%2Fetc".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1.0/tenants/t1/instances/%C3%A9".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1.0/tenants/t1/instances/a%E2%80%8Bb".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            format!("/v1.0/tenants/t1/instances/{long}"),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1.0/tenants/t1/instances/missing".to_owned(),
            404,
            "INSTANCE_NOT_FOUND",
        ),
        (
            "/v1.0/tenants/t1/instances/missing/status".to_owned(),
            404,
            "INSTANCE_NOT_FOUND",
        ),
        ("/v1.0/nope".to_owned(), 404, "NOT_FOUND"),
        (
            "/v1.0/tenants/t1/instances?limit=0".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1.0/tenants/t1/instances?limit=abc".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1.0/tenants/t1/instances?nextToken=%%%".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
        (
            "/v1.0/tenants/t1/instances?nextToken=Zm9v".to_owned(),
            400,
            "VALIDATION_ERROR",
        ),
    ] {
        let r = c.get(&path).await;
        r.expect_error(status, code);
    }
    let r = c
        .send(c.http.patch(c.url("/v1.0/tenants/t1/instances")))
        .await;
    r.expect_error(405, "METHOD_NOT_ALLOWED");
    let r = c
        .send(
            c.http
                .post(c.url("/v1.0/tenants/t1/instances"))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    r.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let r = c.delete("/v1.0/tenants/t1/instances/missing").await;
    r.expect_error(404, "INSTANCE_NOT_FOUND");
    let r = c
        .post("/v1.0/tenants/t1/instances/missing/reconcile", &json!({}))
        .await;
    r.expect_error(404, "INSTANCE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_conflicts_and_if_match() {
    let srv = TestServer::start().await;
    let c = &srv.client;
    let mut body = spec(2);
    body["instanceId"] = json!("dup");
    assert_eq!(
        c.post("/v1.0/tenants/t1/instances", &body).await.status,
        202
    );
    c.post("/v1.0/tenants/t1/instances", &body)
        .await
        .expect_error(409, "INSTANCE_EXISTS");

    // A generated id when none is given.
    let mut anon = spec(2);
    anon.as_object_mut().unwrap().remove("instanceId");
    let r = c.post("/v1.0/tenants/t1/instances", &anon).await;
    assert_eq!(r.status, 202);
    assert!(r.body["instanceId"].as_str().unwrap().starts_with("wp-"));

    // If-Match: a stale ETag is 412 and changes nothing; the current one succeeds.
    let path = instance_path("t1", "dup");
    let cur = c.get(&path).await;
    let etag = cur.etag.clone().unwrap();
    let r = c
        .send(
            c.http
                .put(c.url(&path))
                .header("if-match", "\"999999\"")
                .json(&spec(3)),
        )
        .await;
    r.expect_error(412, "PRECONDITION_FAILED");
    assert_eq!(c.get(&path).await.body["metadata"]["generation"], 1);
    let r = c
        .send(
            c.http
                .put(c.url(&path))
                .header("if-match", etag.as_str())
                .json(&spec(3)),
        )
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);
    assert_eq!(r.body["metadata"]["generation"], 2);
}
