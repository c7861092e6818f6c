//! The send settings of endpoints (URL, secrets, headers, caps), cached per instance for its
//! dispatcher: loaded in batches by [`super::targets`] and kept for [`TARGET_TTL`]. Every
//! change this instance makes to an endpoint forgets them at once (the endpoint functions of
//! this module take the cache for that); another instance's change shows within the TTL.
//!
//! It must never write the database, and an endpoint whose settings cannot be read never
//! fails the others.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use super::{Target, targets};
use crate::{
    ids::{self, Kind},
    secret_box::SecretBox,
};

/// How long an endpoint's settings are used before they are read again.
pub const TARGET_TTL: Duration = Duration::from_secs(2);

/// An endpoint's settings as the cache answers them.
#[derive(Debug, Clone)]
pub enum Cached {
    /// Ready to send.
    Found(Arc<Target>),
    /// Deleted (or unknown): its deliveries end dead.
    Gone,
    /// Unreadable now (a database error, a secret no key opens): try again later.
    Unavailable(String),
}

/// An endpoint's settings (`None`: deleted) and when they were loaded.
type Entry = (Option<Arc<Target>>, Instant);

/// Send settings cached per endpoint.
#[derive(Debug, Default)]
pub struct TargetCache {
    entries: Mutex<HashMap<i64, Entry>>,
}

impl TargetCache {
    /// Forgets every cached endpoint.
    pub fn invalidate(&self) {
        self.entries.lock().expect("target cache").clear();
    }

    /// The settings of `keys` (`(workspace_id, endpoint_id)` pairs), from the cache where
    /// fresh, the rest in one read.
    pub async fn load(
        &self,
        pool: &PgPool,
        secret_box: &SecretBox,
        keys: &[(i64, i64)],
    ) -> HashMap<i64, Cached> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.entries.lock().expect("target cache");
            for &(workspace_id, endpoint_id) in keys {
                match cache.get(&endpoint_id) {
                    Some((target, at)) if at.elapsed() < TARGET_TTL => {
                        found.insert(
                            endpoint_id,
                            target.clone().map_or(Cached::Gone, Cached::Found),
                        );
                    }
                    _ => missing.push((workspace_id, endpoint_id)),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return found;
        }
        match targets(pool, secret_box, &missing).await {
            Ok(mut loaded) => {
                let mut cache = self.entries.lock().expect("target cache");
                for (_, key) in missing {
                    match loaded.remove(&key) {
                        // Not cached: the next load tries again (a key may be added).
                        Some(Err(error)) => {
                            tracing::error!(error = %error, webhook.id = %ids::encode(Kind::Webhook, key), "cannot open the endpoint's signing secret; its deliveries count it as a failed attempt");
                            found.insert(key, Cached::Unavailable(error.to_string()));
                        }
                        target => {
                            let target = target.and_then(Result::ok).map(Arc::new);
                            cache.insert(key, (target.clone(), Instant::now()));
                            found.insert(key, target.map_or(Cached::Gone, Cached::Found));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot load endpoint settings; deliveries wait");
                for (_, key) in missing {
                    found.insert(key, Cached::Unavailable(error.to_string()));
                }
            }
        }
        found
    }
}
