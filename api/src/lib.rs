//! chatledger-api: the HTTP edge and the `chatledger` binary.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`serve`, `migrate`) and the start-up sequence; the only place
//!   that reads the environment and turns failures into one line and an exit code.
//! - [`server`]: `run(listener, state, shutdown)`, the whole server, so tests start the real
//!   thing on port 0.
//! - [`state`]: [`AppState`], what every handler and background task reaches, and starting
//!   the tasks beside the server; [`settings`]: everything read at start.
//! - [`http`]: the axum router, one module per area, and [`http::ApiError`], the one place
//!   errors become HTTP statuses and JSON bodies.
//! - [`config`]: `config/*.yaml` and the secrets the environment holds for it, and
//!   `chatledger config check`.
//! - [`graphql`]: the GraphQL schema as a library, a file per type and root, mapping the
//!   read models' rows (their queries live beside their tables); the transports live in
//!   `http`.
//! - [`auth`]: logins, JWTs, the admin token, and the viewer a request acts as.
//! - [`sessions`]: which login tokens still stand, kept from the log by every process.
//! - [`forget`]: forgetting a customer: keys destroyed, their conversations' files deleted.
//! - [`executives`]: managing executives (the CLI and the GraphQL mutations both go through
//!   it).
//! - [`onboarding`]: official onboarding (Embedded Signup's server side: the Graph API's
//!   calls, recording what `core::credential` decides), token refresh, and routing each
//!   business's messages by its integration choice.
//! - [`limits`]: what one client may make the server do (sizes, timeouts, connections).
//! - [`login`]: password checks, bounded and off the async workers, slowed for failures.
//! - [`metrics`]: `GET /metrics` in Prometheus's text format, and the request counters.
//! - [`rate`]: requests per token (GraphQL, media), 429 with `Retry-After` beyond.
//! - [`live`]: one follower of the log fanned out to every subscription.
//! - [`readiness`]: whether the store is usable yet, and if not, why.

pub mod auth;
pub mod cli;
pub mod config;
pub mod executives;
pub mod forget;
pub mod graphql;
pub mod http;
pub mod limits;
pub mod live;
pub mod login;
pub mod metrics;
pub mod onboarding;
pub mod rate;
pub mod readiness;
pub mod server;
pub mod sessions;
pub mod settings;
pub mod state;

pub use server::{run, AppState, Settings};
