//! `chatledger-bench`: how fast chatledger is on the machine it runs on.
//!
//! Every measurement gets a fresh database of its own (SQLite files in a temporary
//! directory, or with `--database-url` fresh PostgreSQL databases on that server, dropped
//! afterwards), then the bench prints a table and writes the figures as JSON. It reports; it
//! asserts nothing.
//!
//! 1. ingest: signed Meta webhooks, one text message each, over loopback HTTP to a server
//!    started here: messages/s at saturation, and latency at a fixed 1,000 messages/s;
//! 2. append: the same kind of events through the store port, against the plainest SQL
//!    inserting the same rows (the ceiling);
//! 3. projection lag: from a webhook's 200 to its chat answering through GraphQL, at 1,000/s;
//! 4. replay: `chatledger replay` over a log of realistic conversations: events/s, peak RSS;
//! 5. queries: the dashboard's chat list (50 chats with tags and last message) over the
//!    chats that log holds;
//! 6. SLA precision: how late alerts are recorded after they fall due, under the fixed load.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod append;
mod db;
mod log;
mod media;
mod server;

use append::*;
use db::*;
use log::*;
use server::*;

use chatledger_adapters::personal::PersonalData;
use chatledger_adapters::{PostgresStore, SqliteStore, WriterCounts};
use chatledger_api::readiness::Readiness;
use chatledger_api::{run, AppState, Settings};
use chatledger_core::conversation::{
    AssignmentRule, ConversationEvent, Customer, CustomerKey, ExecutiveRef, InboundMessage,
    OpenReason, OutboundPurpose, Receipt, SlaBreach,
};
use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent};
use chatledger_projections::read_db::ReadDb;
use chatledger_projections::read_side::ReadSide;
use chrono::Utc;
use clap::Parser;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Connection;
use uuid::Uuid;

/// Measures ingest, append, projection lag, replay, queries and SLA precision on this machine.
#[derive(Debug, Parser)]
#[command(name = "chatledger-bench", about)]
struct Args {
    /// A PostgreSQL server (postgres://USER@HOST:PORT/DATABASE) to bench on: each measurement
    /// creates a fresh database there and drops it. SQLite files in a temporary directory
    /// without it.
    #[arg(long)]
    database_url: Option<String>,
    /// Events in the log that replay rebuilds (10 per conversation: its chats are what the
    /// query measurement lists).
    #[arg(long, default_value_t = 1_000_000)]
    replay_events: u64,
    /// Events the append measurement writes, per round, through the engine and again through
    /// the ceiling.
    #[arg(long, default_value_t = 20_000)]
    append_events: usize,
    /// Seconds of each ingest run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Inbound 100 KB images in each media throughput run.
    #[arg(long, default_value_t = 1_000)]
    media_images: usize,
    /// The size of the large document streamed through the server, in MB.
    #[arg(long, default_value_t = 100)]
    media_document_mb: usize,
    /// Where the figures are written as JSON.
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// Run only these measurements (comma-separated: append, replay, ingest, fixed-rate, media);
    /// `replay` includes the chat-list query, `fixed-rate` the projection lag and SLA precision.
    #[arg(long, value_delimiter = ',', value_parser = ["append", "replay", "ingest", "fixed-rate", "media"])]
    only: Vec<String>,
    /// Print how to measure this checkout's store beside the peer event-sourcing libraries
    /// (`shared/peers/append-bench`), for the same commit, and exit.
    #[arg(long)]
    peers: bool,
}

/// How to run the peers' bench against this very checkout and commit.
fn peers_note() -> String {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let commit = std::process::Command::new("git")
        .arg("-C")
        .arg(&checkout)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "(not a git checkout)".to_owned());
    format!(
        "chatledger's store beside the peer Rust event-sourcing libraries, in one run on this machine:\n\n\
         \x20 cd PATH-TO/shared/peers/append-bench\n\
         \x20 ./with-chatledger.sh {} all --out peers-{commit}.json\n\n\
         It builds against this checkout (commit {commit}) and needs PostgreSQL at 127.0.0.1:5432\n\
         (user postgres, trust); its README says what each variant is. Put its table beside this\n\
         bench's in the README's performance section, with the machine it ran on.",
        checkout.display()
    )
}

/// The allocator the `chatledger` binary uses, so that what is measured is what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APP_SECRET: &str = "bench-app-secret";
const ADMIN_TOKEN: &str = "bench-admin-token";
const CHANNEL: &str = "9099039188";

