//! The one integration-test binary: the real service on loopback, a real PostgreSQL, real
//! HTTP. Modules are grouped by what a user does.

mod support;

mod citus;
mod cli;
mod conventions;
mod delivery;
mod demo;
mod faults;
mod helpdesk;
mod observability;
mod ops;
pub mod schema;
mod sla;
