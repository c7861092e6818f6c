//! Signing webhook requests.
//!
//! Every request carries the Standard Webhooks headers: `webhook-id`, `webhook-timestamp`
//! (Unix seconds of this attempt) and `webhook-signature`, a space-separated list of
//! `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` entries, where `key` is the
//! base64-decoded part of the endpoint secret `whsec_<base64>`. During a rotation the newest
//! key signs first. It also carries `deskhook-signature: sha256=<hex HMAC-SHA256(secret
//! string, body)>` for receivers of the simple scheme, and, where an endpoint asks for it, the
//! seed-000 header with the bare hex of that HMAC.
//!
//! Pure functions, no I/O. A [`SigningSecret`] never prints its value.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of endpoint secrets.
pub const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing secret: the `whsec_…` string and its decoded key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([REDACTED])")
    }
}

/// Why a secret string is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Not `whsec_` followed by base64 of 24–64 bytes.
    #[error("a secret is `whsec_` followed by the base64 of 24 to 64 bytes")]
    Malformed,
}

impl SigningSecret {
    /// A new random secret of 32 bytes.
    pub fn generate() -> Self {
        let mut key = vec![0_u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self {
            text: format!("{SECRET_PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// Parses a `whsec_…` string.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::Malformed)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Malformed);
        }
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The `whsec_…` string, to show the user once or to encrypt at rest.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// `v1,<base64>` over `{id}.{timestamp}.{body}`.
    pub fn sign_v1(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Hex HMAC-SHA256 of `body` keyed by the whole secret string (the simple scheme).
    pub fn body_hmac_hex(&self, body: &[u8]) -> String {
        let mut mac =
            HmacSha256::new_from_slice(self.text.as_bytes()).expect("HMAC takes any key length");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

/// The signature headers of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signatures {
    /// `webhook-signature`: one `v1,…` entry per live secret, newest first.
    pub standard: String,
    /// `deskhook-signature`: `sha256=<hex>` with the newest secret.
    pub simple: String,
    /// The bare hex for an endpoint's legacy header, with the newest secret.
    pub legacy_hex: String,
}

/// Signs `body` for message `message_id` at `timestamp` with `secrets` (newest first; must not
/// be empty).
pub fn sign(
    secrets: &[SigningSecret],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Signatures {
    let newest = secrets
        .first()
        .expect("an endpoint always has a current secret");
    let standard = secrets
        .iter()
        .map(|secret| secret.sign_v1(message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ");
    let legacy_hex = newest.body_hmac_hex(body);
    Signatures {
        standard,
        simple: format!("sha256={legacy_hex}"),
        legacy_hex,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn the_standard_webhooks_conformance_vector() {
        let secret = SigningSecret::parse(SECRET).expect("vector secret parses");
        assert_eq!(
            secret.sign_v1("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn the_simple_scheme_vector() {
        let secret = SigningSecret::parse(SECRET).expect("vector secret parses");
        let signatures = sign(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            BODY,
        );
        assert_eq!(
            signatures.simple,
            "sha256=80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c"
        );
        assert_eq!(
            signatures.legacy_hex,
            "80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c"
        );
    }

    #[test]
    fn during_rotation_the_newest_key_signs_first() {
        let old = SigningSecret::parse(SECRET).expect("parses");
        let new = SigningSecret::generate();
        let signatures = sign(&[new.clone(), old.clone()], "evt_1", 1, b"{}");
        let entries: Vec<&str> = signatures.standard.split(' ').collect();
        assert_eq!(
            entries,
            [
                new.sign_v1("evt_1", 1, b"{}"),
                old.sign_v1("evt_1", 1, b"{}")
            ]
        );
    }

    #[test]
    fn secrets_are_validated_and_never_printed() {
        let secret = SigningSecret::generate();
        assert!(secret.expose().starts_with(SECRET_PREFIX));
        assert_eq!(SigningSecret::parse(secret.expose()), Ok(secret.clone()));
        assert_eq!(format!("{secret:?}"), "SigningSecret([REDACTED])");
        assert!(SigningSecret::parse("whsec_c2hvcnQ=").is_err(), "too short");
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningSecret::parse("whsec_!!!").is_err());
    }

    mod properties {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// What Deskhook signs, a subscriber using the Standard Webhooks library verifies,
            /// for any secret length the format allows, any message id and any body; and a
            /// changed body never verifies.
            #[test]
            fn a_subscriber_verifies_every_signature_and_no_tampered_body(
                key in proptest::collection::vec(any::<u8>(), 24..=64),
                message in "[a-z]{3}_[A-Za-z0-9]{1,30}",
                // Bodies are JSON, so text (the library refuses bytes that are not UTF-8).
                body in ".{0,600}".prop_map(String::into_bytes),
                flip in any::<prop::sample::Index>(),
            ) {
                let text = format!("whsec_{}", STANDARD.encode(&key));
                let secret = SigningSecret::parse(&text).expect("a valid secret");
                prop_assert_eq!(secret.expose(), text.as_str());
                let timestamp = chrono::Utc::now().timestamp();
                let signatures = sign(std::slice::from_ref(&secret), &message, timestamp, &body);
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert("webhook-id", message.parse().expect("header"));
                headers.insert("webhook-timestamp", timestamp.to_string().parse().expect("header"));
                headers.insert("webhook-signature", signatures.standard.parse().expect("header"));
                let subscriber = standardwebhooks::Webhook::new(&text).expect("the library reads it");
                let verified = subscriber.verify(&body, &headers);
                prop_assert!(verified.is_ok(), "{:?}", verified);
                if !body.is_empty() {
                    let mut tampered = body.clone();
                    tampered[flip.index(body.len())] ^= 1;
                    prop_assert!(subscriber.verify(&tampered, &headers).is_err());
                }
            }

            /// Secrets outside the format are refused, never half-parsed.
            #[test]
            fn only_whsec_and_24_to_64_bytes_parse(key in proptest::collection::vec(any::<u8>(), 0..100)) {
                let text = format!("whsec_{}", STANDARD.encode(&key));
                prop_assert_eq!(SigningSecret::parse(&text).is_ok(), (24..=64).contains(&key.len()));
                prop_assert!(SigningSecret::parse(&STANDARD.encode(&key)).is_err());
            }
        }
    }
}
