//! Tenancy and API keys: workspaces, keys, scopes, and turning a bearer key into a
//! [`Principal`].
//!
//! Keys are `dhk_` + 40 random base62 characters, shown once. Only their SHA-256 and their
//! first 8 characters are stored, so a database leak reveals no usable key. This module owns
//! the `workspace` and `api_key` tables; it knows nothing of HTTP (the extractor lives in
//! `http::auth`).

mod keys;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

pub use keys::{generate_key, hash_key};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET requests only.
    Read,
    /// Full access to helpdesk data and webhooks.
    Write,
    /// Only `POST /v1/events`.
    Ingest,
    /// Everything, including API keys.
    Admin,
}

impl Scope {
    /// The stored and displayed name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Ingest => "ingest",
            Self::Admin => "admin",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "ingest" => Some(Self::Ingest),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who is calling: the key's workspace, the key, its scopes, and the user it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The workspace every query of this request is confined to.
    pub workspace_id: i64,
    /// The key used.
    pub key_id: i64,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// The agent the key acts as, if bound.
    pub user_id: Option<i64>,
    /// The workspace's own rate limit, if it set one.
    pub workspace_rate_limit: Option<u32>,
}

impl Principal {
    /// Whether the key has `scope` (admin has every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// May read helpdesk data and webhooks (any scope but ingest-only).
    pub fn can_read(&self) -> bool {
        self.has(Scope::Read) || self.has(Scope::Write)
    }

    /// May change helpdesk data and webhooks.
    pub fn can_write(&self) -> bool {
        self.has(Scope::Write)
    }

    /// May post events to the ingest endpoint.
    pub fn can_ingest(&self) -> bool {
        self.has(Scope::Ingest) || self.has(Scope::Write)
    }

