//! chatledger-application: the command side, between the edges that receive requests (HTTP,
//! reactors) and the log.
//!
//! # Layout
//!
//! - [`conversations`]: runs conversation commands against the log: keeps each stream's
//!   folded state cached, serialises deciders per stream within the process, appends with
//!   the expected version and re-decides on conflicts. The HTTP edge and the reactors share
//!   it.
//! - [`ingest`]: what a webhook carried (messages, receipts, notices), screened and recorded
//!   as conversation commands and channel events.

pub mod conversations;
pub mod ingest;
