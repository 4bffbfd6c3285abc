//! Seals over the global order, and the audit that checks the log against them.
//!
//! Every stream's hash chain ([`crate::canonical`]) finds an event edited, or one missing or
//! out of place inside its stream. It cannot see a stream removed whole, a stream's last
//! events removed, or events swapped across streams: each remaining chain still holds. A
//! **seal** closes that gap: the sealer follows the global order and records, every N events
//! or T seconds, the [`RunningDigest`] over every event hash up to a position. [`LogAudit`]
//! recomputes the digest while it walks the log and compares it at each sealed position.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::canonical::{ChainBreak, ChainVerifier, EventHash, RunningDigest};
use crate::event::{Metadata, NewEvent, RecordedEvent};

/// The stream seals are recorded on.
pub const SEAL_STREAM: &str = "audit-seal";
/// The type of a seal event.
pub const SEAL_EVENT: &str = "LogSealed";

/// A seal: the log, up to `position`, had `events` events whose hashes digest to `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSealed {
    /// The last position the digest covers.
    pub position: u64,
    /// How many events the log held up to `position`.
    pub events: u64,
    /// The running digest over every event hash up to `position`, in global order.
    pub digest: EventHash,
    pub sealed_at: DateTime<Utc>,
}

impl LogSealed {
    /// The seal of everything `running` covers.
    pub fn of(running: &RunningDigest, sealed_at: DateTime<Utc>) -> Self {
        LogSealed {
            position: running.position,
            events: running.events,
            digest: running.head(),
            sealed_at,
        }
    }

    /// The event to append. Its id follows from the position it seals, so two sealers that
    /// seal the same position record it once.
    pub fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{SEAL_STREAM}/{}", self.position).as_bytes(),
        );
        NewEvent::new(
            id,
            SEAL_EVENT,
            serde_json::to_value(self).unwrap_or_default(),
            metadata,
        )
    }

    /// The seal a recorded event holds, if it is one.
    pub fn from_recorded(event: &RecordedEvent) -> Option<Self> {
        (event.stream == SEAL_STREAM && event.event_type == SEAL_EVENT)
            .then(|| serde_json::from_value(event.data.clone()).ok())
            .flatten()
    }
}

/// What a clean audit found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// The running digest over the whole log.
    pub head: RunningDigest,
    /// How many seals matched.
    pub seals_checked: u64,
    /// The last position a seal vouches for (0 without seals).
    pub sealed_up_to: u64,
}

/// Walks the log in global order: every stream's chain and versions ([`ChainVerifier`]), and
/// the running digest at every sealed position.
#[derive(Debug)]
pub struct LogAudit {
    chain: ChainVerifier,
    /// Seals not yet reached, by the position they cover, with the position of the seal
    /// event itself.
    seals: VecDeque<(LogSealed, u64)>,
    seals_checked: u64,
    sealed_up_to: u64,
    /// Positions an auditor noted, with the digest they noted, oldest first.
    expected: VecDeque<(u64, EventHash)>,
}

impl LogAudit {
    /// An audit against `seals` (each with the position of its own event), as read from
    /// [`SEAL_STREAM`], and against digests an auditor noted earlier (`GET /api/audit/head`).
    pub fn new(mut seals: Vec<(LogSealed, u64)>, mut expected: Vec<(u64, EventHash)>) -> Self {
        seals.sort_by_key(|(seal, _)| seal.position);
        expected.sort_by_key(|(position, _)| *position);
        LogAudit {
            chain: ChainVerifier::default(),
            seals: seals.into(),
            seals_checked: 0,
            sealed_up_to: 0,
            expected: expected.into(),
        }
    }

    /// Checks the next event of the log.
    pub fn check(&mut self, event: &RecordedEvent) -> Result<(), ChainBreak> {
        // Seals of positions before this one that were not reached: the event they end
        // at is gone. The digest so far covers exactly what lies before this event.
        self.settle(|covered| covered < event.position)?;
        self.chain.check(event)?;
        self.settle(|covered| covered == event.position)
    }

    /// Ends the walk: seals beyond the last event mean the log lost its tail.
    pub fn finish(mut self) -> Result<AuditReport, ChainBreak> {
        self.settle(|_| true)?;
        Ok(AuditReport {
            head: self.chain.running(),
            seals_checked: self.seals_checked,
            sealed_up_to: self.sealed_up_to,
        })
    }

