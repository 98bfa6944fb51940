//! Access control, off by default (the local demo) and documented for deployment in docs/serving.md
//! ("Deploying safely"): an API token, the Host names the server answers to, and a refusal of
//! cross-site writes.
//!
//! - **Token** (`--api-token` / `INFERSCOPE_API_TOKEN`): `Authorization: Bearer <token>` on KServe
//!   (`/v2/...` but its health routes), the Vertex predict route, `/api/preprocess` and `/metrics`;
//!   with `--token-for-page` on the page and its server functions too (a browser brings the token once
//!   as `?token=...` and keeps it in an `HttpOnly`, `SameSite=Strict` cookie). Health routes stay open
//!   for orchestrators' probes. Tokens are compared in constant time. The gRPC port asks the same
//!   token (`authorization: Bearer` metadata) on every call but `ServerLive`/`ServerReady`.
//! - **Host** (`--allowed-hosts`): a request whose `Host` (port ignored) is not listed gets 403. The
//!   default, when bound to a loopback address, is the loopback names (`localhost`, `127.0.0.1`,
//!   `[::1]`): a DNS-rebinding page on `evil.example` that resolves to 127.0.0.1 reaches the server
//!   with `Host: evil.example` and is refused. Bound to any other address the default is any host.
//! - **Cross-site writes**: a browser adds `Origin` (and `Sec-Fetch-Site`) to every cross-origin POST,
//!   including the "simple" ones (`text/plain`, form encodings) that no CORS preflight stops. A write
//!   whose `Origin` is not the server's own (`Host`) or whose `Sec-Fetch-Site` is `cross-site` gets
//!   403. Programs (curl, tritonclient, Vertex) send no `Origin` and are not affected.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::metrics::Metrics;

/// Access-control options of `inferscope serve`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Require `Authorization: Bearer <TOKEN>` on the APIs (KServe, Vertex predict, /api/preprocess,
    /// /metrics). Off by default.
    #[arg(long, env = "INFERSCOPE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Require the token for the page and its server functions too (open it once as `/?token=...`).
    #[arg(long, env = "INFERSCOPE_TOKEN_FOR_PAGE", requires = "api_token")]
    pub token_for_page: bool,
    /// Host names the server answers to, comma-separated (`*`: any; `.example.com`: that domain and
    /// its subdomains). Default: the loopback names when bound to a loopback address, else any.
    #[arg(long, env = "INFERSCOPE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
}

/// The cookie that carries the token of a browser opened with `?token=`.
pub const TOKEN_COOKIE: &str = "inferscope_token";

/// Who may ask what, built from [`AccessArgs`] and the listening address.
#[derive(Debug, Clone, Default)]
pub struct Access {
    token: Option<String>,
    token_for_page: bool,
    /// `None`: any host.
    hosts: Option<Vec<String>>,
    /// Routes that stay open (health probes).
    open_paths: Vec<String>,
    /// The Vertex predict route (an API route outside `/v2`).
    predict_path: String,
}

