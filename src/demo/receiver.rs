//! The demo's webhook receiver: an axum server on `127.0.0.1:0` that checks every request's
//! Standard Webhooks signature the way a subscriber would (the `webhook-id`, `webhook-timestamp`
//! and `webhook-signature` headers, a five-minute timestamp tolerance, a constant-time compare)
//! and reports each arrival to the demo.
//!
//! It answers 204 to a request whose signature verifies and 401 to any other, as a real
//! subscriber should. It must never accept a request it could not verify as verified.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::signing::SigningSecret;

/// How far a `webhook-timestamp` may be from the receiver's clock (the Standard Webhooks
/// libraries' default).
const TOLERANCE_SECONDS: i64 = 300;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The `webhook-id` header (the event id).
    pub webhook_id: String,
    /// The event type from the body.
    pub event_type: String,
    /// The body's `data` object.
    pub data: Value,
    /// `Ok` when a `v1` signature matched the endpoint's secret; else why not.
    pub verified: Result<(), String>,
}

struct Shared {
    secret: Mutex<Option<SigningSecret>>,
    arrivals: mpsc::UnboundedSender<Arrival>,
}

/// A running receiver; it stops when the token given to [`Receiver::start`] is cancelled.
pub struct Receiver {
    /// Where it listens.
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Binds `127.0.0.1:0` and serves `POST /hook`. Arrivals go to the returned channel.
    pub async fn start(
        stop: CancellationToken,
    ) -> std::io::Result<(Self, mpsc::UnboundedReceiver<Arrival>)> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (sender, arrivals) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            secret: Mutex::new(None),
            arrivals: sender,
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok((Self { address, shared }, arrivals))
    }

    /// The URL to give the endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    /// Verifies with this secret from now on (the one the endpoint was created with).
    pub fn trust(&self, secret: SigningSecret) {
        *self.shared.secret.lock().expect("not poisoned") = Some(secret);
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let secret = shared.secret.lock().expect("not poisoned").clone();
    let verified = match secret {
        Some(secret) => verify(&secret, &headers, &body, chrono::Utc::now().timestamp()),
        None => Err("no secret to verify with yet".to_owned()),
    };
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let status = if verified.is_ok() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    };
    let _ = shared.arrivals.send(Arrival {
        webhook_id: header(&headers, "webhook-id").to_owned(),
        event_type: json["type"].as_str().unwrap_or("?").to_owned(),
        data: json["data"].clone(),
        verified,
    });
    status
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// Checks the Standard Webhooks signature of one request against `secret` at time `now`.
pub fn verify(
    secret: &SigningSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let id = header(headers, "webhook-id");
    let timestamp = header(headers, "webhook-timestamp");
    let signatures = header(headers, "webhook-signature");
    if id.is_empty() || timestamp.is_empty() || signatures.is_empty() {
        return Err(
            "a webhook-id, webhook-timestamp or webhook-signature header is missing".into(),
        );
    }
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_owned())?;
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err("webhook-timestamp is too far from now".into());
    }
    let expected = secret.sign_v1(id, timestamp, body);
    if signatures
        .split(' ')
        .any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes()))
    {
        Ok(())
    } else {
        Err("no v1 signature matches the endpoint's secret".into())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn signed(secret: &SigningSecret, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
        let signatures = crate::signing::sign(std::slice::from_ref(secret), id, timestamp, body);
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_str(id).expect("header"));
        headers.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&timestamp.to_string()).expect("header"),
        );
        headers.insert(
            "webhook-signature",
            HeaderValue::from_str(&signatures.standard).expect("header"),
        );
        headers
    }

    #[test]
    fn a_signed_request_verifies_and_a_tampered_one_does_not() {
        let secret = SigningSecret::generate();
        let headers = signed(&secret, "evt_1", 1_000, b"{\"a\":1}");
        assert_eq!(verify(&secret, &headers, b"{\"a\":1}", 1_010), Ok(()));
        assert!(verify(&secret, &headers, b"{\"a\":2}", 1_010).is_err());
        assert!(verify(&SigningSecret::generate(), &headers, b"{\"a\":1}", 1_010).is_err());
        assert!(verify(&secret, &headers, b"{\"a\":1}", 1_000 + 301).is_err());
        assert!(verify(&secret, &HeaderMap::new(), b"{}", 1_000).is_err());
    }
}
