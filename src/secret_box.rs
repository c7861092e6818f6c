//! Encryption of endpoint secrets at rest (XChaCha20-Poly1305 under the operator key ring).
//!
//! The operator key comes from `DESKHOOK_SECRET_KEY` (base64 or hex of 32 bytes); with none
//! set, one is generated once into the data directory and the log says so. Stored form:
//! `fingerprint (4 bytes) || nonce (24) || ciphertext`. The fingerprint names the key and the
//! format, so a wrong key is a clear error instead of garbage, and a ring of keys opens each
//! secret with the key that sealed it.
//!
//! Every sealed value is bound to what it belongs to (a [`SealedFor`]: this endpoint's secret,
//! this endpoint's headers, this key's stored answer) as associated data, so a ciphertext
//! copied into another row, by someone who can write the database but has no operator key,
//! does not open there (review L12). Values sealed before that (the first format, whose
//! fingerprint is the key's plain digest) still open, count as not current, and are re-sealed
//! bound when read, like values of a previous key.
//!
//! The ring is the current key (which seals) and previous keys (which only open): the ones in
//! `DESKHOOK_SECRET_KEY_PREVIOUS` and the data directory's key file when an operator key is set,
//! so moving from the generated key to one's own breaks nothing. Callers re-seal what a
//! previous key opened ([`SecretBox::is_current`]). The key file is never overwritten: an
//! unreadable or damaged one stops the process, since every secret sealed under it would be
//! lost with it.
//!
//! A leaf: the configuration holds the ring and the server hands it to the API and the workers.
//! It must never log a key or an opened value, nor import another module of the crate.

use std::{fmt, io, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead as _, KeyInit as _, Payload},
};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// The name of the key file in the data directory.
pub const KEY_FILE: &str = "secret.key";

/// The fewest distinct byte values an operator key may hold. Random keys have fewer than 16
/// with a probability below 10^-15.
const MIN_DISTINCT_BYTES: usize = 16;

/// One key of the ring.
#[derive(Clone)]
struct Key {
    cipher: XChaCha20Poly1305,
    /// Names the key in values sealed bound to a [`SealedFor`] (the current format).
    fingerprint: [u8; 4],
    /// Names the key in values sealed unbound, before contexts existed (they only open).
    unbound_fingerprint: [u8; 4],
}

impl Key {
    fn new(key: [u8; 32]) -> Self {
        let unbound = Sha256::digest(key);
        let bound = Sha256::new()
            .chain_update(b"deskhook sealed, bound to its context")
            .chain_update(key)
            .finalize();
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
            fingerprint: [bound[0], bound[1], bound[2], bound[3]],
            unbound_fingerprint: [unbound[0], unbound[1], unbound[2], unbound[3]],
        }
    }
}

/// What a sealed value belongs to, bound into it as associated data: it opens only in the
/// same context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFor(Vec<u8>);

impl SealedFor {
    fn of(purpose: &str, id: i64, extra: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(purpose.len() + 9 + extra.len());
        bytes.extend_from_slice(purpose.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(extra);
        Self(bytes)
    }

    /// A signing secret of this endpoint.
    pub fn endpoint_secret(endpoint_id: i64) -> Self {
        Self::of("endpoint_secret", endpoint_id, &[])
    }

    /// The custom header values of this endpoint.
    pub fn endpoint_headers(endpoint_id: i64) -> Self {
        Self::of("endpoint_headers", endpoint_id, &[])
    }

    /// The stored answer to this `Idempotency-Key` of this API key.
    pub fn idempotent_answer(api_key_id: i64, idempotency_key: &str) -> Self {
        Self::of("idempotent_answer", api_key_id, idempotency_key.as_bytes())
    }
}

/// The operator key ring: one current key that seals, previous keys that still open.
#[derive(Clone)]
pub struct SecretBox {
    current: Key,
    previous: Vec<Key>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox([REDACTED])")
    }
}

