//! Making and hashing API keys.

use rand::{Rng as _, distributions::Alphanumeric};
use sha2::{Digest as _, Sha256};

/// A new key: `dhk_` and 40 random base62 characters (about 238 bits).
pub fn generate_key() -> String {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("dhk_{random}")
}

/// The stored form of a key. Keys are long random strings, so a plain SHA-256 is enough (no
/// password-hashing work factor is needed against guessing).
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_long_and_distinct() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.starts_with("dhk_"));
        assert_eq!(a.len(), 44);
        assert!(a[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_ne!(hash_key(&a), hash_key(&b));
    }
}
