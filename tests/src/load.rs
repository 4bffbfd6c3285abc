//! A concurrent append load: many tasks appending to streams of their own and to streams
//! they share, re-deciding on conflicts as real callers do.

use std::sync::Arc;

use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent, StoreError};
use serde_json::json;
use uuid::Uuid;

/// What one writer (a process, or a test) appends.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Distinguishes writers; becomes part of their own streams' names.
    pub writer: String,
    /// Concurrent appending tasks.
    pub tasks: usize,
    /// Events each task appends.
    pub events_per_task: usize,
    /// Streams every task (of every writer) also appends to.
    pub shared_streams: usize,
}

/// Runs the load and returns the ids of every event it stored.
///
/// Each task appends batches of one to four events, most to its own stream with an exact
/// expected version, every third to a shared stream: alternately with `Any`, and with an
/// exact version that it corrects from the conflict error and retries.
pub async fn run(store: Arc<dyn EventStore>, plan: &LoadPlan) -> Vec<Uuid> {
    let mut handles = Vec::with_capacity(plan.tasks);
    for task in 0..plan.tasks {
        let store = store.clone();
        let plan = plan.clone();
        handles.push(tokio::spawn(
            async move { run_task(store, &plan, task).await },
        ));
    }
    let mut ids = Vec::with_capacity(plan.tasks * plan.events_per_task);
    for handle in handles {
        ids.extend(handle.await.expect("a load task panicked"));
    }
    ids
}

async fn run_task(store: Arc<dyn EventStore>, plan: &LoadPlan, task: usize) -> Vec<Uuid> {
    let own = format!("load-{}-{task}", plan.writer);
    let mut own_version: Option<u64> = None;
    let mut shared_guess: Vec<Option<u64>> = vec![None; plan.shared_streams.max(1)];
    let mut ids = Vec::with_capacity(plan.events_per_task);
    let mut round = 0usize;
    while ids.len() < plan.events_per_task {
        let size = (1 + round % 4).min(plan.events_per_task - ids.len());
        let events: Vec<NewEvent> = (0..size)
            .map(|i| {
                NewEvent::new(
                    Uuid::new_v4(),
                    "LoadAppended",
                    json!({"writer": plan.writer, "task": task, "round": round, "i": i}),
                    Metadata::by(format!("load:{}", plan.writer)),
                )
            })
            .collect();
        let batch_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        if plan.shared_streams > 0 && round % 3 == 2 {
            let k = (task + round) % plan.shared_streams;
            let stream = format!("load-shared-{k}");
            if round.is_multiple_of(2) {
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .expect("append with Any");
            } else {
                loop {
                    let expected = ExpectedVersion::from_current(shared_guess[k]);
                    match store.append(&stream, expected, events.clone()).await {
                        Ok(result) => {
                            shared_guess[k] = result.stream_version;
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                            shared_guess[k] = actual
                        }
                        Err(e) => panic!("append to {stream}: {e}"),
                    }
                }
            }
        } else {
            let result = store
                .append(&own, ExpectedVersion::from_current(own_version), events)
                .await
                .expect("append to the task's own stream");
            own_version = result.stream_version;
        }
        ids.extend(batch_ids);
        round += 1;
    }
    ids
}
