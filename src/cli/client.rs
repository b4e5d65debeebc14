//! The HTTP client of the wpfleet API: a base URL, an optional bearer token, and one method
//! per endpoint.
//!
//! Every failure is a [`ClientError`]: the server's typed error (`{"error":{code, message,
//! details}}`), an unreachable server, or a reply the client cannot read. Replies are
//! returned as `serde_json::Value` and read through `resource::Res`, so a field the server
//! adds never breaks the client.
//!
//! URLs are built from path *segments* (each percent-encoded by `url`), never by string
//! concatenation, so an id or a backup id can never change the path it is sent to.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::model::{InstanceKey, TenantId};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// A single call may take this long; waits poll with many short calls instead.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Page size asked for when a command follows a list to its end.
const LIST_PAGE: usize = 500;

/// Error messages quote a non-JSON error body at most this long.
const MAX_SNIPPET: usize = 200;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with a typed error.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Value,
    },
    /// No HTTP exchange happened: refused, timed out, name not resolved, TLS failed.
    #[error("cannot reach {server} ({reason}); is 'wpfleet serve' running?")]
    Unreachable { server: String, reason: String },
    /// The server answered, but not with what the API promises.
    #[error("unexpected reply from {server}: {reason}")]
    BadReply { server: String, reason: String },
    /// `--server` or `--token` cannot be used.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status of a typed API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// What the user can do about it, when there is something obvious.
    pub fn hint(&self) -> Option<&'static str> {
        match self.status() {
            Some(401) => Some("pass --token or set WPFLEET_TOKEN"),
            Some(403) => Some("the token is valid but not allowed to do this"),
            _ => None,
        }
    }
}

/// A successful reply: the status (PUT tells created from replaced by it) and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// The query of `GET …/logs`; times are RFC 3339.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub limit: Option<usize>,
    pub next_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Client {
    base: Url,
    /// How the server is named in messages: as the user typed it, without a trailing `/`.
    label: String,
    token: Option<HeaderValue>,
    http: reqwest::Client,
}

