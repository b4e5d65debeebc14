//! JWT bearer authentication and tenant authorization for every `/v1.0` route.
//!
//! Claims are read as the platform's Cognito issues them: `sub`, `exp`, `custom:tenant_id`
//! (the tenant a user belongs to) and `cognito:groups` (members of `platform-operators` may
//! act on every tenant and use the operator-only routes).
//!
//! * Production verifies RS256 signatures against a JWKS (`--jwks FILE|URL`).
//! * The embedded default verifies HS256 with a shared secret (`--jwt-secret`); when none is
//!   given, `serve` generates one and prints a ready operator token.
//!
//! Invariants: a request without a valid, unexpired token signed with the configured
//! algorithm never reaches a handler (401); `alg: none` and algorithm switches are refused
//! because the accepted algorithm is fixed by configuration, not read from the token; a
//! tenant route is served only to that tenant's users or operators (403).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;

/// Cognito group whose members operate the whole platform.
pub const OPERATOR_GROUP: &str = "platform-operators";

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// How tokens are verified.
pub enum Verifier {
    /// Shared-secret HS256: the embedded default and tests.
    Hs256 { secret: Vec<u8> },
    /// RS256 against a JWKS; the set may be refreshed in place (key rotation).
    Jwks { keys: Arc<RwLock<JwkSet>> },
}

pub struct Auth {
    verifier: Verifier,
    issuer: Option<String>,
    audience: Option<String>,
}

/// Who is calling, once the token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant: Option<String>,
    pub operator: bool,
}

impl Principal {
    pub fn may_access(&self, tenant: &str) -> bool {
        self.operator || self.tenant.as_deref() == Some(tenant)
    }
}

/// The claims we read (and, for development tokens, write).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(
        default,
        rename = "custom:tenant_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub tenant_id: Option<String>,
    #[serde(
        default,
        rename = "cognito:groups",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl Auth {
    pub fn new(verifier: Verifier, issuer: Option<String>, audience: Option<String>) -> Self {
        Self {
            verifier,
            issuer,
            audience,
        }
    }

    /// HS256 with a random secret: for `serve` without `--jwt-secret`.
    pub fn generated() -> (Self, String) {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        (
            Self::new(
                Verifier::Hs256 {
                    secret: secret.clone().into_bytes(),
                },
                None,
                None,
            ),
            secret,
        )
    }

    /// Checks the `Authorization: Bearer …` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = bearer(headers)?;
        let claims = self.verify(token)?;
        let operator = claims.groups.iter().any(|g| g == OPERATOR_GROUP);
        Ok(Principal {
            subject: claims.sub,
            tenant: claims.tenant_id,
            operator,
        })
    }

    fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let unauthorized = |why: &str| ApiError::Unauthorized(format!("invalid token: {why}"));
        // Fails for `alg: none` and anything else jsonwebtoken does not know.
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthorized("malformed"))?;
        let (key, alg) = self.key_for(&header)?;
        if header.alg != alg {
            return Err(unauthorized("unexpected signing algorithm"));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::Unauthorized("token expired".into())
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => unauthorized("bad signature"),
                _ => unauthorized("rejected"),
            })
    }

    fn key_for(&self, header: &Header) -> Result<(DecodingKey, Algorithm), ApiError> {
        match &self.verifier {
            Verifier::Hs256 { secret } => Ok((DecodingKey::from_secret(secret), Algorithm::HS256)),
            Verifier::Jwks { keys } => {
                let keys = keys.read().unwrap_or_else(|p| p.into_inner());
                let jwk = match &header.kid {
                    Some(kid) => keys.find(kid),
                    None if keys.keys.len() == 1 => keys.keys.first(),
                    None => None,
                }
                .ok_or_else(|| ApiError::Unauthorized("invalid token: unknown key id".into()))?;
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|_| ApiError::Unauthorized("invalid token: unusable key".into()))?;
                Ok((key, Algorithm::RS256))
            }
        }
    }

    /// Signs a development token (HS256 only).
    pub fn mint(&self, claims: &Claims) -> Option<String> {
        let Verifier::Hs256 { secret } = &self.verifier else {
            return None;
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .ok()
    }
}