fn main() {
    // The bench runs `chatledger replay` as a child process of itself, so that its time and
    // peak memory are that command's alone.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__chatledger") {
        let rest = std::iter::once("chatledger".to_owned()).chain(args[2..].iter().cloned());
        std::process::exit(match chatledger_api::cli::main_from(rest) {
            std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    let args = Args::parse();
    if args.peers {
        println!("{}", peers_note());
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    if let Err(e) = runtime.block_on(bench(args)) {
        eprintln!("chatledger-bench: {e}");
        std::process::exit(1);
    }
}

/// The `q`-quantile of `samples` (sorted here), in milliseconds.
fn quantile(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index].as_secs_f64() * 1_000.0
}

/// Runs `work` on a thread of its own with a single-threaded runtime: the load generator,
/// kept off the server's worker threads.
async fn on_load_thread<F, T>(work: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T>,
    T: Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _ = done.send(runtime.block_on(work()));
    });
    result.await.expect("the load generator finished")
}

/// The figures: printed as a table while they come, and kept for the JSON file.
struct Figures {
    json: serde_json::Map<String, Value>,
}

impl Figures {
    fn add(&mut self, name: &str, value: Value, shown: String, target: &str) {
        println!("{name:<44} {shown:>18}   {target}");
        self.json.insert(name.into(), value);
    }
}