impl Access {
    pub fn new(
        args: &AccessArgs,
        bound: std::net::SocketAddr,
        vertex: &super::vertex::VertexSettings,
    ) -> Self {
        let hosts = if args.allowed_hosts.iter().any(|h| h.trim() == "*") {
            None
        } else if !args.allowed_hosts.is_empty() {
            Some(
                args.allowed_hosts
                    .iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect(),
            )
        } else if bound.ip().is_loopback() {
            Some(vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()])
        } else {
            None
        };
        Access {
            token: args.api_token.clone().filter(|t| !t.is_empty()),
            token_for_page: args.token_for_page,
            hosts,
            open_paths: vec![
                "/healthz".into(),
                "/v2/health/live".into(),
                "/v2/health/ready".into(),
                vertex.health_route.clone(),
            ],
            predict_path: vertex.predict_route.clone(),
        }
    }

    /// The same checks without the token (the separate metrics port).
    pub fn drop_token(&mut self) {
        self.token = None;
    }

    /// Whether a request for `path` needs the token.
    fn needs_token(&self, path: &str) -> bool {
        if self.token.is_none() || self.open_paths.iter().any(|p| p == path) {
            return false;
        }
        let api = path == "/v2"
            || path.starts_with("/v2/")
            || path == self.predict_path
            || path == super::preprocess::PATH
            || path == "/metrics";
        api || self.token_for_page
    }

    fn host_allowed(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> Result<(), String> {
        let Some(hosts) = &self.hosts else {
            return Ok(());
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let name = host_name(host).to_ascii_lowercase();
        let ok = hosts.iter().any(|allowed| {
            allowed == &name
                || allowed
                    .strip_prefix('.')
                    .is_some_and(|domain| name == domain || name.ends_with(&format!(".{domain}")))
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "host `{host}` is not allowed (allowed: {}; see --allowed-hosts)",
                hosts.join(", ")
            ))
        }
    }

    /// Whether `headers` carry the token (as `Authorization: Bearer`, or the page's cookie), or
    /// none is required. The gRPC service checks its calls' metadata with it too.
    pub fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
            .next();
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|given| same(given.as_bytes(), token.as_bytes()))
    }
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Constant-time comparison (the time does not tell how much of a guess was right).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a write comes from a page of another site.
fn cross_site(method: &Method, headers: &HeaderMap) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Some("a cross-site request (Sec-Fetch-Site: cross-site)".into());
    }
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest.trim_end_matches('/'));
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        None
    } else {
        Some(format!(
            "a cross-site request (Origin {origin} is not this server, {host})"
        ))
    }
}

/// The middleware: Host, then cross-site writes, then the token.
pub async fn check(
    State((access, metrics)): State<(Arc<Access>, Arc<Metrics>)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let refuse = |status: StatusCode, cause: &'static str, message: String| {
        metrics.rejected("-", cause);
        ApiError::new(status, cause, message).into_response()
    };
    if let Err(m) = access.host_allowed(req.headers(), req.uri()) {
        return refuse(StatusCode::FORBIDDEN, "host_not_allowed", m);
    }
    if let Some(why) = cross_site(req.method(), req.headers()) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross_site",
            format!("{why} is refused: send it from this server's own page or without Origin"),
        );
    }
    if !access.needs_token(&path) || access.token_ok(req.headers()) {
        return next.run(req).await;
    }
    // A browser opening the page with `?token=...`: keep it in a cookie and drop it from the address.
    if req.method() == Method::GET {
        if let Some(given) = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_string)
        }) {
            if access
                .token
                .as_deref()
                .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
            {
                let cookie = format!("{TOKEN_COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/");
                let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, path)]).into_response();
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    res.headers_mut().insert(header::SET_COOKIE, v);
                }
                return res;
            }
        }
    }
    let mut res = refuse(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this server requires `Authorization: Bearer <token>` (see --api-token)".into(),
    );
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:3000"), "localhost");
        assert_eq!(host_name("[::1]:3000"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("example.com"), "example.com");
    }

    #[test]
    fn cross_site_writes_are_told_apart() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let post = Method::POST;
        assert!(cross_site(&post, &h(&[("host", "127.0.0.1:3000")])).is_none());
        assert!(cross_site(
            &post,
            &h(&[
                ("host", "127.0.0.1:3000"),
                ("origin", "http://127.0.0.1:3000")
            ])
        )
        .is_none());
        assert!(cross_site(
            &post,
            &h(&[
                ("host", "127.0.0.1:3000"),
                ("origin", "http://evil.example")
            ])
        )
        .is_some());
        assert!(cross_site(&post, &h(&[("host", "x"), ("origin", "null")])).is_some());
        assert!(cross_site(&post, &h(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&Method::GET, &h(&[("origin", "http://evil.example")])).is_none());
    }
}