/// Claims for a development token valid for `ttl`.
pub fn dev_claims(subject: &str, tenant: Option<&str>, operator: bool, ttl: Duration) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Claims {
        sub: subject.to_owned(),
        exp: now + ttl.as_secs(),
        tenant_id: tenant.map(str::to_owned),
        groups: if operator {
            vec![OPERATOR_GROUP.to_owned()]
        } else {
            vec![]
        },
        iss: None,
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer <token>".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>".into(),
        ));
    }
    Ok(token.trim())
}

/// Route layer for `/v1.0/tenants/{tenantId}/…`: the caller must belong to the tenant or
/// be an operator.
pub async fn tenant_guard(
    State(app): State<AppState>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = app.auth.authenticate(req.headers())?;
    let params =
        params.map_err(|_| ApiError::field("path", "path parameters are not valid UTF-8"))?;
    let tenant = params
        .iter()
        .find(|(k, _)| *k == "tenantId")
        .map(|(_, v)| v.to_owned());
    match tenant {
        Some(t) if principal.may_access(&t) => {}
        Some(t) => {
            return Err(ApiError::Forbidden(format!(
                "{} may not act on tenant {}",
                principal.subject,
                super::extract::truncate(&t)
            )));
        }
        None if principal.operator => {}
        None => return Err(ApiError::Forbidden("operators only".into())),
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Route layer for operator-only routes (`/v1.0/reconcile`, `/v1.0/instances`, `/v1.0/sim`).
pub async fn operator_guard(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = app.auth.authenticate(req.headers())?;
    if !principal.operator {
        return Err(ApiError::Forbidden(format!(
            "{} is not in {OPERATOR_GROUP}",
            principal.subject
        )));
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}

/// Loads a JWKS from a file path or an http(s) URL.
pub async fn load_jwks(source: &str) -> anyhow::Result<JwkSet> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        reqwest::Client::new()
            .get(source)
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?
    } else {
        tokio::fs::read_to_string(source).await?
    };
    Ok(serde_json::from_str(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    fn hs(secret: &str) -> Auth {
        Auth::new(
            Verifier::Hs256 {
                secret: secret.as_bytes().to_vec(),
            },
            None,
            None,
        )
    }

    #[test]
    fn a_minted_token_round_trips() {
        let auth = hs("s3cret");
        let t = auth
            .mint(&dev_claims(
                "alice",
                Some("t1"),
                false,
                Duration::from_secs(60),
            ))
            .unwrap();
        let p = auth.authenticate(&headers(&t)).unwrap();
        assert_eq!(p.subject, "alice");
        assert!(p.may_access("t1") && !p.may_access("t2") && !p.operator);
        let op = auth
            .mint(&dev_claims("ops", None, true, Duration::from_secs(60)))
            .unwrap();
        assert!(auth.authenticate(&headers(&op)).unwrap().may_access("t2"));
    }

    #[test]
    fn bad_tokens_are_unauthorized() {
        let auth = hs("s3cret");
        let other = hs("other")
            .mint(&dev_claims(
                "eve",
                Some("t1"),
                true,
                Duration::from_secs(60),
            ))
            .unwrap();
        let mut expired = dev_claims("bob", Some("t1"), false, Duration::ZERO);
        expired.exp -= 3600;
        let expired = auth.mint(&expired).unwrap();
        let good = auth
            .mint(&dev_claims(
                "bob",
                Some("t1"),
                false,
                Duration::from_secs(60),
            ))
            .unwrap();
        let mut parts: Vec<&str> = good.split('.').collect();
        // alg: none, no signature
        let none_header = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
        let none = format!("{none_header}.{}.", parts[1]);
        // tampered payload: become an operator, keep the old signature
        let tampered_payload = base64_url(
            r#"{"sub":"bob","exp":99999999999,"custom:tenant_id":"t1","cognito:groups":["platform-operators"]}"#,
        );
        parts[1] = &tampered_payload;
        let tampered = parts.join(".");
        for (name, token) in [
            ("wrong key", other),
            ("expired", expired),
            ("alg none", none),
            ("tampered", tampered),
            ("garbage", "not.a.jwt".into()),
        ] {
            let err = auth.authenticate(&headers(&token)).unwrap_err();
            assert!(matches!(err, ApiError::Unauthorized(_)), "{name}: {err:?}");
        }
        assert!(matches!(
            auth.authenticate(&HeaderMap::new()),
            Err(ApiError::Unauthorized(_))
        ));
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