async fn bench(args: Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let backend = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!("chatledger-bench on {backend}; {cores} cores shared: the server runs on a tokio runtime of 2 worker threads (plus the store's writer), the load generator on 1 thread of its own; all compete for the same {cores} cores.");
    println!("{:<44} {:>18}   target", "measurement", "result");
    let mut figures = Figures {
        json: serde_json::Map::new(),
    };
    let server = args.database_url.as_deref();
    let runs = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

    // 2. append: the store port against the raw-insert ceiling.
    if runs("append") {
        let db = Db::fresh(server).await?;
        let Appends {
            engine,
            ceiling,
            rows_per_commit,
        } = append_against_ceiling(&db, args.append_events).await?;
        db.drop_database().await;
        figures.add(
            "append: engine events/s",
            json!(engine),
            format!("{engine:.0}"),
            "",
        );
        figures.add(
            "append: rows per commit (engine's groups)",
            json!(rows_per_commit),
            format!("{rows_per_commit}"),
            "",
        );
        figures.add(
            "append: raw-insert ceiling rows/s",
            json!(ceiling),
            format!("{ceiling:.0}"),
            "",
        );
        figures.add(
            "append: engine / ceiling",
            json!(engine / ceiling),
            format!("{:.0}%", 100.0 * engine / ceiling),
            ">= 70%",
        );
    }

    // Media: inbound images fetched and kept per second (filesystem, then S3 when an S3
    // server answers at CHATLEDGER_BENCH_S3_ENDPOINT), and memory while a 100 MB document
    // streams through.
    if runs("media") {
        let db = Db::fresh(server).await?;
        let per_s = media::throughput(&db, &[], args.media_images).await?;
        db.drop_database().await;
        figures.add(
            "media: 100 KB images fetched+kept/s (filesystem)",
            json!(per_s),
            format!("{per_s:.0}"),
            "",
        );
        let endpoint = std::env::var("CHATLEDGER_BENCH_S3_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:8333".into());
        if reqwest::get(&endpoint).await.is_ok() {
            let db = Db::fresh(server).await?;
            let env = [
                (
                    "MEDIA_STORE_URL",
                    format!("s3://media/bench-{}", Uuid::new_v4().simple()),
                ),
                ("AWS_ENDPOINT_URL", endpoint),
                (
                    "AWS_ACCESS_KEY_ID",
                    std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "chatledger-test".into()),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY",
                    std::env::var("AWS_SECRET_ACCESS_KEY")
                        .unwrap_or_else(|_| "chatledger-test-secret".into()),
                ),
            ];
            let per_s = media::throughput(&db, &env, args.media_images).await?;
            db.drop_database().await;
            figures.add(
                "media: 100 KB images fetched+kept/s (S3)",
                json!(per_s),
                format!("{per_s:.0}"),
                "",
            );
        } else {
            println!("media on S3: skipped, no S3 server answers at {endpoint}");
        }
        let db = Db::fresh(server).await?;
        let (ready, peak_before, peak, took) =
            media::large_document(&db, args.media_document_mb).await?;
        db.drop_database().await;
        figures.add(
            "media: server RSS when ready (MB)",
            json!(ready),
            format!("{ready:.0}"),
            "",
        );
        figures.add(
            "media: peak RSS before the large document (MB)",
            json!(peak_before),
            format!("{peak_before:.0}"),
            "",
        );
        figures.add(
            "media: peak RSS after the large document (MB)",
            json!(peak),
            format!("{peak:.0}"),
            "not the file",
        );
        figures.add(
            "media: large document fetched+kept (s)",
            json!(took),
            format!("{took:.2}"),
            "",
        );
    }

    // 4, 5. replay and queries over a log of realistic conversations.
    if runs("replay") {
        let db = Db::fresh(server).await?;
        let conversations = (args.replay_events / 10).max(1);
        let built = build_log(&db, conversations).await?;
        figures.add(
            "log built: conversations appended/s",
            json!(built),
            format!("{built:.0}"),
            "",
        );
        let (events, seconds, rss_mb) = replay(&db)?;
        figures.add(
            "replay: events/s",
            json!(events as f64 / seconds),
            format!("{:.0} ({events} events)", events as f64 / seconds),
            ">= 100,000",
        );
        figures.add(
            "replay: peak RSS MB",
            json!(rss_mb),
            format!("{rss_mb:.0}"),
            "< 300",
        );
        let (cold, warm) = reactors_start(&db).await?;
        figures.add(
            "reactors ready after start: whole log, ms",
            json!(cold),
            format!("{cold:.0}"),
            "",
        );
        figures.add(
            "reactors ready after start: from snapshots, ms",
            json!(warm),
            format!("{warm:.0}"),
            "milliseconds",
        );
        let (p50, p99) = chat_list_latency(&db, conversations).await?;
        figures.add(
            &format!("chat list over {conversations} chats: p50 ms"),
            json!(p50),
            format!("{p50:.2}"),
            "< 5",
        );
        figures.add(
            &format!("chat list over {conversations} chats: p99 ms"),
            json!(p99),
            format!("{p99:.2}"),
            "",
        );
        db.drop_database().await;
    }

    // 1. ingest at saturation.
    if runs("ingest") {
        let db = Db::fresh(server).await?;
        let saturated = ingest_saturated(&db, args.seconds).await?;
        db.drop_database().await;
        figures.add(
            "ingest: messages/s at saturation",
            json!(saturated),
            format!("{saturated:.0}"),
            if backend == "sqlite" {
                ">= 5,000"
            } else {
                ">= 3,000"
            },
        );
    }

    // 1, 3, 6. a fixed 1,000 messages/s: latency, projection lag, SLA precision.
    if runs("fixed-rate") {
        let db = Db::fresh(server).await?;
        let fixed = ingest_fixed_rate(&db, args.seconds, 1_000).await?;
        db.drop_database().await;
        figures.add(
            "ingest at 1,000/s: p50 ms",
            json!(fixed.p50),
            format!("{:.2}", fixed.p50),
            "",
        );
        figures.add(
            "ingest at 1,000/s: p99 ms",
            json!(fixed.p99),
            format!("{:.2}", fixed.p99),
            "< 25",
        );
        figures.add(
            "projection lag at 1,000/s: p50 ms",
            json!(fixed.lag_p50),
            format!("{:.2}", fixed.lag_p50),
            "",
        );
        figures.add(
            "projection lag at 1,000/s: p99 ms",
            json!(fixed.lag_p99),
            format!("{:.2}", fixed.lag_p99),
            "< 50",
        );
        figures.add(
            "SLA alert delay under load: p50 ms",
            json!(fixed.sla_p50),
            format!("{:.1} ({} alerts)", fixed.sla_p50, fixed.alerts),
            "",
        );
        figures.add(
            "SLA alert delay under load: p99 ms",
            json!(fixed.sla_p99),
            format!("{:.1}", fixed.sla_p99),
            "",
        );
    }

    figures.json.insert("backend".into(), json!(backend));
    figures.json.insert("cores".into(), json!(cores));
    figures.json.insert("measured_at".into(), json!(Utc::now()));
    let text =
        serde_json::to_string_pretty(&Value::Object(figures.json)).map_err(|e| e.to_string())?;
    std::fs::write(&args.out, text)
        .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
    println!("figures written to {}", args.out.display());
    Ok(())
}