    fn settle(&mut self, due: impl Fn(u64) -> bool) -> Result<(), ChainBreak> {
        let running = self.chain.running();
        while let Some((seal, seal_position)) =
            self.seals.front().filter(|(s, _)| due(s.position)).cloned()
        {
            if seal.digest != running.head() || seal.events != running.events {
                return Err(ChainBreak::Unsealed {
                    from: self.sealed_up_to,
                    position: seal.position,
                    seal_position,
                    sealed_events: seal.events,
                    found_events: running.events,
                });
            }
            self.seals.pop_front();
            self.seals_checked += 1;
            self.sealed_up_to = seal.position;
        }
        while let Some((position, digest)) = self.expected.front().filter(|(p, _)| due(*p)).cloned()
        {
            if digest != running.head() {
                return Err(ChainBreak::NotAsNoted {
                    position,
                    noted: digest,
                    found: running.head(),
                });
            }
            self.expected.pop_front();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::chain_hash;
    use serde_json::json;

    /// A log of `streams` streams of `per_stream` events each, interleaved.
    fn log(streams: usize, per_stream: u64) -> Vec<RecordedEvent> {
        let mut previous = vec![EventHash::GENESIS; streams];
        let mut events = Vec::new();
        for version in 0..per_stream {
            for (s, previous) in previous.iter_mut().enumerate() {
                let position = events.len() as u64 + 1;
                let mut event = RecordedEvent {
                    event_id: Uuid::from_u128(u128::from(position)),
                    stream: format!("s-{s}"),
                    version,
                    position,
                    event_type: "Happened".into(),
                    schema_version: 1,
                    data: json!({"n": version}),
                    metadata: Metadata::by("test"),
                    recorded_at: "2026-11-22T10:00:00Z".parse().unwrap(),
                    hash: EventHash::GENESIS,
                };
                event.hash = chain_hash(previous, &event.hashed_fields());
                *previous = event.hash;
                events.push(event);
            }
        }
        events
    }

    /// Seals of `events` every `every` events (the seal events themselves left out of the
    /// log, as if on a stream of their own at the end).
    fn seals(events: &[RecordedEvent], every: usize) -> Vec<(LogSealed, u64)> {
        let mut running = RunningDigest::default();
        let mut seals = Vec::new();
        for (i, event) in events.iter().enumerate() {
            running.add(event.position, &event.hash);
            if (i + 1) % every == 0 {
                seals.push((LogSealed::of(&running, Utc::now()), 1_000 + i as u64));
            }
        }
        seals
    }

    fn audit(
        events: &[RecordedEvent],
        seals: Vec<(LogSealed, u64)>,
    ) -> Result<AuditReport, ChainBreak> {
        let mut audit = LogAudit::new(seals, vec![]);
        for event in events {
            audit.check(event)?;
        }
        audit.finish()
    }

    #[test]
    fn a_sealed_log_verifies() {
        let events = log(3, 4);
        let report = audit(&events, seals(&events, 5)).unwrap();
        assert_eq!(report.seals_checked, 2);
        assert_eq!(report.sealed_up_to, 10);
        assert_eq!(report.head.events, 12);
    }

    #[test]
    fn a_stream_removed_whole_breaks_the_seal_after_it() {
        let events = log(3, 4);
        let seals = seals(&events, 6);
        let without: Vec<_> = events
            .iter()
            .filter(|e| e.stream != "s-1")
            .cloned()
            .collect();
        match audit(&without, seals) {
            Err(ChainBreak::Unsealed {
                from: 0,
                position: 6,
                sealed_events: 6,
                found_events: 4,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn events_swapped_across_streams_break_the_seal_after_them() {
        let mut events = log(2, 4);
        let seals = seals(&events, 4);
        // Positions 5 and 6 belong to different streams: each chain still holds.
        let (a, b) = (events[4].position, events[5].position);
        events[4].position = b;
        events[5].position = a;
        events.swap(4, 5);
        match audit(&events, seals) {
            Err(
                e @ ChainBreak::Unsealed {
                    from: 4,
                    position: 8,
                    ..
                },
            ) => {
                assert!(e.to_string().contains("reordered"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lost_tail_breaks_the_last_seal() {
        let events = log(2, 3);
        let seals = seals(&events, 3);
        match audit(&events[..5], seals) {
            Err(ChainBreak::Unsealed {
                from: 3,
                position: 6,
                sealed_events: 6,
                found_events: 5,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_noted_head_must_still_match() {
        let events = log(2, 3);
        let mut running = RunningDigest::default();
        for e in &events[..4] {
            running.add(e.position, &e.hash);
        }
        let mut noted = LogAudit::new(vec![], vec![(4, running.head())]);
        for e in &events {
            noted.check(e).unwrap();
        }
        noted.finish().unwrap();

        let mut swapped = events.clone();
        swapped[2].position = 4;
        swapped[3].position = 3;
        swapped.swap(2, 3);
        let mut audit = LogAudit::new(vec![], vec![(4, running.head())]);
        let mut result = Ok(());
        for e in &swapped {
            result = result.and_then(|_| audit.check(e));
        }
        match result {
            Err(ChainBreak::NotAsNoted { position: 4, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seal_ids_follow_from_the_position() {
        let running = RunningDigest {
            position: 9,
            ..Default::default()
        };
        let a = LogSealed::of(&running, Utc::now()).to_new_event(Metadata::by("a"));
        let b = LogSealed::of(&running, Utc::now()).to_new_event(Metadata::by("b"));
        assert_eq!(a.event_id, b.event_id);
    }
}