/// Why a stored secret cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    /// Stored under a key that is not in the ring.
    #[error(
        "the secret was encrypted with a key that is neither DESKHOOK_SECRET_KEY nor in DESKHOOK_SECRET_KEY_PREVIOUS"
    )]
    WrongKey,
    /// Damaged.
    #[error("the stored secret is damaged")]
    Damaged,
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It exists but cannot be read (permissions, a directory, ...).
    #[error(
        "cannot read {path}: {source}; fix it or set DESKHOOK_SECRET_KEY (it is never overwritten)"
    )]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// It holds no key.
    #[error("{path} holds no key ({why}); restore it from a backup (it is never overwritten)")]
    Damaged {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// It could not be created.
    #[error("cannot create {path}: {source}; set DESKHOOK_SECRET_KEY instead")]
    Create {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
}

impl SecretBox {
    /// A ring of one key.
    pub fn new(key: [u8; 32]) -> Self {
        Self::with_previous(key, [])
    }

    /// A ring that seals with `current` and still opens what `previous` sealed.
    pub fn with_previous(current: [u8; 32], previous: impl IntoIterator<Item = [u8; 32]>) -> Self {
        let current = Key::new(current);
        let mut ring: Vec<Key> = Vec::new();
        for key in previous.into_iter().map(Key::new) {
            if key.fingerprint != current.fingerprint
                && ring.iter().all(|k| k.fingerprint != key.fingerprint)
            {
                ring.push(key);
            }
        }
        Self {
            current,
            previous: ring,
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
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "expected exactly 32 bytes".to_owned())?;
        // 32 random bytes hold about 30 distinct values; fewer than 16 is a placeholder such
        // as the all-zero example key (review L15), never a key anyone generated.
        let distinct = key.iter().collect::<std::collections::BTreeSet<_>>().len();
        if distinct < MIN_DISTINCT_BYTES {
            return Err(format!(
                "holds only {distinct} distinct byte values, so it is a placeholder, not 32 \
                 random bytes; make one with `openssl rand -hex 32`"
            ));
        }
        Ok(key)
    }

    /// Parses `DESKHOOK_SECRET_KEY_PREVIOUS`: keys as [`SecretBox::parse_key`] reads them,
    /// separated by commas.
    pub fn parse_keys(text: &str) -> Result<Vec<[u8; 32]>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .enumerate()
            .map(|(i, part)| Self::parse_key(part).map_err(|why| format!("key {}: {why}", i + 1)))
            .collect()
    }

    /// The key in `dir/secret.key`, if the file exists. An unreadable or damaged file is an
    /// error, never a reason to make a new key.
    pub fn read_key_file(dir: &Path) -> Result<Option<[u8; 32]>, KeyFileError> {
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse_key(&text)
                .map(Some)
                .map_err(|why| KeyFileError::Damaged {
                    path: path.display().to_string(),
                    why,
                }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(KeyFileError::Unreadable {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The key in `dir/secret.key`, created on first use. Returns the key and whether it was
    /// created now. Creation is atomic and never replaces a file: the key is written to a
    /// private temporary file, synced, then linked into place, so two processes starting at
    /// once agree on the one that landed first.
    pub fn key_file(dir: &Path) -> Result<([u8; 32], bool), KeyFileError> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        if let Some(key) = Self::read_key_file(dir)? {
            return Ok((key, false));
        }
        let path = dir.join(KEY_FILE);
        let create = |source: io::Error| KeyFileError::Create {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(create)?;
        let mut key = [0_u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let temporary = dir.join(format!(".{KEY_FILE}.{}.tmp", rand::random::<u64>()));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(STANDARD.encode(key).as_bytes())?;
            file.sync_all()?;
            std::fs::hard_link(&temporary, &path)
        })();
        let _ = std::fs::remove_file(&temporary);
        match written {
            Ok(()) => {
                // The link is durable once the directory is.
                if let Ok(directory) = std::fs::File::open(dir) {
                    let _ = directory.sync_all();
                }
                Ok((key, true))
            }
            // Another process created it first: use theirs.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Self::read_key_file(dir)?
                .map(|key| (key, false))
                .ok_or_else(|| create(error)),
            Err(error) => Err(create(error)),
        }
    }

    /// Encrypts `plain` under the current key, bound to `context`.
    pub fn seal(&self, plain: &str, context: &SealedFor) -> Vec<u8> {
        self.seal_bytes(plain.as_bytes(), context)
    }

    /// Encrypts any bytes under the current key, bound to `context`.
    pub fn seal_bytes(&self, plain: &[u8], context: &SealedFor) -> Vec<u8> {
        let mut nonce = [0_u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &context.0,
                },
            )
            .expect("encryption in memory cannot fail");
        let mut out = Vec::with_capacity(4 + 24 + sealed.len());
        out.extend_from_slice(&self.current.fingerprint);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Whether `stored` was sealed under the current key and bound to its context; anything
    /// else that opens is worth re-sealing.
    pub fn is_current(&self, stored: &[u8]) -> bool {
        stored.get(..4) == Some(&self.current.fingerprint[..])
    }

    /// Decrypts what [`SecretBox::seal`] produced under any key of the ring for `context`.
    pub fn open(&self, stored: &[u8], context: &SealedFor) -> Result<String, SecretBoxError> {
        String::from_utf8(self.open_bytes(stored, context)?).map_err(|_| SecretBoxError::Damaged)
    }

    /// Decrypts what [`SecretBox::seal_bytes`] produced under any key of the ring for
    /// `context`. A value sealed in another context is [`SecretBoxError::Damaged`].
    pub fn open_bytes(
        &self,
        stored: &[u8],
        context: &SealedFor,
    ) -> Result<Vec<u8>, SecretBoxError> {
        if stored.len() < 28 {
            return Err(SecretBoxError::Damaged);
        }
        let (nonce, sealed) = (XNonce::from_slice(&stored[4..28]), &stored[28..]);
        let ring = || std::iter::once(&self.current).chain(&self.previous);
        if let Some(key) = ring().find(|key| stored[..4] == key.fingerprint) {
            return key
                .cipher
                .decrypt(
                    nonce,
                    Payload {
                        msg: sealed,
                        aad: &context.0,
                    },
                )
                .map_err(|_| SecretBoxError::Damaged);
        }
        let key = ring()
            .find(|key| stored[..4] == key.unbound_fingerprint)
            .ok_or(SecretBoxError::WrongKey)?;
        key.cipher
            .decrypt(nonce, sealed)
            .map_err(|_| SecretBoxError::Damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_another_key() {
        let secret_box = SecretBox::random();
        let sealed = secret_box.seal("whsec_abc", &SealedFor::endpoint_secret(1));
        assert!(
            !sealed.windows(9).any(|w| w == b"whsec_abc"),
            "stored in clear"
        );
        assert_eq!(
            secret_box
                .open(&sealed, &SealedFor::endpoint_secret(1))
                .expect("opens"),
            "whsec_abc"
        );
        assert!(matches!(
            SecretBox::random().open(&sealed, &SealedFor::endpoint_secret(1)),
            Err(SecretBoxError::WrongKey)
        ));
        let mut damaged = sealed;
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(
            secret_box.open(&damaged, &SealedFor::endpoint_secret(1)),
            Err(SecretBoxError::Damaged)
        ));
    }

    #[test]
    fn placeholder_keys_are_refused() {
        for text in [
            "0".repeat(64),
            "22".repeat(32),
            "deadbeef".repeat(8),
            STANDARD.encode([0_u8; 32]),
        ] {
            let refused = SecretBox::parse_key(&text).expect_err(&text);
            assert!(refused.contains("openssl rand"), "{refused}");
        }
    }

    #[test]
    fn keys_parse_from_hex_or_base64() {
        let key: [u8; 32] = rand::random();
        assert_eq!(SecretBox::parse_key(&hex::encode(key)), Ok(key));
        assert_eq!(SecretBox::parse_key(&STANDARD.encode(key)), Ok(key));
        assert!(SecretBox::parse_key("short").is_err());
    }

    fn scratch_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("deskhook-key-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_damaged_key_file_is_refused_and_never_overwritten() {
        let dir = scratch_dir();
        let path = dir.join("secret.key");
        std::fs::write(&path, "half a key").expect("write");
        assert!(
            SecretBox::key_file(&dir).is_err(),
            "a damaged key file must stop the start"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("still there"),
            "half a key",
            "the key file was overwritten"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_key_file_is_refused_and_never_replaced() {
        let dir = scratch_dir();
        // A directory where the file should be cannot be read, even by root.
        std::fs::create_dir(dir.join("secret.key")).expect("mkdir");
        assert!(
            SecretBox::key_file(&dir).is_err(),
            "an unreadable key file must stop the start"
        );
        assert!(dir.join("secret.key").is_dir(), "the key file was replaced");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn processes_creating_the_key_file_at_once_agree_on_one_key() {
        let dir = scratch_dir();
        let keys: Vec<[u8; 32]> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| SecretBox::key_file(&dir).expect("key").0))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert!(
            keys.iter().all(|k| *k == keys[0]),
            "two keys were handed out"
        );
        let on_disk = std::fs::read_to_string(dir.join("secret.key")).expect("file");
        assert_eq!(SecretBox::parse_key(&on_disk).expect("parses"), keys[0]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("secret.key"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers = std::fs::read_dir(&dir).expect("list").count();
        assert_eq!(leftovers, 1, "temporary files were left behind");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_previous_key_still_opens_and_the_current_one_seals() {
        let (old, new): ([u8; 32], [u8; 32]) = (rand::random(), rand::random());
        let sealed_before = SecretBox::new(old).seal("whsec_old", &SealedFor::endpoint_secret(1));
        let ring = SecretBox::with_previous(new, [old]);
        assert_eq!(
            ring.open(&sealed_before, &SealedFor::endpoint_secret(1))
                .expect("opens"),
            "whsec_old"
        );
        assert!(!ring.is_current(&sealed_before), "worth re-sealing");
        let resealed = ring.seal("whsec_old", &SealedFor::endpoint_secret(1));
        assert!(ring.is_current(&resealed));
        assert!(matches!(
            SecretBox::new(old).open(&resealed, &SealedFor::endpoint_secret(1)),
            Err(SecretBoxError::WrongKey)
        ));
        assert_eq!(
            SecretBox::parse_keys(&format!(" {} ,{}", hex::encode(old), STANDARD.encode(new)))
                .expect("parses"),
            vec![old, new]
        );
        assert!(SecretBox::parse_keys("nope").is_err());
    }

    #[test]
    fn a_sealed_value_opens_only_in_its_own_context() {
        let secret_box = SecretBox::random();
        let sealed = secret_box.seal("whsec_mine", &SealedFor::endpoint_secret(1));
        for elsewhere in [
            SealedFor::endpoint_secret(2),
            SealedFor::endpoint_headers(1),
            SealedFor::idempotent_answer(1, ""),
        ] {
            assert!(
                matches!(
                    secret_box.open(&sealed, &elsewhere),
                    Err(SecretBoxError::Damaged)
                ),
                "opened in {elsewhere:?}"
            );
        }
        let answer = secret_box.seal_bytes(b"{}", &SealedFor::idempotent_answer(7, "k1"));
        assert!(
            secret_box
                .open_bytes(&answer, &SealedFor::idempotent_answer(7, "k2"))
                .is_err()
        );
    }

    #[test]
    fn a_value_sealed_before_contexts_existed_opens_and_is_not_current() {
        let key: [u8; 32] = rand::random();
        let secret_box = SecretBox::new(key);
        // The first stored form: the key's plain digest, then nonce and ciphertext, no AAD.
        let nonce = [9_u8; 24];
        let mut unbound = Sha256::digest(key)[..4].to_vec();
        unbound.extend_from_slice(&nonce);
        unbound.extend(
            XChaCha20Poly1305::new(&key.into())
                .encrypt(XNonce::from_slice(&nonce), b"whsec_old".as_slice())
                .expect("encrypt"),
        );
        assert_eq!(
            secret_box
                .open(&unbound, &SealedFor::endpoint_secret(3))
                .expect("opens"),
            "whsec_old"
        );
        assert!(!secret_box.is_current(&unbound), "worth re-sealing bound");
    }
}
