//! Test support for chatledger, shared by every crate's tests.
//!
//! # Layout
//!
//! - [`db`]: a database of its own for each test: a SQLite file in a temporary directory, or
//!   a fresh schema on the local PostgreSQL server.
//! - [`contract`]: the event-store contract suite, generic over [`EventStore`]; each backend's
//!   test file runs every case of it.
//! - [`messages`]: domain values tests build often (a text message, a conversation).
//! - [`load`]: the concurrent append load used by the follower tests, in-process and from
//!   the `append_load` helper binary (a second OS process).
//!
//! [`EventStore`]: chatledger_core::EventStore

pub mod contract;
pub mod db;
pub mod load;
pub mod messages;
