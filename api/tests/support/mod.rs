//! What the tests of the real binary share: starting `chatledger` as a user would, speaking
//! to it over HTTP, stopping it, and the databases of the crash and cluster tests.
#![allow(dead_code)] // each test file uses its own part

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chatledger_tests::db::PgSchema;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A guard against hanging, not a speed requirement.
pub const START_GUARD: Duration = Duration::from_secs(30);

pub fn chatledger(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatledger"));
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("PORT")
        .env_remove("LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Starts `serve` on a free port and returns the process and its base URL, read from the
/// "listening" log line (logs go to stderr).
pub async fn start(mut command: Command) -> (Child, String) {
    let mut child = command
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .spawn()
        .expect("chatledger starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let address = tokio::time::timeout(START_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["message"] == "listening" {
                return entry["address"].as_str().unwrap().to_owned();
            }
        }
        panic!("chatledger exited before listening");
    })
    .await
    .expect("chatledger listens");
    // Keep draining the log so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{address}"))
}

pub async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Readiness, once it says ready (polled every 100 ms, `tries` times at most).
pub async fn ready_within(base: &str, tries: usize) -> (u16, Value) {
    let mut ready = get(&format!("{base}/api/health/ready")).await;
    for _ in 0..tries {
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = get(&format!("{base}/api/health/ready")).await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);
    ready
}

pub async fn terminate(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id().expect("still running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    tokio::time::timeout(START_GUARD, child.wait())
        .await
        .expect("it stops on SIGTERM")
        .unwrap()
}

/// Runs a command that must fail, and returns its stderr (with logging off, so that only
/// what the command itself says is there).
pub async fn failing(mut command: Command, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        START_GUARD,
        command.env("RUST_LOG", "off").args(args).output(),
    )
    .await
    .expect("it ends by itself")
    .unwrap();
    assert!(!output.status.success(), "it should have failed");
    String::from_utf8(output.stderr).unwrap()
}

pub fn assert_one_clear_line(stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "{:?} does not say {needle:?}",
        lines[0]
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

/// The test database of a crash test: where `chatledger` finds it, and how to read its read
/// models from here.
pub struct CrashDb {
    pub schema: Option<PgSchema>,
    pub database_url: String,
}

impl CrashDb {
    pub async fn new(postgres: bool, dir: &Path) -> Self {
        if postgres {
            let schema = PgSchema::create().await;
            let database_url = format!("{}?options=-csearch_path%3D{}", schema.url, schema.name);
            CrashDb {
                schema: Some(schema),
                database_url,
            }
        } else {
            CrashDb {
                schema: None,
                database_url: format!("sqlite://{}", dir.join("chatledger.db").display()),
            }
        }
    }

    pub async fn read_models(&self) -> Vec<(String, Vec<Vec<Option<String>>>)> {
        use chatledger_projections::read_db::ReadDb;
        let db = match &self.schema {
            Some(schema) => ReadDb::connect_postgres_lazy(&schema.url, Some(&schema.name)).unwrap(),
            None => {
                ReadDb::open_sqlite(Path::new(self.database_url.trim_start_matches("sqlite://")))
                    .await
                    .unwrap()
            }
        };
        let mut dump = Vec::new();
        for projector in chatledger_projections::read_models::all() {
            for table in projector.tables() {
                dump.push((table.to_string(), db.dump_table(table).await.unwrap()));
            }
        }
        dump
    }
}

pub fn crash_server(dir: &Path, db: &CrashDb) -> Command {
    let mut command = chatledger(dir);
    command
        .env("DATABASE_URL", &db.database_url)
        .env(
            "CHATLEDGER_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        )
        .env("PINBOT_WEBHOOK_SECRET", "crash-test");
    command
}

pub fn text_message(customer: usize, n: usize) -> String {
    serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "contacts": [{"profile": {"name": format!("customer {customer}")}, "wa_id": format!("9196381{customer:05}")}],
          "messages": [{"from": format!("9196381{customer:05}"), "id": format!("wamid.crash.{customer}.{n}"),
                        "timestamp": "1763800000", "type": "text", "text": {"body": format!("message {n}")}}]}}]}]})
    .to_string()
}

/// Waits until readiness reports the read models level with the log.
pub async fn wait_caught_up(base: &str) -> Value {
    for _ in 0..300 {
        let (status, body) = get(&format!("{base}/api/health/ready")).await;
        if status == 200 && body["projection_lag"] == 0 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the read models did not catch up");
}
