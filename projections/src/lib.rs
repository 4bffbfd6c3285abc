//! chatledger-projections: everything downstream of the log, and the command side that
//! feeds it.
//!
//! # Layout
//!
//! - [`conversations`]: runs conversation commands against the log: keeps each stream's
//!   folded state cached, serialises deciders per stream within the process, appends with
//!   the expected version and re-decides on conflicts. The HTTP edge and reactors share it.
//!
//! Projectors fold events into SQL read models, each with its own checkpoint; reactors turn
//! events into new commands or outbound calls. Both follow the log through
//! [`chatledger_core::EventStore::follow`].

pub mod conversations;
