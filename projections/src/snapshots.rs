//! Reactors' views kept between runs, so that a reactor starts from where it was instead of
//! folding the whole log (ADR 14).
//!
//! A snapshot is a reactor's view as it stood once it had folded the log up to a position,
//! kept as JSON in the read-model database (`reactor_snapshots`). At start a reactor takes
//! the last one (if its `format` is the one this release writes), then folds only what came
//! after. It writes a new one every [`EVERY_EVENTS`] events or [`EVERY`] of time, whichever
//! comes first, if the log moved. Any process may write; the furthest position wins. A
//! snapshot that cannot be read or written is logged and passed over: the reactor then folds
//! the log as before, so a snapshot only ever saves time.
//!
//! What a view keeps must be what the log says, nothing this process learnt on the side, and
//! no customer's personal data that `forget` must be able to erase (the dispatcher keeps
//! which messages are pending, not their text).

use std::time::{Duration, Instant};

use chatledger_core::{EventStore, Position};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::read_db::ReadDb;
use crate::sql::time_text;

/// Events folded between two snapshots, at most.
pub const EVERY_EVENTS: u64 = 20_000;
/// Time between two snapshots, at most, while the log moves.
pub const EVERY: Duration = Duration::from_secs(60);

/// Where reactors keep their snapshots.
#[derive(Clone, Debug)]
pub struct Snapshots {
    db: ReadDb,
}

impl Snapshots {
    pub fn new(db: ReadDb) -> Self {
        Snapshots { db }
    }

    /// The last snapshot of `reactor` in `format`: the position it covers and the view. One
    /// beyond the head of `log` (a log restored from an older backup beside newer snapshots)
    /// is passed over.
    pub async fn load<V: DeserializeOwned>(
        &self,
        reactor: &str,
        format: u32,
        log: &dyn EventStore,
    ) -> Option<(Position, V)> {
        let row = match self
            .db
            .fetch_optional(
                "SELECT position, view FROM reactor_snapshots WHERE reactor = $1 AND format = $2",
                &[reactor.into(), i64::from(format).into()],
            )
            .await
        {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!(reactor, error = %e, "cannot read the reactor's snapshot; folding the whole log");
                return None;
            }
        };
        let position = row.i64(0)? as Position;
        match log.head_position().await {
            Ok(head) if head >= position => {}
            Ok(head) => {
                tracing::warn!(
                    reactor,
                    position,
                    head,
                    "the reactor's snapshot is ahead of the log; folding the whole log"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(reactor, error = %e, "cannot read the log's head; folding the whole log");
                return None;
            }
        }
        match serde_json::from_str(&row.text(1)?) {
            Ok(view) => Some((position, view)),
            Err(e) => {
                tracing::warn!(reactor, position, error = %e, "the reactor's snapshot does not read; folding the whole log");
                None
            }
        }
    }

    /// Keeps `view`, as it stands with the log folded up to `position`.
    pub async fn save<V: Serialize>(
        &self,
        reactor: &str,
        format: u32,
        position: Position,
        view: &V,
    ) {
        let text = match serde_json::to_string(view) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(reactor, error = %e, "cannot write the reactor's snapshot");
                return;
            }
        };
        let written = self
            .db
            .execute(
                "INSERT INTO reactor_snapshots (reactor, format, position, view, taken_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (reactor) DO UPDATE SET format = excluded.format,
                    position = excluded.position, view = excluded.view, taken_at = excluded.taken_at
                 WHERE reactor_snapshots.format <> excluded.format
                    OR reactor_snapshots.position <= excluded.position",
                &[
                    reactor.into(),
                    i64::from(format).into(),
                    position.into(),
                    text.into(),
                    time_text(Utc::now()).into(),
                ],
            )
            .await;
        match written {
            Ok(_) => tracing::debug!(reactor, position, "kept the reactor's snapshot"),
            Err(e) => tracing::warn!(reactor, error = %e, "cannot write the reactor's snapshot"),
        }
    }
}

/// When a reactor's next snapshot is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    last: Position,
    at: Instant,
}

impl Schedule {
    /// Counting from a view that covers the log up to `position`.
    pub fn from(position: Position) -> Self {
        Schedule {
            last: position,
            at: Instant::now(),
        }
    }

    /// Whether a view at `position` should be kept now.
    pub fn due(&self, position: Position) -> bool {
        position > self.last && (position - self.last >= EVERY_EVENTS || self.at.elapsed() >= EVERY)
    }

    /// A snapshot at `position` was kept.
    pub fn kept(&mut self, position: Position) {
        *self = Schedule::from(position);
    }
}

/// One reactor's snapshots: where they are kept, under which name and format, and when the
/// next is due. What every remembering reactor does with them, written once.
#[derive(Debug)]
pub struct Remembered {
    snapshots: Snapshots,
    reactor: &'static str,
    format: u32,
    schedule: Schedule,
}

impl Remembered {
    pub fn new(snapshots: Snapshots, reactor: &'static str, format: u32) -> Self {
        Remembered {
            snapshots,
            reactor,
            format,
            schedule: Schedule::from(0),
        }
    }

    /// The last snapshot (the position it covers and the view); the next is counted from it.
    pub async fn restore<V: DeserializeOwned>(
        &mut self,
        log: &dyn EventStore,
    ) -> Option<(Position, V)> {
        let (position, view) = self.snapshots.load(self.reactor, self.format, log).await?;
        self.schedule = Schedule::from(position);
        Some((position, view))
    }

    /// Keeps the view `take` gives, as it stands at `position`, if a snapshot is due (or
    /// `now`, as the reactor stops).
    pub async fn keep<V: Serialize>(
        &mut self,
        position: Position,
        now: bool,
        take: impl FnOnce() -> V,
    ) {
        if self.schedule.due(position) || now && position > 0 {
            self.snapshots
                .save(self.reactor, self.format, position, &take())
                .await;
            self.schedule.kept(position);
        }
    }
}
