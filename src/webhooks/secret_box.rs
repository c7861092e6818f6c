//! Encryption of endpoint secrets at rest (XChaCha20-Poly1305 under the operator key).
//!
//! The operator key comes from `DESKHOOK_SECRET_KEY` (base64 or hex of 32 bytes); with none
//! set, one is generated once into the data directory and the log says so. Stored form:
//! `fingerprint (4 bytes) || nonce (24) || ciphertext`. The fingerprint names the key, so a
//! wrong key is a clear error instead of garbage.

use std::{fmt, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead as _, KeyInit as _},
};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// The operator key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    fingerprint: [u8; 4],
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox([REDACTED])")
    }
}

/// Why a stored secret cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    /// Stored under another operator key.
    #[error("the secret was encrypted with another DESKHOOK_SECRET_KEY")]
    WrongKey,
    /// Damaged.
    #[error("the stored secret is damaged")]
    Damaged,
}

impl SecretBox {
    /// A box with the given 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
            fingerprint: [digest[0], digest[1], digest[2], digest[3]],
        }
    }

    /// A box with a random key (tests and one-off runs).
    pub fn random() -> Self {
        let mut key = [0_u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self::new(key)
    }

    /// Parses `DESKHOOK_SECRET_KEY`: base64 or hex of exactly 32 bytes.
    pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| STANDARD.decode(text).ok())
            .ok_or("expected the base64 or hex of 32 random bytes")?;
        bytes
            .try_into()
            .map_err(|_| "expected exactly 32 bytes".to_owned())
    }

    /// The key in `dir/secret.key`, created on first use. Returns the key and whether it was
    /// created now.
    pub fn key_file(dir: &Path) -> std::io::Result<([u8; 32], bool)> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let path = dir.join("secret.key");
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(key) = Self::parse_key(&text)
        {
            return Ok((key, false));
        }
        std::fs::create_dir_all(dir)?;
        let mut key = [0_u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(STANDARD.encode(key).as_bytes())?;
        Ok((key, true))
    }

    /// Encrypts `plain`.
    pub fn seal(&self, plain: &str) -> Vec<u8> {
        let mut nonce = [0_u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_bytes())
            .expect("encryption of a short secret cannot fail");
        let mut out = Vec::with_capacity(4 + 24 + sealed.len());
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`SecretBox::seal`] produced.
    pub fn open(&self, stored: &[u8]) -> Result<String, SecretBoxError> {
        if stored.len() < 28 {
            return Err(SecretBoxError::Damaged);
        }
        if stored[..4] != self.fingerprint {
            return Err(SecretBoxError::WrongKey);
        }
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(&stored[4..28]), &stored[28..])
            .map_err(|_| SecretBoxError::Damaged)?;
        String::from_utf8(plain).map_err(|_| SecretBoxError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_another_key() {
        let secret_box = SecretBox::random();
        let sealed = secret_box.seal("whsec_abc");
        assert!(
            !sealed.windows(9).any(|w| w == b"whsec_abc"),
            "stored in clear"
        );
        assert_eq!(secret_box.open(&sealed).expect("opens"), "whsec_abc");
        assert!(matches!(
            SecretBox::random().open(&sealed),
            Err(SecretBoxError::WrongKey)
        ));
        let mut damaged = sealed;
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            secret_box.open(&damaged),
            Err(SecretBoxError::Damaged)
        ));
    }

    #[test]
    fn keys_parse_from_hex_or_base64() {
        let key = [7_u8; 32];
        assert_eq!(SecretBox::parse_key(&hex::encode(key)), Ok(key));
        assert_eq!(SecretBox::parse_key(&STANDARD.encode(key)), Ok(key));
        assert!(SecretBox::parse_key("short").is_err());
    }
}