    /// May manage keys and workspace settings.
    pub fn is_admin(&self) -> bool {
        self.has(Scope::Admin)
    }
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    /// Key id.
    pub id: i64,
    /// Owning workspace.
    pub workspace_id: i64,
    /// Optional label.
    pub name: Option<String>,
    /// The first 8 characters of the key.
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Bound user.
    pub user_id: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last used (recorded at most about once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops working (rotation grace), if set.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A newly created key: the record and the secret, shown once.
#[derive(Debug)]
pub struct CreatedKey {
    /// The stored record.
    pub record: ApiKeyRecord,
    /// The full key. Shown to the caller once, never stored or logged.
    pub key: String,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: i64,
    workspace_id: i64,
    name: Option<String>,
    prefix: String,
    scopes: Vec<String>,
    user_id: Option<i64>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for ApiKeyRecord {
    fn from(row: KeyRow) -> Self {
        Self {
            id: row.id,
            workspace_id: row.workspace_id,
            name: row.name,
            prefix: row.prefix,
            scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            user_id: row.user_id,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        }
    }
}

const KEY_COLUMNS: &str = "id, workspace_id, name, prefix, scopes, user_id, created_at, \
                           last_used_at, expires_at, revoked_at";

/// Creates a workspace; returns its id.
pub async fn create_workspace(db: impl PgExecutor<'_>, name: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("INSERT INTO workspace (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(db)
        .await
}

/// Whether a workspace exists.
pub async fn workspace_exists(db: impl PgExecutor<'_>, id: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workspace WHERE id = $1)")
        .bind(id)
        .fetch_one(db)
        .await
}

/// Sets (or clears) a workspace's own rate limit.
pub async fn set_workspace_rate_limit(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    per_minute: Option<u32>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workspace SET rate_limit_per_minute = $2 WHERE id = $1")
        .bind(workspace_id)
        .bind(per_minute.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
        .execute(db)
        .await?;
    Ok(())
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key was to act for a user that is not an agent of its workspace.
    #[error("user_id is not a user of this workspace")]
    UnknownUser,
    /// The database could not be asked.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creates a key in `workspace_id` with `scopes`, acting for `user_id` when given, which must
/// be an agent of the same workspace (a key never speaks for another tenant's user).
pub async fn create_key(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    scopes: &[Scope],
    name: Option<&str>,
    user_id: Option<i64>,
) -> Result<CreatedKey, KeyError> {
    let key = generate_key();
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    // One statement, so a user deleted meanwhile cannot slip between a check and the insert.
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "INSERT INTO api_key (workspace_id, name, prefix, key_hash, scopes, user_id) \
         SELECT $1, $2, $3, $4, $5, $6 \
         WHERE $6::bigint IS NULL \
            OR EXISTS (SELECT 1 FROM agent WHERE workspace_id = $1 AND id = $6) \
         RETURNING {KEY_COLUMNS}"
    ))
    .bind(workspace_id)
    .bind(name)
    .bind(&key[..8])
    .bind(hash_key(&key).as_slice())
    .bind(&scopes)
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    let row = row.ok_or(KeyError::UnknownUser)?;
    Ok(CreatedKey {
        record: row.into(),
        key,
    })
}

/// The workspace's keys, newest first.
pub async fn list_keys(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    let rows: Vec<KeyRow> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_key WHERE workspace_id = $1 ORDER BY id DESC"
    ))
    .bind(workspace_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// One key of the workspace.
pub async fn get_key(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    key_id: i64,
) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    let row: Option<KeyRow> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_key WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace_id)
    .bind(key_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Revokes a key now, or after `grace` (rotation). Returns whether it existed.
pub async fn revoke_key(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    key_id: i64,
    grace: Option<Duration>,
) -> Result<bool, sqlx::Error> {
    let grace_seconds = grace.map_or(0.0, |g| g.as_secs_f64());
    let result = sqlx::query(
        // A second rotation may shorten a scheduled expiry, never extend it (review L3).
        "UPDATE api_key SET expires_at = least(expires_at, now() + make_interval(secs => $3)), \
                revoked_at = CASE WHEN $3 = 0 THEN now() ELSE revoked_at END \
         WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(workspace_id)
    .bind(key_id)
    .bind(grace_seconds)
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Resolves bearer keys to principals, with a short in-process cache so the hot path (ingest)
/// does not pay a query per request. A revoked key stops working within [`CACHE_TTL`].
pub struct Authenticator {
    pool: PgPool,
    cache: Mutex<KeyCache>,
}

/// Recent lookups. Known keys and unknown ones are kept apart, so a flood of random keys can
/// fill only its own map and never evicts the keys real clients use.
#[derive(Default)]
struct KeyCache {
    known: HashMap<[u8; 32], (Principal, Instant)>,
    unknown: HashMap<[u8; 32], Instant>,
    /// Database lookups that found no key in the current one-second window.
    misses: (Option<Instant>, u32),
}

/// Why a key could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The database could not be asked.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// So many unknown keys were tried this second that keys not seen lately are not looked up
    /// until the next one (keys in use are cached and unaffected).
    #[error("too many requests with unknown API keys; try again in a second")]
    TooManyUnknownKeys,
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    key_id: i64,
    workspace_id: i64,
    scopes: Vec<String>,
    user_id: Option<i64>,
    rate_limit_per_minute: Option<i32>,
    stale_use: bool,
}

/// How long a key lookup is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Cached known keys (and, apart, unknown ones) per instance at most.
const CACHE_MAX: usize = 10_000;
/// Database lookups per second per instance that may find no key; beyond this, keys not in
/// the cache wait for the next second, so random keys cost a bounded number of queries.
pub const MISSES_PER_SECOND: u32 = 100;

/// Whether `key` has the shape of a key Deskhook issues: `dhk_` and 40 base62 characters.
fn is_key_shaped(key: &str) -> bool {
    key.len() == 44
        && key.starts_with("dhk_")
        && key.as_bytes()[4..].iter().all(u8::is_ascii_alphanumeric)
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    /// The principal behind `key`, or `None` for an unknown, revoked or expired key.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Principal>, AuthError> {
        if !is_key_shaped(key) {
            return Ok(None);
        }
        let hash = hash_key(key);
        {
            let mut cache = self.cache.lock().expect("auth cache");
            if let Some((principal, at)) = cache.known.get(&hash)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(Some(principal.clone()));
            }
            if cache
                .unknown
                .get(&hash)
                .is_some_and(|at| at.elapsed() < CACHE_TTL)
            {
                return Ok(None);
            }
            let now = Instant::now();
            match cache.misses {
                (Some(since), used)
                    if now.duration_since(since) < Duration::from_secs(1)
                        && used >= MISSES_PER_SECOND =>
                {
                    return Err(AuthError::TooManyUnknownKeys);
                }
                (Some(since), _) if now.duration_since(since) < Duration::from_secs(1) => {}
                _ => cache.misses = (Some(now), 0),
            }
        }
        // A plain read: concurrent requests of one key must not queue on its row. The
        // last-use time is written apart, at most about once a minute per key.
        let row: Option<PrincipalRow> = sqlx::query_as(
            "SELECT k.id AS key_id, k.workspace_id, k.scopes, k.user_id, w.rate_limit_per_minute, \
                    (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute') AS stale_use \
             FROM api_key k JOIN workspace w ON w.id = k.workspace_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL \
               AND (k.expires_at IS NULL OR k.expires_at > now())",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row.as_ref().filter(|row| row.stale_use) {
            let (pool, key_id) = (self.pool.clone(), row.key_id);
            tokio::spawn(async move {
                let _ = sqlx::query(
                    "UPDATE api_key SET last_used_at = now() WHERE id = $1 \
                     AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                )
                .bind(key_id)
                .execute(&pool)
                .await;
            });
        }
        let principal = row.map(|row| Principal {
            workspace_id: row.workspace_id,
            key_id: row.key_id,
            scopes: row.scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            user_id: row.user_id,
            workspace_rate_limit: row
                .rate_limit_per_minute
                .and_then(|l| u32::try_from(l).ok()),
        });
        let mut cache = self.cache.lock().expect("auth cache");
        let now = Instant::now();
        match &principal {
            Some(principal) => {
                if cache.known.len() >= CACHE_MAX {
                    cache.known.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                }
                if cache.known.len() >= CACHE_MAX
                    && let Some(victim) = cache.known.keys().next().copied()
                {
                    cache.known.remove(&victim);
                }
                cache.known.insert(hash, (principal.clone(), now));
            }
            None => {
                cache.misses.1 += 1;
                if cache.unknown.len() >= CACHE_MAX {
                    cache.unknown.clear();
                }
                cache.unknown.insert(hash, now);
            }
        }
        Ok(principal)
    }

    /// Forgets cached lookups (after a revocation in this instance).
    pub fn forget_all(&self) {
        let mut cache = self.cache.lock().expect("auth cache");
        cache.known.clear();
        cache.unknown.clear();
    }
}
