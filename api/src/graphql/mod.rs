//! The GraphQL schema the dashboard and auditors use (DESIGN §6), as a library: the HTTP
//! and WebSocket transports in `http` are a thin shell around [`build`].
//!
//! Every resolver reads the read models (never the log, except `events`), and every one
//! checks the viewer: anonymous requests get `UNAUTHENTICATED`, auditors may read but not
//! change, executives see only their stakeholders' chats.

mod chat;
mod commands;
mod consent;
mod credential;
mod customer;
mod executive;
mod guard;
mod login;
mod message;
mod mutation;
mod pages;
mod query;
mod subscription;

pub use chat::*;
use commands::*;
pub use consent::*;
pub use credential::*;
pub use customer::*;
pub use executive::*;
pub use login::*;
pub use message::*;
pub use mutation::*;
pub use pages::*;
pub use query::*;
pub use subscription::*;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{
    Context, Enum, Error, ErrorExtensions, InputObject, Json, Object, Schema, SimpleObject,
    Subscription, ID,
};
use chatledger_application::conversations::CommandError;
use chatledger_core::channel::stakeholder_name;
use chatledger_core::conversation::{
    AssignmentRule, ChatStatus as CoreChatStatus, ConversationCommand, ConversationEvent,
    ExecutiveRef, Template, AWAITING_CUSTOMER_TAG,
};
use chatledger_core::executive::{executive_stream, ExecutiveStatusChanged, Role};
use chatledger_core::history::{event_chat, ChatAsOf, ChatView, MessageView, Narrator};
use chatledger_core::sla::{SlaPolicy, SLA_POLICY_EVENT, SLA_POLICY_STREAM};
use chatledger_core::{ExpectedVersion, Metadata, RecordedEvent};
use chatledger_projections::read_models;
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::Stream;
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

use crate::auth::{AuthError, TokenFacts, Viewer};
use crate::state::AppState;

pub type ChatledgerSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// The largest page any list returns.
pub const MAX_PAGE: i32 = 200;
/// How deep a query may nest.
pub const MAX_DEPTH: usize = 10;
/// How costly a query may be (each field costs 1; lists multiply by their page size).
pub const MAX_COMPLEXITY: usize = 20_000;

/// The schema; `state` is absent only when printing the SDL.
pub fn build(state: Option<AppState>) -> ChatledgerSchema {
    let mut builder = Schema::build(Query, Mutation, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(guard::InputGuard);
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The address a request came from, as the transport found it (for login failure counts).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The viewer of a request, as the transport found it (a failure is reported by the first
/// resolver that needs a viewer, with the reason).
pub type ViewerResult = Result<Viewer, AuthError>;

fn coded(message: impl Into<String>, code: &'static str) -> Error {
    Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

fn viewer<'a>(ctx: &Context<'a>) -> Result<&'a Viewer, Error> {
    match ctx.data_opt::<ViewerResult>() {
        Some(Ok(viewer)) => Ok(viewer),
        Some(Err(e)) => Err(coded(e.to_string(), "UNAUTHENTICATED")),
        None => Err(coded(AuthError::Missing.to_string(), "UNAUTHENTICATED")),
    }
}

fn changer<'a>(ctx: &Context<'a>) -> Result<&'a Viewer, Error> {
    let viewer = viewer(ctx)?;
    if !viewer.role.may_change() {
        return Err(coded(
            format!(
                "the {} role may read but not change anything",
                viewer.role.as_str()
            ),
            "FORBIDDEN",
        ));
    }
    Ok(viewer)
}

fn internal(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "a GraphQL resolver failed");
    coded(
        "the read models are unavailable right now; try again",
        "UNAVAILABLE",
    )
}

fn page_size(first: Option<i32>, default: i32) -> Result<i64, Error> {
    match first.unwrap_or(default) {
        n if !(1..=MAX_PAGE).contains(&n) => Err(coded(
            format!("first must be between 1 and {MAX_PAGE}, not {n}"),
            "BAD_USER_INPUT",
        )),
        n => Ok(i64::from(n)),
    }
}

fn cursor(after: Option<&str>) -> Result<Option<i64>, Error> {
    after
        .map(|a| {
            a.parse::<i64>().map_err(|_| {
                coded(
                    format!("{a:?} is not a cursor this list gave out"),
                    "BAD_USER_INPUT",
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    /// The contract clients are written against: schema/chatledger.graphql must be exactly
    /// what the server serves.
    #[test]
    fn schema_snapshot_is_current() {
        let served = super::build(None).sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/chatledger.graphql");
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == served,
            "schema/chatledger.graphql differs from the schema the server serves.\n\
             If the change is intended, update it with:\n    cargo run -q -- schema > schema/chatledger.graphql"
        );
    }
}
