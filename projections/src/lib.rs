//! chatledger-projections: everything downstream of the log.
//!
//! # Layout
//!
//! Projectors fold events into SQL read models, each with its own checkpoint; reactors turn
//! events into new commands or outbound calls. Both follow the log through
//! [`chatledger_core::EventStore::follow`].
