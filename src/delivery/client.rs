//! The outbound HTTP client: one keep-alive pool for every endpoint, a per-attempt timeout, no
//! redirects, responses read up to a cap, and every connection vetted by the
//! [`AddressGuard`](crate::ssrf::AddressGuard) after DNS resolution.
//!
//! This is the only place Deskhook makes outbound requests.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header::HeaderMap,
    redirect,
};

use crate::ssrf::{AddressGuard, Refused};

/// How much of a response body is kept for the attempt log.
pub const RESPONSE_SNIPPET_BYTES: usize = 4096;

/// The outcome kinds recorded for an attempt (api.md's `attempt_log[].outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// A 2xx.
    Success,
    /// Any other status.
    HttpError,
    /// No answer within the attempt timeout.
    Timeout,
    /// The connection failed.
    ConnectError,
    /// The TLS handshake failed.
    TlsError,
    /// The SSRF guard refused the destination.
    Refused,
}

impl OutcomeKind {
    /// The name stored in the attempt log and shown by the API (api.md).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::TlsError => "tls_error",
            Self::Refused => "refused",
        }
    }

    /// The `outcome` label of `deskhook_delivery_attempts_total` (operations.md), which names
    /// a refusal by what refused it.
    pub const fn metric_label(self) -> &'static str {
        match self {
            Self::Refused => "ssrf_blocked",
            other => other.as_str(),
        }
    }
}

/// What one POST produced.
#[derive(Debug, Clone)]
pub struct Response {
    /// The outcome kind.
    pub kind: OutcomeKind,
    /// The status code, when one came back.
    pub status: Option<u16>,
    /// `Retry-After` in seconds, when given (429/503).
    pub retry_after: Option<Duration>,
    /// The start of the response body (at most [`RESPONSE_SNIPPET_BYTES`]), lossily UTF-8.
    pub body_snippet: Option<String>,
    /// A short error description for failed transports (never secrets).
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration: Duration,
}

/// The delivery client.
#[derive(Debug, Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
    guard: Arc<AddressGuard>,
}

impl DeliveryClient {
    /// A client with `timeout` per attempt that contacts only what `guard` allows, directly
    /// or through `egress_proxy` (which must enforce the deny-list: it resolves the names).
    /// `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` are ignored: through them the guard would
    /// never see the address a name resolves to.
    pub fn new(guard: AddressGuard, timeout: Duration, egress_proxy: Option<&Url>) -> Self {
        let guard = Arc::new(guard);
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(proxy) = egress_proxy {
            builder = builder.proxy(
                reqwest::Proxy::all(proxy.as_str()).expect("a proxy URL parsed by the settings"),
            );
        }
        let http = builder
            .redirect(redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .user_agent(concat!("Deskhook/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .build()
            .expect("the HTTP client configuration is valid");
        Self { http, guard }
    }

    /// Checks a URL whose host is a literal address (the resolver is not consulted for those).
    pub fn check_literal(&self, url: &Url) -> Result<(), Refused> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.guard.check(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.guard.check(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }

    /// POSTs `body` with `headers` to `url` and classifies what happened.
    pub async fn post(&self, url: &Url, headers: HeaderMap, body: bytes::Bytes) -> Response {
        let started = Instant::now();
        if let Err(refused) = self.check_literal(url) {
            return failure(OutcomeKind::Refused, refused.to_string(), started);
        }
        let sent = self
            .http
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                let (kind, text) = classify(&error);
                return failure(kind, text, started);
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut snippet = Vec::new();
        // Read at most the snippet; a receiver that streams more is cut off.
        while snippet.len() < RESPONSE_SNIPPET_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = RESPONSE_SNIPPET_BYTES - snippet.len();
                    snippet.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Response {
            kind: if status.is_success() {
                OutcomeKind::Success
            } else {
                OutcomeKind::HttpError
            },
            status: Some(status.as_u16()),
            retry_after,
            body_snippet: (!snippet.is_empty())
                .then(|| String::from_utf8_lossy(&snippet).into_owned()),
            error: None,
            duration: started.elapsed(),
        }
    }
}

fn failure(kind: OutcomeKind, error: String, started: Instant) -> Response {
    Response {
        kind,
        status: None,
        retry_after: None,
        body_snippet: None,
        error: Some(error),
        duration: started.elapsed(),
    }
}

/// Sorts a transport error into an outcome kind, with a short description.
fn classify(error: &reqwest::Error) -> (OutcomeKind, String) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut chain = Vec::new();
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return (OutcomeKind::Refused, refused.to_string());
        }
        chain.push(current.to_string());
        source = current.source();
    }
    let mut text = chain.join(": ");
    // reqwest names the whole URL; query values are often capability tokens.
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), &redacted(url));
    }
    let lower = text.to_ascii_lowercase();
    let kind = if error.is_timeout() {
        OutcomeKind::Timeout
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        OutcomeKind::TlsError
    } else {
        OutcomeKind::ConnectError
    };
    (kind, truncate(&text, 500))
}

/// `url` fit for logs and attempt logs: no userinfo, and every query value replaced, since
/// receivers put tokens there (`…/catch/123/?token=…`). Paths are kept: they say which
/// receiver it is.
pub fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if url.query().is_some() {
        let names: Vec<String> = url
            .query_pairs()
            .map(|(name, _)| name.into_owned())
            .collect();
        shown
            .query_pairs_mut()
            .clear()
            .extend_pairs(names.iter().map(|name| (name.as_str(), "REDACTED")));
    }
    shown.set_fragment(None);
    shown.to_string()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Resolves names with the system resolver, then keeps only the addresses the guard allows:
/// the connector only ever sees vetted addresses.
#[derive(Debug)]
struct GuardedResolver {
    guard: Arc<AddressGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match guard.check(address.ip()) {
                    Ok(()) => true,
                    Err(refused) => {
                        first_refusal.get_or_insert(refused);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> = match first_refusal {
                    Some(refused) => Box::new(refused),
                    None => format!("{host} did not resolve to any address").into(),
                };
                return Err(error);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_userinfo_and_query_values_and_keeps_the_rest() {
        let url =
            Url::parse("https://user:pw@hooks.example.com:8443/catch/123/?token=SECRET&x=1#frag")
                .expect("url");
        let shown = redacted(&url);
        assert_eq!(
            shown,
            "https://hooks.example.com:8443/catch/123/?token=REDACTED&x=REDACTED"
        );
        let plain = Url::parse("http://127.0.0.1:9/hook").expect("url");
        assert_eq!(redacted(&plain), "http://127.0.0.1:9/hook");
    }

    #[tokio::test]
    async fn a_failed_attempt_never_names_the_query_token() {
        // A closed loopback port: the request fails the way a dead receiver does.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let client = DeliveryClient::new(
            AddressGuard::new(vec!["127.0.0.0/8".parse().expect("net")]),
            Duration::from_secs(5),
            None,
        );
        let url = Url::parse(&format!("http://127.0.0.1:{port}/hook?token=SECRET")).expect("url");
        let response = client
            .post(&url, HeaderMap::new(), bytes::Bytes::from_static(b"{}"))
            .await;
        assert_eq!(response.kind, OutcomeKind::ConnectError);
        let error = response.error.expect("an error");
        assert!(!error.contains("SECRET"), "{error}");
        assert!(error.contains("token=REDACTED"), "{error}");
    }
}