impl Client {
    /// `server` may omit the scheme (`localhost:8080` means `http://localhost:8080`); an
    /// empty token means none, so `WPFLEET_TOKEN=` disables auth without unsetting it.
    pub fn new(server: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let base = parse_server(server)?;
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(bearer)
            .transpose()?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("wpfleet-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        let label = base.as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            base,
            label,
            token,
            http,
        })
    }

    pub fn server(&self) -> &str {
        &self.label
    }

    /// The base URL joined with `segments` (each percent-encoded) and a query.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends one request; a non-2xx status becomes `ClientError::Api`.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let mut req = self.http.request(method, url);
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, token.clone());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| ClientError::BadReply {
            server: self.label.clone(),
            reason: format!("the body could not be read ({})", root_cause(&e)),
        })?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        let body = parse_body(&bytes).map_err(|reason| ClientError::BadReply {
            server: self.label.clone(),
            reason,
        })?;
        Ok(Reply {
            status: status.as_u16(),
            body,
        })
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, ClientError> {
        let url = self.url(segments, query);
        Ok(self.send(Method::GET, url, None).await?.body)
    }

    async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Value, ClientError> {
        let url = self.url(segments, &[]);
        Ok(self.send(Method::POST, url, body).await?.body)
    }

    /// Every item of a paged list (`{<field>: [...], nextToken}`), following `nextToken`.
    async fn all_pages(&self, segments: &[&str], field: &str) -> Result<Vec<Value>, ClientError> {
        let mut items = vec![];
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("limit", LIST_PAGE.to_string())];
            if let Some(t) = &token {
                query.push(("nextToken", t.clone()));
            }
            let page = self.get(segments, &query).await?;
            let Some(list) = page.get(field).and_then(Value::as_array) else {
                return Err(self.bad_reply(format!("the reply has no `{field}` list")));
            };
            items.extend(list.iter().cloned());
            let next = page.get("nextToken").and_then(Value::as_str);
            match next.filter(|t| !t.is_empty()) {
                // A token handed back twice would loop forever.
                Some(t) if token.as_deref() == Some(t) => {
                    return Err(self.bad_reply("the list returned the same nextToken twice"));
                }
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(items),
            }
        }
    }

    pub async fn get_instance(&self, key: &InstanceKey) -> Result<Value, ClientError> {
        self.get(&instance_path(key), &[]).await
    }

    /// The instance, or `None` when the server says it does not exist.
    pub async fn find_instance(&self, key: &InstanceKey) -> Result<Option<Value>, ClientError> {
        match self.get_instance(key).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some("INSTANCE_NOT_FOUND") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT` create-or-replace: 201 created, 200 replaced (maybe unchanged).
    pub async fn put_instance(
        &self,
        key: &InstanceKey,
        body: &Value,
    ) -> Result<Reply, ClientError> {
        let url = self.url(&instance_path(key), &[]);
        self.send(Method::PUT, url, Some(body)).await
    }

    /// Every instance of one tenant, or of every tenant (operators).
    pub async fn list_instances(
        &self,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<Value>, ClientError> {
        match tenant {
            Some(t) => {
                let path = ["v1.0", "tenants", t.as_str(), "instances"];
                self.all_pages(&path, "instances").await
            }
            None => self.all_pages(&["v1.0", "instances"], "instances").await,
        }
    }

    pub async fn instance_status(&self, key: &InstanceKey) -> Result<Value, ClientError> {
        self.get(&sub(key, &["status"]), &[]).await
    }

    pub async fn delete_instance(&self, key: &InstanceKey) -> Result<Value, ClientError> {
        let url = self.url(&instance_path(key), &[]);
        Ok(self.send(Method::DELETE, url, None).await?.body)
    }

    pub async fn reconcile_instance(&self, key: &InstanceKey) -> Result<Value, ClientError> {
        self.post(&sub(key, &["reconcile"]), None).await
    }

    pub async fn reconcile_tenant(&self, tenant: &TenantId) -> Result<Value, ClientError> {
        self.post(&["v1.0", "tenants", tenant.as_str(), "reconcile"], None)
            .await
    }

    pub async fn reconcile_all(&self) -> Result<Value, ClientError> {
        self.post(&["v1.0", "reconcile"], None).await
    }

    pub async fn scale(&self, key: &InstanceKey, desired: u32) -> Result<Value, ClientError> {
        let body = json!({ "desiredCount": desired });
        self.post(&sub(key, &["scale"]), Some(&body)).await
    }

    pub async fn suspend(&self, key: &InstanceKey) -> Result<Value, ClientError> {
        self.post(&sub(key, &["suspend"]), None).await
    }

    pub async fn resume(&self, key: &InstanceKey) -> Result<Value, ClientError> {
        self.post(&sub(key, &["resume"]), None).await
    }

    pub async fn backup(&self, key: &InstanceKey) -> Result<Value, ClientError> {
        self.post(&sub(key, &["backup"]), None).await
    }

    pub async fn list_backups(&self, key: &InstanceKey) -> Result<Vec<Value>, ClientError> {
        self.all_pages(&sub(key, &["backups"]), "backups").await
    }

    pub async fn get_backup(&self, key: &InstanceKey, id: &str) -> Result<Value, ClientError> {
        self.get(&sub(key, &["backups", id]), &[]).await
    }

    pub async fn restore(&self, key: &InstanceKey, backup_id: &str) -> Result<Value, ClientError> {
        let body = json!({ "backupId": backup_id });
        self.post(&sub(key, &["restore"]), Some(&body)).await
    }

    /// One page of `GET …/logs`.
    pub async fn logs(&self, key: &InstanceKey, q: &LogQuery) -> Result<Value, ClientError> {
        self.get(&sub(key, &["logs"]), &log_query(q)).await
    }

    /// `GET /healthz` or `/readyz` (open routes): `Ok` on a 2xx.
    pub async fn probe(&self, path: &str) -> Result<Value, ClientError> {
        self.get(&[path], &[]).await
    }

    /// `GET …/events`; `None` when this server has no events endpoint.
    pub async fn events(&self, key: &InstanceKey) -> Result<Option<Value>, ClientError> {
        match self.get(&sub(key, &["events"]), &[]).await {
            Ok(v) => Ok(Some(v)),
            Err(ClientError::Api {
                status: 404 | 405 | 501,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        if e.is_connect() || e.is_timeout() || e.is_request() {
            ClientError::Unreachable {
                server: self.label.clone(),
                reason: unreachable_reason(e),
            }
        } else {
            self.bad_reply(root_cause(e))
        }
    }

    fn bad_reply(&self, reason: impl Into<String>) -> ClientError {
        ClientError::BadReply {
            server: self.label.clone(),
            reason: reason.into(),
        }
    }
}

/// `["v1.0", "tenants", t, "instances", i]`.
pub fn instance_path(key: &InstanceKey) -> Vec<&str> {
    vec![
        "v1.0",
        "tenants",
        key.tenant_id.as_str(),
        "instances",
        key.instance_id.as_str(),
    ]
}

fn sub<'a>(key: &'a InstanceKey, rest: &[&'a str]) -> Vec<&'a str> {
    let mut path = instance_path(key);
    path.extend_from_slice(rest);
    path
}

pub fn log_query(q: &LogQuery) -> Vec<(&'static str, String)> {
    let mut query = vec![];
    if let Some(t) = &q.start_time {
        query.push(("startTime", t.clone()));
    }
    if let Some(t) = &q.end_time {
        query.push(("endTime", t.clone()));
    }
    if let Some(n) = q.limit {
        query.push(("limit", n.to_string()));
    }
    if let Some(t) = &q.next_token {
        query.push(("nextToken", t.clone()));
    }
    query
}

fn parse_server(server: &str) -> Result<Url, ClientError> {
    // `WPFLEET_SERVER=` (set but empty) means "the default", as for the token.
    let server = match server.trim() {
        "" => DEFAULT_SERVER,
        s => s,
    };
    let with_scheme = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let bad = |why: &str| ClientError::Config(format!("--server {server:?}: {why}"));
    let url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url)
}

fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ClientError::Config("the token contains characters not allowed in an HTTP header".into())
    })?;
    // Keeps the token out of any debug output of the request.
    value.set_sensitive(true);
    Ok(value)
}

/// An empty body is `null`; anything else must be JSON.
fn parse_body(bytes: &[u8]) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| format!("the body is not JSON ({e})"))
}

/// The typed error of a non-2xx reply; a body that is not ours (a proxy's HTML page, say)
/// becomes `HTTP_<status>` with a short, single-line snippet of it.
pub fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str);
    let details = error
        .and_then(|e| e.get("details"))
        .cloned()
        .unwrap_or(Value::Null);
    match code {
        Some(code) => ClientError::Api {
            status: status.as_u16(),
            code: code.to_owned(),
            message: with_field_details(message.unwrap_or(""), &details),
            details,
        },
        None => ClientError::Api {
            status: status.as_u16(),
            code: format!("HTTP_{}", status.as_u16()),
            message: snippet(bytes)
                .or_else(|| status.canonical_reason().map(str::to_owned))
                .unwrap_or_else(|| "no explanation".into()),
            details: Value::Null,
        },
    }
}

/// "2 fields are invalid" says little; name the fields (`details.fields`).
fn with_field_details(message: &str, details: &Value) -> String {
    let Some(fields) = details.get("fields").and_then(Value::as_array) else {
        return message.to_owned();
    };
    if fields.len() < 2 {
        return message.to_owned();
    }
    let listed: Vec<String> = fields
        .iter()
        .map(|f| {
            let field = f.get("field").and_then(Value::as_str).unwrap_or("?");
            let why = f
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            format!("{field}: {why}")
        })
        .collect();
    format!("{message} ({})", listed.join("; "))
}

fn snippet(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.is_empty() {
        return None;
    }
    let mut cut: String = one_line.chars().take(MAX_SNIPPET).collect();
    if cut.len() < one_line.len() {
        cut.push('…');
    }
    Some(cut)
}

/// "connection refused", "timed out", … from the innermost I/O error.
fn unreachable_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        source = s.source();
    }
    root_cause(e)
}

fn io_reason(io: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match io.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut => "timed out".into(),
        AddrNotAvailable => "address not available".into(),
        _ => io.to_string(),
    }
}

/// The most specific message in an error's chain.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> Client {
        Client::new(server, None).unwrap()
    }

    fn key(t: &str, i: &str) -> InstanceKey {
        InstanceKey::from_strs(t, i)
    }

    #[test]
    fn urls_are_built_from_encoded_segments() {
        let c = client("http://127.0.0.1:8080");
        let k = key("acme", "blog");
        assert_eq!(
            c.url(&sub(&k, &["backups", "bk/../../x y"]), &[]).as_str(),
            "http://127.0.0.1:8080/v1.0/tenants/acme/instances/blog/backups/bk%2F..%2F..%2Fx%20y"
        );
        assert_eq!(
            c.url(
                &["v1.0", "instances"],
                &[("limit", "5".into()), ("nextToken", "a+b=".into())]
            )
            .as_str(),
            "http://127.0.0.1:8080/v1.0/instances?limit=5&nextToken=a%2Bb%3D"
        );
    }

    #[test]
    fn a_server_with_a_path_prefix_keeps_it() {
        for base in ["https://fleet.example/api", "https://fleet.example/api/"] {
            let c = client(base);
            assert_eq!(
                c.url(&["v1.0", "reconcile"], &[]).as_str(),
                "https://fleet.example/api/v1.0/reconcile"
            );
            assert_eq!(c.server(), "https://fleet.example/api");
        }
    }

    #[test]
    fn server_values() {
        assert_eq!(client("localhost:9000").server(), "http://localhost:9000");
        assert_eq!(client(" ").server(), DEFAULT_SERVER);
        for bad in ["ftp://x", "http://", "http://h/?q=1", "http://a b"] {
            let e = Client::new(bad, None).unwrap_err();
            assert!(matches!(e, ClientError::Config(_)), "{bad}: {e}");
        }
        assert!(Client::new(DEFAULT_SERVER, Some("a\nb")).is_err());
        assert!(
            Client::new(DEFAULT_SERVER, Some(""))
                .unwrap()
                .token
                .is_none()
        );
    }

    #[test]
    fn log_queries_name_only_what_is_set() {
        assert!(log_query(&LogQuery::default()).is_empty());
        let q = LogQuery {
            start_time: Some("2026-01-01T00:00:00Z".into()),
            end_time: None,
            limit: Some(100),
            next_token: Some("t".into()),
        };
        let names: Vec<&str> = log_query(&q).iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["startTime", "limit", "nextToken"]);
    }

    #[test]
    fn typed_errors_are_read_from_the_body() {
        let body = br#"{"error":{"code":"INSTANCE_NOT_FOUND","message":"instance t1/x not found","details":{}}}"#;
        let e = api_error(StatusCode::NOT_FOUND, body);
        assert_eq!(e.to_string(), "INSTANCE_NOT_FOUND: instance t1/x not found");
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.hint(), None);
    }

    #[test]
    fn several_invalid_fields_are_named() {
        let body = br#"{"error":{"code":"VALIDATION_ERROR","message":"2 fields are invalid",
            "details":{"fields":[{"field":"tier","message":"bad"},{"field":"contactEmail","message":"worse"}]}}}"#;
        assert_eq!(
            api_error(StatusCode::BAD_REQUEST, body).to_string(),
            "VALIDATION_ERROR: 2 fields are invalid (tier: bad; contactEmail: worse)"
        );
    }

    #[test]
    fn foreign_error_bodies_become_http_codes() {
        let e = api_error(
            StatusCode::BAD_GATEWAY,
            b"<html>\n<h1>Bad   gateway</h1>\n</html>",
        );
        assert_eq!(
            e.to_string(),
            "HTTP_502: <html> <h1>Bad gateway</h1> </html>"
        );
        let e = api_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(e.to_string(), "HTTP_503: Service Unavailable");
        let long = "x".repeat(1000);
        let e = api_error(StatusCode::BAD_GATEWAY, long.as_bytes());
        assert!(e.to_string().len() < 260, "{e}");
    }

    #[test]
    fn unauthorized_has_a_hint() {
        let body =
            br#"{"error":{"code":"UNAUTHORIZED","message":"missing bearer token","details":{}}}"#;
        let e = api_error(StatusCode::UNAUTHORIZED, body);
        assert_eq!(e.hint(), Some("pass --token or set WPFLEET_TOKEN"));
    }

    #[test]
    fn empty_bodies_are_null_and_garbage_is_an_error() {
        assert_eq!(parse_body(b" \n"), Ok(Value::Null));
        assert!(parse_body(b"<html>").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let c = client(&format!("http://{addr}"));
        let e = c.get_instance(&key("t1", "x")).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot reach http://{addr} (connection refused); is 'wpfleet serve' running?")
        );
    }

    /// Reads one HTTP/1.1 request (headers, then `content-length` bytes of body).
    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![];
        let mut chunk = [0u8; 1024];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    return text;
                }
            }
            assert!(n > 0, "connection closed mid-request: {text}");
        }
    }

    #[tokio::test]
    async fn the_token_is_sent_as_a_bearer_header() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let request = read_request(&mut sock).await;
            let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
            sock.write_all(reply.as_bytes()).await.unwrap();
            request
        });
        let c = Client::new(&format!("http://{addr}"), Some("s3cret")).unwrap();
        let reply = c.scale(&key("t1", "blog"), 4).await.unwrap();
        assert_eq!(reply, json!({}));
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("post /v1.0/tenants/t1/instances/blog/scale "),
            "{request}"
        );
        assert!(
            request.contains("authorization: bearer s3cret"),
            "{request}"
        );
        assert!(request.ends_with(r#"{"desiredcount":4}"#), "{request}");
    }
}
