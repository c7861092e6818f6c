//! Deskhook: webhook delivery for helpdesks.
//!
//! # Layout
//! - [`auth`]: workspaces, API keys and scopes (tenancy).
//! - [`cli`]: the subcommands (`serve`, `migrate`, `workspace`, `key`, ...) and their settings.
//! - [`config`]: the validated configuration of `serve` and the parsers of its values.
//! - [`database`]: the connection pool, migrations, and the private PostgreSQL default.
//! - [`server`]: `run(config, listener, shutdown)`, which starts the roles of one instance.
//! - [`http`]: the HTTP surface: routing, the error envelope, handlers. Thin by rule.
//! - [`ids`]: the opaque prefixed public ids (`tkt_…`, `evt_…`), re-exported from the ticket core.
//! - [`queue`]: the durable delivery queue in PostgreSQL (enqueue/fan-out, claim, settle).
//! - [`metrics`]: every Prometheus metric, defined in one place.
//! - [`telemetry`]: structured logs.
//!
//! The helpdesk domain (tickets, customers, agents, conversations, tags, SLA policies) is the
//! `deskhook-tickets` crate; it knows nothing of HTTP.

pub mod auth;
pub mod cli;
pub mod config;
pub mod database;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod server;
pub mod telemetry;

pub use deskhook_tickets::ids;
pub use server::run;
