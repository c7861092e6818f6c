//! Deskhook: webhook delivery for helpdesks.
//!
//! # Layout
//! - [`auth`]: workspaces, API keys and scopes (tenancy).
//! - [`bench`]: `deskhook bench`, the benchmark program (performance.md).
//! - [`cli`]: the subcommands (`serve`, `migrate`, `workspace`, `key`, ...) and their settings.
//! - [`config`]: the validated configuration of `serve` and the parsers of its values.
//! - [`database`]: the connection pool, migrations, and the private PostgreSQL default.
//! - [`server`]: `run(config, listener, shutdown)`, which starts the roles of one instance.
//! - [`demo`]: `deskhook demo`, the first-run experience (everything in one process, then exit).
//! - [`delivery`]: the worker pool: claim, sign, POST (SSRF-guarded), settle.
//! - [`events`]: the event catalogue and the body every delivery carries.
//! - [`http`]: the HTTP surface: routing, the error envelope, handlers. Thin by rule.
//! - [`ingest`]: validating and queueing events posted by an external helpdesk core.
//! - [`ids`]: the opaque prefixed public ids (`tkt_…`, `evt_…`), re-exported from the ticket core.
//! - [`queue`]: the durable delivery queue in PostgreSQL (enqueue/fan-out, claim, settle).
//! - [`signing`]: Standard Webhooks signatures (and the simple and legacy schemes).
//! - [`sla`]: the SLA timer: emits `sla.at_risk` / `sla.breached` when deadlines fall due.
//! - [`metrics`]: every Prometheus metric, defined in one place.
//! - [`telemetry`]: structured logs.
//! - [`webhooks`]: endpoints, their filters and their encrypted signing secrets.
//!
//! The helpdesk domain (tickets, customers, agents, conversations, tags, SLA policies) is the
//! `deskhook-tickets` crate; it knows nothing of HTTP.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod database;
pub mod delivery;
pub mod demo;
pub mod events;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod queue;
pub mod secret_box;
pub mod server;
pub mod signing;
pub mod sla;
pub mod ssrf;
pub mod telemetry;
pub mod webhooks;

pub use deskhook_tickets::ids;
pub use server::run;
