//! Authentication (JWT bearer, HS256 dev / RS256 JWKS) and tenant authorization.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Client, TestServer, instance_path, spec};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use wpfleet::api::auth::{Claims, dev_claims};

const SECRET: &str = "test-secret-0123456789";

async fn hs_server() -> TestServer {
    TestServer::start_with(|c| c.auth.jwt_secret = Some(SECRET.into())).await
}

fn as_user(srv: &TestServer, token: Option<String>) -> Client {
    Client::new(&srv.running().url()).with_token(token)
}

fn tenant_token(srv: &TestServer, tenant: &str) -> String {
    srv.running()
        .auth
        .mint(&dev_claims(
            "alice",
            Some(tenant),
            false,
            Duration::from_secs(600),
        ))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_needs_a_valid_token_and_health_does_not() {
    let srv = hs_server().await;
    let anon = as_user(&srv, None);
    for path in [
        "/v1.0/tenants/t1/instances",
        "/v1.0/tenants/t1/instances/blog",
        "/v1.0/tenants/t1/instances/blog/status",
        "/v1.0/tenants/t1/instances/blog/backups",
        "/v1.0/tenants/t1/instances/blog/logs",
        "/v1.0/instances",
        "/v1.0/sim/inventory",
    ] {
        anon.get(path).await.expect_error(401, "UNAUTHORIZED");
    }
    let r = anon.put(&instance_path("t1", "blog"), &spec(2)).await;
    r.expect_error(401, "UNAUTHORIZED");
    for open in ["/healthz", "/readyz"] {
        assert_eq!(anon.get(open).await.status, 200, "{open}");
    }
    // The refused write changed nothing.
    let op = &srv.client;
    op.get(&instance_path("t1", "blog"))
        .await
        .expect_error(404, "INSTANCE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_401() {
    let srv = hs_server().await;
    let good = tenant_token(&srv, "t1");
    let mut expired_claims = dev_claims("alice", Some("t1"), false, Duration::ZERO);
    expired_claims.exp -= 3600;
    let expired = sign_hs(&expired_claims, SECRET);
    let wrong_key = sign_hs(
        &dev_claims("alice", Some("t1"), true, Duration::from_secs(600)),
        "another-secret-0123456789",
    );
    let parts: Vec<&str> = good.split('.').collect();
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let promoted = URL_SAFE_NO_PAD.encode(
        json!({"sub":"alice","exp":9_999_999_999u64,"custom:tenant_id":"t1",
               "cognito:groups":["platform-operators"]})
        .to_string(),
    );
    let tampered = format!("{}.{}.{}", parts[0], promoted, parts[2]);
    for (name, token) in [
        ("expired", expired),
        ("wrong key", wrong_key),
        ("alg none", none),
        ("tampered payload", tampered),
        ("garbage", "abc.def.ghi".to_owned()),
    ] {
        let r = as_user(&srv, Some(token))
            .get("/v1.0/tenants/t1/instances")
            .await;
        assert_eq!(r.status, 401, "{name}: {:#}", r.body);
        r.expect_error(401, "UNAUTHORIZED");
    }
    // Not a bearer scheme at all.
    let c = as_user(&srv, None);
    let r = c
        .send(
            c.http
                .get(c.url("/v1.0/tenants/t1/instances"))
                .header("authorization", "Basic YWxpY2U6c2VjcmV0"),
        )
        .await;
    r.expect_error(401, "UNAUTHORIZED");
    // The good one works.
    let r = as_user(&srv, Some(good))
        .get("/v1.0/tenants/t1/instances")
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_user_reaches_only_their_tenant() {
    let srv = hs_server().await;
    let alice = as_user(&srv, Some(tenant_token(&srv, "t1")));
    assert_eq!(
        alice
            .put(&instance_path("t1", "blog"), &spec(2))
            .await
            .status,
        201
    );
    assert_eq!(
        srv.client
            .put(&instance_path("t2", "other"), &spec(2))
            .await
            .status,
        201
    );
    for path in [
        "/v1.0/tenants/t2/instances",
        "/v1.0/tenants/t2/instances/other",
        "/v1.0/tenants/t2/instances/other/status",
    ] {
        alice.get(path).await.expect_error(403, "FORBIDDEN");
    }
    alice
        .delete(&instance_path("t2", "other"))
        .await
        .expect_error(403, "FORBIDDEN");
    alice
        .post("/v1.0/reconcile", &json!({}))
        .await
        .expect_error(403, "FORBIDDEN");
    alice
        .get("/v1.0/instances")
        .await
        .expect_error(403, "FORBIDDEN");
    alice
        .get("/v1.0/sim/inventory")
        .await
        .expect_error(403, "FORBIDDEN");
    // t2's instance is untouched; the operator sees both tenants.
    let all = srv.client.get("/v1.0/instances").await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body["instances"].as_array().unwrap().len(), 2);
    assert!(
        srv.client.get(&instance_path("t2", "other")).await.body["metadata"]["deletionRequestedAt"]
            .is_null()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_verify_against_a_jwks_and_algorithm_confusion_fails() {
    let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwks.json");
    let srv = TestServer::start_with(|c| c.auth.jwks = Some(jwks.into())).await;
    assert!(
        srv.running().dev_token.is_none(),
        "no HS256 dev token with a JWKS"
    );
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-test-rsa.pem"
    ))
    .unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let claims = dev_claims("bob", Some("t1"), false, Duration::from_secs(600));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-key-1".into());
    let good = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let r = as_user(&srv, Some(good))
        .get("/v1.0/tenants/t1/instances")
        .await;
    assert_eq!(r.status, 200, "{:#}", r.body);

    header.kid = Some("unknown".into());
    let unknown_kid = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    // HS256 "signed" with the public key: the classic algorithm-confusion attack.
    let public = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-test-rsa.pub.pem"
    ))
    .unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("test-key-1".into());
    let confused =
        jsonwebtoken::encode(&hs_header, &claims, &EncodingKey::from_secret(&public)).unwrap();
    for (name, token) in [("unknown kid", unknown_kid), ("alg confusion", confused)] {
        let r = as_user(&srv, Some(token))
            .get("/v1.0/tenants/t1/instances")
            .await;
        assert_eq!(r.status, 401, "{name}: {:#}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_mints_tokens_the_server_accepts() {
    let srv = hs_server().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wpfleet"))
        .args(["token", "--secret", SECRET, "--tenant", "t1", "--ttl", "5m"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let c = as_user(&srv, Some(token));
    assert_eq!(c.get("/v1.0/tenants/t1/instances").await.status, 200);
    c.get("/v1.0/tenants/t2/instances")
        .await
        .expect_error(403, "FORBIDDEN");
}

fn sign_hs(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
