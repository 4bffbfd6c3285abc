//! Appends a concurrent load to a PostgreSQL event store from a process of its own, so tests
//! can check the global order with several writing processes. Prints each stored event id.
//!
//! Usage: append_load DATABASE_URL SCHEMA WRITER TASKS EVENTS_PER_TASK

use std::process::ExitCode;
use std::sync::Arc;

use chatledger_adapters::PostgresStore;
use chatledger_tests::load::{self, LoadPlan};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, schema, writer, tasks, events] = args.as_slice() else {
        eprintln!("usage: append_load DATABASE_URL SCHEMA WRITER TASKS EVENTS_PER_TASK");
        return ExitCode::from(2);
    };
    let (Ok(tasks), Ok(events_per_task)) = (tasks.parse(), events.parse()) else {
        eprintln!("TASKS and EVENTS_PER_TASK must be numbers");
        return ExitCode::from(2);
    };
    let store = match PostgresStore::connect_lazy(url, Some(schema)) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let plan = LoadPlan {
        writer: writer.clone(),
        tasks,
        events_per_task,
        shared_streams: 4,
    };
    let ids = load::run(Arc::new(store), &plan).await;
    let mut out = String::with_capacity(ids.len() * 37);
    for id in ids {
        out.push_str(&id.to_string());
        out.push('\n');
    }
    print!("{out}");
    ExitCode::SUCCESS
}
