//! The sealer, and the walk `chatledger verify` makes over the log.
//!
//! The sealer follows the global order, keeps the running digest over every event hash, and
//! records a seal ([`LogSealed`]) every `every_events` events or, when anything new came,
//! every `every` of time. Any number of processes may run it: a seal is appended at the seal
//! stream's expected version, and its id follows from the position it covers, so each
//! checkpoint is recorded once. The digest it keeps is also what `GET /api/audit/head`
//! answers.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chatledger_core::audit::{AuditReport, LogAudit, LogSealed, SEAL_STREAM};
use chatledger_core::canonical::{ChainBreak, RunningDigest};
use chatledger_core::{EventHash, EventStore, ExpectedVersion, Metadata, StoreError};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::ownership::{Ownership, SINGLETON};
use crate::tail::LogTail;

/// When to seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealPolicy {
    /// Seal once this many events came since the last seal.
    pub every_events: u64,
    /// Seal when this much time passed since the last seal and anything came.
    pub every: Duration,
}

impl Default for SealPolicy {
    fn default() -> Self {
        SealPolicy {
            every_events: 1_000,
            every: Duration::from_secs(60),
        }
    }
}

/// The running digest as far as this process's sealer has followed the log.
#[derive(Debug, Clone, Default)]
pub struct AuditHead {
    inner: Arc<RwLock<HeadView>>,
}

/// What `GET /api/audit/head` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadView {
    pub running: RunningDigest,
    /// The latest seal and the position of its own event.
    pub last_seal: Option<(LogSealed, u64)>,
}

impl AuditHead {
    /// The digest now.
    pub fn view(&self) -> HeadView {
        self.inner.read().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut HeadView)) {
        if let Ok(mut state) = self.inner.write() {
            f(&mut state);
        }
    }
}

/// The sealer reactor.
pub struct Sealer {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    policy: SealPolicy,
    head: AuditHead,
    ownership: Ownership,
}

impl Sealer {
    pub fn new(
        store: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        policy: SealPolicy,
        head: AuditHead,
    ) -> Self {
        Sealer {
            store,
            clock,
            policy,
            head,
            ownership: Ownership::local(),
        }
    }

    /// Seals only while this process owns the sealer's partition (default: always); the
    /// others follow the log and keep their audit head all the same.
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Follows the log and seals until `shutdown` turns true.
    pub async fn run(self, tail: LogTail, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.run_once(&tail, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(reactor = "sealer", error = %e, "sealing paused; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    async fn run_once(
        &self,
        tail: &LogTail,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        // Resume from the last seal: its digest covers everything up to its position.
        let mut sealed = Sealed::default();
        let mut running = RunningDigest::default();
        if let Some(last) = read_seals(self.store.as_ref()).await?.pop() {
            let RecordedSeal {
                seal,
                position: seal_position,
                version,
            } = last;
            running = RunningDigest {
                digest: seal.digest.0,
                events: seal.events,
                position: seal.position,
            };
            sealed = Sealed {
                version: Some(version),
                events: seal.events,
                up_to: seal.position,
            };
            self.head.update(|h| {
                h.running = running;
                h.last_seal = Some((seal, seal_position));
            });
        }
        // The position of the last event that is not a seal.
        let mut last_other = 0;
        let mut last_sealed_at = Instant::now();
        let mut log = tail.subscribe(running.position);
        loop {
            // A seal interval too long to add never comes due.
            let due = last_sealed_at
                .checked_add(self.policy.every)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
            tokio::select! {
                next = log.next() => {
                    let Some(event) = next else { return Ok(()) };
                    let event = event?;
                    running.add(event.position, &event.hash);
                    match LogSealed::from_recorded(&event) {
                        Some(seal) => {
                            if seal.position >= sealed.up_to {
                                sealed = Sealed {
                                    version: Some(event.version),
                                    events: seal.events,
                                    up_to: seal.position,
                                };
                                last_sealed_at = Instant::now();
                            }
                            self.head.update(|h| {
                                h.running = running;
                                h.last_seal = Some((seal, event.position));
                            });
                        }
                        None => {
                            last_other = event.position;
                            self.head.update(|h| h.running = running);
                        }
                    }
                    if last_other > sealed.up_to
                        && running.events - sealed.events >= self.policy.every_events
                    {
                        sealed = self.seal(&running, sealed).await?;
                        last_sealed_at = Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(due) => {
                    if last_other > sealed.up_to {
                        sealed = self.seal(&running, sealed).await?;
                    }
                    last_sealed_at = Instant::now();
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Records a seal of `running`. Another process that sealed first wins; its seal comes
    /// through the log like any event.
    async fn seal(&self, running: &RunningDigest, sealed: Sealed) -> Result<Sealed, StoreError> {
        let Some(_held) = self
            .ownership
            .hold_partition(SINGLETON, running.position)
            .await
        else {
            return Ok(sealed);
        };
        let seal = LogSealed::of(running, self.clock.now());
        let event = seal.to_new_event(Metadata::by("sealer"));
        match self
            .store
            .append(
                SEAL_STREAM,
                ExpectedVersion::from_current(sealed.version),
                vec![event],
            )
            .await
        {
            Ok(result) => Ok(Sealed {
                version: result.stream_version,
                events: running.events,
                up_to: running.position,
            }),
            Err(StoreError::WrongExpectedVersion { .. }) => Ok(sealed),
            Err(e) => Err(e),
        }
    }
}

/// The last seal as the sealer knows it.
#[derive(Debug, Clone, Copy, Default)]
struct Sealed {
    /// The seal stream's version.
    version: Option<u64>,
    events: u64,
    /// The last position it covers.
    up_to: u64,
}

/// A seal as recorded: the position of its event and its version in the seal stream.
struct RecordedSeal {
    seal: LogSealed,
    position: u64,
    version: u64,
}

/// Every seal recorded, oldest first.
async fn read_seals(store: &dyn EventStore) -> Result<Vec<RecordedSeal>, StoreError> {
    let mut seals = Vec::new();
    let mut from = 0;
    loop {
        let batch = store.read_stream(SEAL_STREAM, from, 1_000).await?;
        let Some(tail) = batch.last() else {
            return Ok(seals);
        };
        from = tail.version + 1;
        seals.extend(batch.iter().filter_map(|e| {
            LogSealed::from_recorded(e).map(|seal| RecordedSeal {
                seal,
                position: e.position,
                version: e.version,
            })
        }));
    }
}

/// Why an audit did not pass.
#[derive(Debug, thiserror::Error)]
pub enum AuditFailure {
    #[error("the log breaks at {0}")]
    Broken(#[from] ChainBreak),
    #[error("the log cannot be read: {0}")]
    Unreadable(#[from] StoreError),
}

/// Walks the whole log: every stream's chain, every seal, and each digest an auditor noted
/// (`(position, digest)`). `progress` hears the position reached after each batch.
pub async fn audit_log(
    store: &dyn EventStore,
    noted: Vec<(u64, EventHash)>,
    mut progress: impl FnMut(u64),
) -> Result<AuditReport, AuditFailure> {
    let seals = read_seals(store)
        .await?
        .into_iter()
        .map(|s| (s.seal, s.position))
        .collect();
    let mut audit = LogAudit::new(seals, noted);
    let mut after = 0;
    loop {
        let batch = store.read_all(after, 5_000).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in &batch {
            audit.check(event)?;
        }
        progress(after);
    }
    Ok(audit.finish()?)
}
