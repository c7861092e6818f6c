//! The helpdesk REST resources, as an API client uses them.

mod bad_input;
mod messages;
mod outbox;
mod pagination;
mod resources;
mod seeds;
mod throughput;
mod tickets;
