//! chatledger-projections: everything downstream of the log: the read models and the
//! reactors (which act through the command side, `chatledger-application`).
//!
//! # Layout
//!
//! - [`audit`]: the sealer (running digests over the global order) and the walk
//!   `chatledger verify` makes.
//! - [`assignment`]: the reactor that gives chats to online executives, round robin.
//! - [`credentials`]: businesses and their credentials as this process knows them (routing,
//!   sending, refreshing); the dashboard's read model of them is in [`read_models`].
//! - [`breaker`]: circuit breakers per provider endpoint and Genesys tenant.
//! - [`bridge`]: the reactor that hands customers' messages of routed channels to Genesys.
//! - [`consent`]: the reactor that turns STOP, START and HELP into consent changes and
//!   their one answer.
//! - [`dispatch`]: the reactor that sends queued messages and records the outcome.
//! - [`media`]: the reactor that fetches inbound attachments into the object store and
//!   records the outcome.
//! - [`ownership`]: which partitions of the streams this process acts on: all of them on
//!   SQLite, a fair share held by PostgreSQL advisory locks when several processes share one
//!   database.
//! - [`clock`]: time for reactors: the system clock, or one the tests drive.
//! - [`sla`]: the SLA timer reactor, exact to the second.
//! - [`reactor`]: what every reactor does at start (fold the log after its snapshot into its
//!   view), how far each has got, the policy for an event a reactor cannot fold, and the
//!   fold-then-follow loop of views every process keeps (credentials, sessions).
//! - [`snapshots`]: reactors' views kept between runs, so that a reactor starts from where it
//!   was instead of folding the whole log.
//! - [`runner`]: the checkpointed projector runner: live (catch up, then follow the log as it
//!   commits) and rebuild (a fresh generation of tables, then an atomic switch).
//! - [`read_models`]: the projectors, a file each (chats, messages, media, customers,
//!   executives, rides, SLA, consent, Genesys, credentials), each with the queries and typed
//!   rows that read its tables.
//! - [`projector`]: what a read model is to the runner, and how applying an event fails.
//! - [`quarantine`]: events a read model could not apply, set aside so that it goes on.
//! - [`read_side`]: this process's running projectors and how far each has got.
//! - [`tail`]: one reader of the log per process, shared by every projector and reactor.
//! - [`read_db`]: the read-model database (the log's own, SQLite or PostgreSQL) behind one
//!   SQL dialect; [`sql`]: the values its statements take and how times are written.
//! - [`registry`]: each read model's live generation and checkpoint.
//! - `rows`: many rows read or written in one statement, for read models that fold a batch.

pub mod assignment;
pub mod audit;
pub mod breaker;
pub mod bridge;
pub mod clock;
pub mod consent;
pub mod credentials;
pub mod dispatch;
pub mod media;
pub mod ownership;
mod pg_pipeline;
pub mod projector;
pub mod quarantine;
pub mod reactor;
pub mod read_db;
pub mod read_models;
pub mod read_side;
pub mod registry;
mod rows;
pub mod runner;
pub mod sla;
pub mod snapshots;
pub mod sql;
mod sqlite_native;
pub mod tail;
