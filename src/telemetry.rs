//! Structured logs through `tracing-subscriber`: human-readable by default, one JSON object per
//! line with `DESKHOOK_LOG_FORMAT=json`, filtered by `RUST_LOG`. They go to standard error;
//! standard output is kept for command results (the JSON line of `deskhook workspace create`).
//!
//! Conventions: a readable message plus dotted fields (`delivery.id`, `duration_ms`); each
//! failure logged once, where it is handled; never a secret, an API key or a full payload.

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::config::LogFormat;

/// Installs the global subscriber. Later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
