//! The running read side of one process: its database, its projectors, and how far each
//! has got.

use std::sync::{Arc, Mutex};

use chatledger_core::Position;
use tokio::sync::watch;

use crate::read_db::ReadDb;
use crate::read_models;
use crate::runner::{register, run_live, Live, ProjectionError, Projector};
use crate::tail::LogTail;

type Pending = Vec<(Arc<dyn Projector>, watch::Sender<Position>)>;

/// The projectors of this process and their progress.
pub struct ReadSide {
    pub db: ReadDb,
    progress: Vec<(&'static str, watch::Receiver<Position>)>,
    pending: Mutex<Pending>,
}

impl ReadSide {
    /// Every read model, not yet running.
    pub fn new(db: ReadDb) -> Self {
        let mut progress = Vec::new();
        let mut pending = Vec::new();
        for projector in read_models::all() {
            let (tx, rx) = watch::channel(0);
            progress.push((projector.name(), rx));
            pending.push((projector, tx));
        }
        ReadSide {
            db,
            progress,
            pending: Mutex::new(pending),
        }
    }

    /// Creates every read model's tables and views that do not exist yet, so queries find
    /// them from the first request on.
    pub async fn prepare(&self) -> Result<(), ProjectionError> {
        for projector in read_models::all() {
            register(&self.db, projector.as_ref()).await?;
        }
        Ok(())
    }

    /// Starts the projectors (once; later calls do nothing). They stop when `shutdown` turns
    /// true.
    pub fn start(&self, tail: LogTail, shutdown: watch::Receiver<bool>) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return;
        }
        let projectors = pending
            .into_iter()
            .map(|(projector, progress)| Live {
                projector,
                progress,
            })
            .collect();
        tokio::spawn(run_live(tail, self.db.clone(), projectors, shutdown));
    }

    /// Each projector's checkpoint.
    pub fn checkpoints(&self) -> Vec<(&'static str, Position)> {
        self.progress
            .iter()
            .map(|(name, rx)| (*name, *rx.borrow()))
            .collect()
    }

    /// The lowest checkpoint of all projectors.
    pub fn low_water_mark(&self) -> Position {
        self.progress
            .iter()
            .map(|(_, rx)| *rx.borrow())
            .min()
            .unwrap_or(0)
    }

    /// Waits until every projector has applied the log up to `position` (or the wait is
    /// given up by the caller's timeout).
    pub async fn wait_for(&self, position: Position) {
        for (_, rx) in &self.progress {
            let mut rx = rx.clone();
            let _ = rx.wait_for(|p| *p >= position).await;
        }
    }
}
