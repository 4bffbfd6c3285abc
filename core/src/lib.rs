//! chatledger-core: the domain of chatledger, pure and synchronous.
//!
//! # Layout
//!
//! - [`event`]: what the log stores. [`NewEvent`] is what a caller asks to append;
//!   [`RecordedEvent`] is the stored envelope with its stream version, global position,
//!   `recorded_at` and `hash`.
//! - [`canonical`]: the one canonical byte form of an event, and the hash chain built on it.
//!   It is split out because another tool must be able to re-verify the log from its
//!   definition alone.
//! - [`audit`]: seals over the global order and the audit that checks the log against them.
//! - [`booking`]: bookings as the transaction system posts them.
//! - [`channel`]: our numbers (channels), their configuration history and notices.
//! - [`genesys`]: the Genesys Cloud bridge: integrations as recorded configuration, how a
//!   customer is addressed to Genesys, what an agent is shown, the Open Messaging port.
//! - [`hash`]: the digest of the hash chain.
//! - [`consent`]: what a customer agreed to receive, as events on the customer, and the
//!   keywords (STOP, START, HELP) that change it.
//! - [`conversation`]: one customer on one of our numbers, a file each for its values, its
//!   events, its fold (`evolve`), its commands and its decider (`decide`).
//! - [`credential`]: businesses' integration choice and official credentials, folded, and
//!   what onboarding decides (refusals, and what each outcome records).
//! - [`executive`]: the people who use the dashboard, their roles, and every change made to
//!   them, folded.
//! - [`history`]: one chat as it stood at any instant (`chatAsOf`), its history in words, and
//!   the view rules the read models share (preview, outbound text, failure text).
//! - [`media`]: attachments: where their bytes are kept, WhatsApp's limits, what a file's
//!   bytes say it is, and the port that fetches inbound attachments.
//! - [`personal`]: which parts of an event are personal data, sealed per customer.
//! - [`sender`]: the outbound port, sending through a channel's provider.
//! - [`sla`]: the SLA policy, its thresholds and levels.
//! - [`standing`]: what Meta's account reports mean for sending (restricted, disabled).
//! - [`store`]: the [`EventStore`] port every backend implements, with [`ExpectedVersion`]
//!   for optimistic concurrency and [`AppendResult`] telling a caller what was stored; and
//!   the [`KeyStore`] port beside it, for the keys that seal personal data.
//! - [`time`]: arithmetic on instants that cannot panic, and the window of times accepted
//!   from outside.
//! - [`validate`]: what the edge refuses before anything is recorded (values no store,
//!   index or fold can take).
//!
//! Nothing here performs IO, reads the clock or draws random numbers: callers pass `now`
//! and new ids in. That is what makes a replay of the log rebuild exactly the same state.

pub mod audit;
pub mod booking;
pub mod canonical;
pub mod channel;
pub mod consent;
pub mod conversation;
pub mod credential;
pub mod event;
pub mod executive;
pub mod genesys;
pub mod hash;
pub mod history;
pub mod media;
pub mod personal;
pub mod sender;
pub mod sla;
pub mod standing;
pub mod store;
pub mod time;
pub mod validate;

pub use canonical::{canonical_bytes, chain_hash, EventHash};
pub use event::{Metadata, NewEvent, RecordedEvent};
pub use store::{
    AppendResult, EventStore, ExpectedVersion, KeyStore, Position, StoreError, StoredEvent,
    SubjectKey,
};
