//! The real `chatledger` binary: started as a user would, in an empty directory, spoken to
//! over HTTP, stopped with SIGTERM.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chatledger_tests::db::PgSchema;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[tokio::test]
async fn serve_in_an_empty_directory_is_live_and_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start(chatledger(dir.path())).await;

    let (status, body) = get(&format!("{base}/api/health")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = get(&format!("{base}/api/health/ready")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"], "sqlite");
    assert!(
        dir.path().join("chatledger.db").exists(),
        "the log is ./chatledger.db"
    );

    let (status, body) = get(&format!("{base}/no/such/route")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");

    let status = terminate(child).await;
    assert!(status.success(), "a graceful stop exits 0, got {status}");
}

#[tokio::test]
async fn serve_with_postgres_down_stays_up_and_says_why_it_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = chatledger(dir.path());
    // Nothing listens on port 1; the password must not appear anywhere.
    command.env(
        "DATABASE_URL",
        "postgres://postgres:hunter2@127.0.0.1:1/chatledger",
    );
    let (mut child, base) = start(command).await;

    let (status, _) = get(&format!("{base}/api/health")).await;
    assert_eq!(status, 200);
    let mut ready = get(&format!("{base}/api/health/ready")).await;
    // The first connection attempt may still be under way; wait for its verdict.
    for _ in 0..50 {
        if ready.1["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot reach"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = get(&format!("{base}/api/health/ready")).await;
    }
    let (status, body) = ready;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot reach") && reason.contains("127.0.0.1:1"),
        "{reason}"
    );
    assert!(!reason.contains("hunter2"), "the password leaked: {reason}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process keeps running"
    );
    terminate(child).await;
}

#[tokio::test]
async fn serve_on_postgres_is_ready_once_migrated() {
    let schema = PgSchema::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = chatledger(dir.path());
    command.env(
        "DATABASE_URL",
        format!("{}?options=-csearch_path%3D{}", schema.url, schema.name),
    );
    let (child, base) = start(command).await;
    let ready = ready_within(&base, 100).await;
    assert_eq!(ready.1["store"], "postgres");
    assert!(
        !dir.path().join("chatledger.db").exists(),
        "no SQLite file when PostgreSQL is chosen"
    );
    terminate(child).await;
}

/// Three processes started at the same instant on an empty schema: each migrates and creates
/// the read models' tables, one at a time, and all become ready.
#[tokio::test]
async fn three_processes_started_at_once_on_an_empty_postgres_all_become_ready() {
    let schema = PgSchema::create().await;
    let url = format!("{}?options=-csearch_path%3D{}", schema.url, schema.name);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let started = futures_util::future::join_all(dirs.iter().map(|dir| {
        let mut command = chatledger(dir.path());
        command.env("DATABASE_URL", &url);
        start(command)
    }))
    .await;
    for (child, base) in started {
        ready_within(&base, 200).await;
        terminate(child).await;
    }
}

#[tokio::test]
async fn a_corrupt_database_file_ends_serve_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("chatledger.db"),
        b"not a database at all\n".repeat(100),
    )
    .unwrap();
    let stderr = failing(
        chatledger(dir.path()),
        &["serve", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert_one_clear_line(&stderr, "chatledger.db is not a usable SQLite database");
}

#[tokio::test]
async fn a_database_url_with_an_unknown_scheme_ends_serve_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = chatledger(dir.path());
    command.env("DATABASE_URL", "mysql://root:hunter2@localhost/chat");
    let stderr = failing(command, &["serve", "--listen", "127.0.0.1:0"]).await;
    assert_one_clear_line(&stderr, "unknown scheme \"mysql\"");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(!dir.path().join("chatledger.db").exists());
}

#[tokio::test]
async fn migrate_applies_the_schema_and_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let output = chatledger(dir.path())
            .arg("migrate")
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout)
            .contains("migrations applied to SQLite file chatledger.db"));
    }
    let schema = PgSchema::create().await;
    let mut command = chatledger(dir.path());
    command.env(
        "DATABASE_URL",
        format!("{}?options=-csearch_path%3D{}", schema.url, schema.name),
    );
    let output = command.arg("migrate").output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let store = schema.store().await;
    chatledger_core::EventStore::ping(&store)
        .await
        .expect("the migrated schema is usable");
}

/// SIGKILL in the middle of a flood of webhooks, then a restart: the read models the
/// restarted server builds equal a fresh replay of the same log, table by table, and every
/// acknowledged message is in them. With two processes on one database, the flood goes to
/// both and the first is killed; the other goes on taking webhooks.
async fn killed_mid_flood(postgres: bool, processes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = CrashDb::new(postgres, dir.path()).await;
    let mut servers = Vec::new();
    for _ in 0..processes {
        let (server, base) = start(crash_server(dir.path(), &db)).await;
        wait_caught_up(&base).await;
        servers.push((server, base));
    }
    let bases: Vec<String> = servers.iter().map(|(_, base)| base.clone()).collect();

    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let mut flood = Vec::new();
    for task in 0..8 {
        let (client, base, acknowledged) = (
            client.clone(),
            bases[task % bases.len()].clone(),
            acknowledged.clone(),
        );
        flood.push(tokio::spawn(async move {
            for n in 0..200 {
                let customer = task * 10 + n % 10;
                let sent = client
                    .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
                    .header("content-type", "application/json")
                    .header("x-webhook-secret", "crash-test")
                    .body(text_message(customer, n))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 200 => {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(format!("wamid.crash.{customer}.{n}"));
                    }
                    _ => return,
                }
            }
        }));
    }
    // Kill once the flood is well under way.
    while acknowledged.lock().unwrap().len() < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut killed, _) = servers.remove(0);
    killed.kill().await.unwrap();
    for task in flood {
        task.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let (server, base) = start(crash_server(dir.path(), &db)).await;
    servers.push((server, base));
    for (server, base) in servers {
        wait_caught_up(&base).await;
        terminate(server).await;
    }
    let live = db.read_models().await;
    let messages = &live.iter().find(|(t, _)| t == "messages").unwrap().1;
    for wamid in &acknowledged {
        assert!(
            messages
                .iter()
                .any(|row| row.contains(&Some(wamid.clone()))),
            "{wamid} was acknowledged but is not in the read models"
        );
    }

    let output = crash_server(dir.path(), &db)
        .arg("replay")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("replayed") && report.contains("events/s"),
        "{report}"
    );
    assert_eq!(
        db.read_models().await,
        live,
        "live read models after the crash equal a fresh replay"
    );
}

#[tokio::test]
async fn a_server_killed_mid_flood_recovers_to_what_a_replay_builds_sqlite() {
    killed_mid_flood(false, 1).await;
}

#[tokio::test]
async fn a_server_killed_mid_flood_recovers_to_what_a_replay_builds_postgres() {
    killed_mid_flood(true, 1).await;
}

#[tokio::test]
async fn one_of_two_servers_killed_mid_flood_recovers_to_what_a_replay_builds_postgres() {
    killed_mid_flood(true, 2).await;
}

/// `chatledger executive add` (password on stdin), then a login over HTTP against the same
/// database, and CORS answers for the configured dashboard origin only.
#[tokio::test]
async fn an_executive_added_on_the_command_line_can_log_in() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let mut add = chatledger(dir.path());
    add.args([
        "executive",
        "add",
        "--email",
        "Asha@OneWay.cab",
        "--name",
        "Asha",
        "--stakeholder",
        "partner",
    ])
    .stdin(Stdio::piped());
    let mut child = add.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("registered Asha <asha@oneway.cab> as executive for partner"));

    let mut serve = chatledger(dir.path());
    serve
        .env("JWT_SECRET_KEY", "a secret for signing")
        .env("ALLOWED_ORIGINS", "https://dash.example.com");
    let (server, base) = start(serve).await;
    let client = reqwest::Client::new();
    let login = |password: &'static str| {
        client
            .post(format!("{base}/api/auth/login"))
            .json(&serde_json::json!({"email": "asha@oneway.cab", "password": password}))
            .send()
    };
    let mut response = login("a long enough password").await.unwrap();
    // The executives read model may take a moment to reach the registration at start.
    for _ in 0..50 {
        if response.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        response = login("a long enough password").await.unwrap();
    }
    assert_eq!(response.status(), 200);
    let token = response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(login("not the password").await.unwrap().status(), 401);
    let me = client
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"query": "{ me { name role stakeholders online } }"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        me["data"]["me"],
        serde_json::json!({"name": "Asha", "role": "executive", "stakeholders": ["partner"], "online": false}),
        "executives are offline after login until they say otherwise"
    );

    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://dash.example.com").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://dash.example.com")
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // Deactivated on the command line, while the server runs: her token stops working and she
    // cannot log in.
    let deactivated = chatledger(dir.path())
        .args([
            "executive",
            "deactivate",
            "--email",
            "asha@oneway.cab",
            "--reason",
            "left the team",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        deactivated.status.success(),
        "{}",
        String::from_utf8_lossy(&deactivated.stderr)
    );
    assert!(
        String::from_utf8_lossy(&deactivated.stdout).contains("deactivated Asha <asha@oneway.cab>")
    );
    let mut refused = Value::Null;
    for _ in 0..50 {
        refused = client
            .post(format!("{base}/graphql"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"query": "{ me { name } }"}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        if refused["errors"].is_array() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deactivated"),
        "{refused}"
    );
    let response = login("a long enough password").await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("deactivated"));
    let again = chatledger(dir.path())
        .args([
            "executive",
            "deactivate",
            "--email",
            "asha@oneway.cab",
            "--reason",
            "twice",
        ])
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already deactivated"));
    terminate(server).await;
}

/// `chatledger sla recompute` over a recorded history: a 1-minute policy finds more alerts
/// than the 3-minute one that ran, and the log is exactly as it was afterwards.
#[tokio::test]
async fn sla_recompute_reports_what_another_policy_would_have_done_and_writes_nothing() {
    use chatledger_application::conversations::Conversations;
    use chatledger_core::conversation::{ConversationCommand, SlaBreach};
    use chatledger_core::sla::SlaLevel;
    use chatledger_core::{EventStore, Metadata};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatledger.db");
    let store: std::sync::Arc<dyn EventStore> =
        std::sync::Arc::new(chatledger_adapters::SqliteStore::open(&db).await.unwrap());
    let conversations = Conversations::new(store.clone());
    let t0: chrono::DateTime<chrono::Utc> = "2026-11-20T10:00:00Z".parse().unwrap();
    let secs = chrono::Duration::seconds;
    for (customer, answered_after, alerted) in
        [("+919638120001", 200, true), ("+919638120002", 90, false)]
    {
        let conversation = chatledger_tests::messages::partner_conversation(customer);
        let stream = conversation.stream();
        let chat_id = uuid::Uuid::new_v4();
        let wamid = format!("wamid.{customer}");
        let message = chatledger_tests::messages::text_message(&wamid, customer, "hello?");
        let mut commands = vec![ConversationCommand::ReceiveMessage {
            conversation,
            message: Box::new(message),
            new_chat_id: chat_id,
            now: t0,
        }];
        if alerted {
            commands.push(ConversationCommand::RaiseSla {
                level: SlaLevel::Alert,
                breach: SlaBreach {
                    chat_id,
                    customer_message: wamid.clone(),
                    clock_started_at: t0,
                    due_at: t0 + secs(180),
                    fired_at: t0 + secs(180),
                    policy_version: 0,
                    threshold_seconds: 180,
                    notification: None,
                },
            });
        }
        commands.push(ConversationCommand::SendReply {
            chat_id,
            message_id: uuid::Uuid::new_v4(),
            text: "here".into(),
            by: "asha".into(),
            now: t0 + secs(answered_after),
        });
        conversations
            .handle(&stream, commands, &Metadata::by("test"))
            .await
            .unwrap();
    }
    let before = store.read_all(0, 10_000).await.unwrap();
    drop(conversations);
    drop(store);

    let policy = dir.path().join("one-minute.yaml");
    std::fs::write(
        &policy,
        "alert_after_seconds: 60\nescalate_after_seconds: 600\n",
    )
    .unwrap();
    let output = chatledger(dir.path())
        .args([
            "sla",
            "recompute",
            "--policy",
            policy.to_str().unwrap(),
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-21",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8(output.stdout).unwrap();
    let partner = report
        .lines()
        .find(|l| l.starts_with("partner"))
        .unwrap_or_else(|| panic!("{report}"));
    let numbers: Vec<&str> = partner.split_whitespace().skip(1).collect();
    assert_eq!(
        numbers,
        vec!["1", "0", "2", "0"],
        "recorded 1 alert; a 1-minute policy: 2\n{report}"
    );
    assert!(
        report.contains("wamid.+919638120002") && report.contains("-/- -> alert/-"),
        "{report}"
    );

    let store = chatledger_adapters::SqliteStore::open(&db).await.unwrap();
    assert_eq!(
        store.read_all(0, 10_000).await.unwrap(),
        before,
        "the log is unchanged"
    );
}

/// `chatledger events` lists the log as JSON lines; `chatledger verify` passes a clean log and
/// names the first position of an edited or deleted event.
#[tokio::test]
async fn verify_finds_tampering_and_events_lists_the_log() {
    use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent};
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chatledger.db");
    {
        let store = chatledger_adapters::SqliteStore::open(&db).await.unwrap();
        for stream in ["s-1", "s-2"] {
            let events = (0..3)
                .map(|n| {
                    NewEvent::new(
                        uuid::Uuid::new_v4(),
                        "Happened",
                        serde_json::json!({"n": n, "stream": stream}),
                        Metadata::by("test"),
                    )
                })
                .collect();
            store
                .append(stream, ExpectedVersion::NoStream, events)
                .await
                .unwrap();
        }
    }
    let run = |args: &'static [&'static str]| {
        let mut command = chatledger(dir.path());
        command.args(args);
        async move { command.output().await.unwrap() }
    };

    let clean = run(&["verify"]).await;
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    let report = String::from_utf8(clean.stdout).unwrap();
    assert!(
        report.starts_with("verified 6 events up to position 6, head hash "),
        "{report}"
    );

    let listed = run(&["events"]).await;
    let lines: Vec<Value> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["metadata"]["actor"], "test");
    assert!(lines[0]["hash"].as_str().unwrap().len() == 64);
    // Logs go to stderr: a listing made while everything is logged neither waits on them nor
    // carries them.
    let mut chatty = chatledger(dir.path());
    chatty.env("RUST_LOG", "trace").arg("events");
    let listed = tokio::time::timeout(std::time::Duration::from_secs(60), chatty.output())
        .await
        .expect("`events` with every log line on ends")
        .unwrap();
    assert!(listed.status.success());
    assert!(!listed.stderr.is_empty(), "something was logged meanwhile");
    let stdout = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 6, "{stdout}");
    assert!(stdout
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["position"].is_u64())));
    let one = run(&["events", "--stream", "s-2", "--from", "5"]).await;
    let lines: Vec<&str> = std::str::from_utf8(&one.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 2, "s-2 from position 5: versions 1 and 2");

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE events SET data = '{\"n\":7,\"stream\":\"s-1\"}' WHERE position = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    let edited = run(&["verify"]).await;
    assert!(!edited.status.success());
    let message = String::from_utf8(edited.stderr).unwrap();
    assert!(
        message.contains("position 2") && message.contains("edited"),
        "{message}"
    );

    sqlx::query("UPDATE events SET data = '{\"n\":1,\"stream\":\"s-1\"}' WHERE position = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(
        run(&["verify"]).await.status.success(),
        "restored, it verifies again"
    );
    sqlx::query("DELETE FROM events WHERE position = 5")
        .execute(&mut conn)
        .await
        .unwrap();
    let deleted = run(&["verify"]).await;
    let message = String::from_utf8(deleted.stderr).unwrap();
    assert!(!deleted.status.success());
    assert!(
        message.contains("position 6") && message.contains("missing"),
        "{message}"
    );
}

/// The log lines `serve` writes before it listens.
async fn startup_log(mut command: Command) -> (Child, Vec<Value>) {
    let mut child = command
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .spawn()
        .expect("chatledger starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(START_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let listening = entry["message"] == "listening";
            seen.push(entry);
            if listening {
                return;
            }
        }
        panic!("chatledger exited before listening");
    })
    .await
    .expect("chatledger listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, seen)
}

/// Webhooks are closed by default: a channel whose checks have no secret set refuses every
/// webhook (401, nothing recorded) and `serve` says so at start, naming what to set; a channel
/// that says `auth: none` takes them unauthenticated, and `serve` says that too.
#[tokio::test]
async fn serve_says_at_start_which_webhooks_are_refused_and_which_are_open() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let dir = tempfile::tempdir().unwrap();
    let mut closed = chatledger(dir.path());
    closed
        .env("CHATLEDGER_CONFIG_DIR", config)
        .env_remove("PINBOT_WEBHOOK_SECRET")
        .env_remove("META_APP_SECRET");
    let (child, log) = startup_log(closed).await;
    let refused: Vec<&Value> = log
        .iter()
        .filter(|e| {
            e["level"] == "WARN"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("webhooks are refused"))
        })
        .collect();
    let channels: Vec<&str> = refused
        .iter()
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    assert_eq!(
        channels,
        ["9099039188", "8000247247", "9726724247", "9586924247"],
        "{log:?}"
    );
    assert_eq!(
        refused[0]["needs"],
        "META_APP_SECRET or PINBOT_WEBHOOK_SECRET"
    );
    let base = format!("http://{}", listening(&log));
    let response = reqwest::Client::new()
        .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
        .header("content-type", "application/json")
        .body(text_message(1, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("PINBOT_WEBHOOK_SECRET"),
        "{body}"
    );
    terminate(child).await;
    let listed = chatledger(dir.path())
        .args(["events", "--type", "MessageReceived"])
        .output()
        .await
        .unwrap();
    assert!(listed.status.success());
    assert!(
        listed.stdout.is_empty(),
        "a refused webhook recorded nothing"
    );

    let mut set = chatledger(dir.path());
    set.env("CHATLEDGER_CONFIG_DIR", config)
        .env("PINBOT_WEBHOOK_SECRET", "set")
        .env_remove("META_APP_SECRET");
    let (child, log) = startup_log(set).await;
    assert!(
        !log.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("webhooks are refused"))),
        "{log:?}"
    );
    assert!(
        log.iter().all(|e| !e.to_string().contains("\"set\"")),
        "the secret's value is not logged"
    );
    terminate(child).await;

    let open_config = tempfile::tempdir().unwrap();
    std::fs::write(
        open_config.path().join("channels.yaml"),
        "default_country: IN\nchannels:\n  - {key: \"9099039188\", number: \"919099039188\", stakeholder: partner, provider: pinbot, auth: none}\n",
    )
    .unwrap();
    let mut open = chatledger(dir.path());
    open.env("CHATLEDGER_CONFIG_DIR", open_config.path());
    let (child, log) = startup_log(open).await;
    let said = log
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("without authentication"))
        })
        .unwrap_or_else(|| panic!("no word of the open channel in {log:?}"));
    assert_eq!(said["channels"], "9099039188");
    let base = format!("http://{}", listening(&log));
    let response = reqwest::Client::new()
        .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
        .header("content-type", "application/json")
        .body(text_message(2, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "auth: none takes it");
    terminate(child).await;
}

/// The address of the "listening" line in a start-up log.
fn listening(log: &[Value]) -> String {
    log.iter()
        .find(|e| e["message"] == "listening")
        .and_then(|e| e["address"].as_str())
        .unwrap()
        .to_owned()
}

/// `chatledger forget` on a log a real server wrote: the customer's message text and name are
/// gone from every table, `verify` still passes, and forgetting again erases nothing more.
#[tokio::test]
async fn forget_on_the_command_line_erases_a_customer_and_verify_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = chatledger(dir.path());
    command
        .env(
            "CHATLEDGER_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        )
        .env("PINBOT_WEBHOOK_SECRET", "forget-test");
    let (child, base) = start(command).await;
    let client = reqwest::Client::new();
    for customer in [1, 2] {
        let response = client
            .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
            .header("content-type", "application/json")
            .header("x-webhook-secret", "forget-test")
            .body(text_message(customer, 7))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    wait_caught_up(&base).await;
    assert!(terminate(child).await.success());

    let run = |args: &'static [&'static str]| {
        let mut command = chatledger(dir.path());
        command
            .env(
                "CHATLEDGER_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
            )
            .args(args);
        async move { command.output().await.unwrap() }
    };
    let forgot = run(&["forget", "--customer", "9638100001", "--by", "request 12"]).await;
    assert!(
        forgot.status.success(),
        "{}",
        String::from_utf8_lossy(&forgot.stderr)
    );
    let said = String::from_utf8(forgot.stdout).unwrap();
    assert!(said.contains("+919638100001 in 1 conversation"), "{said}");
    // A server started again applies the erasure to the read models.
    let mut command = chatledger(dir.path());
    command.env(
        "CHATLEDGER_CONFIG_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
    );
    let (child, base) = start(command).await;
    wait_caught_up(&base).await;
    assert!(terminate(child).await.success());

    let db =
        chatledger_projections::read_db::ReadDb::open_sqlite(&dir.path().join("chatledger.db"))
            .await
            .unwrap();
    let mut everything = String::new();
    for table in db
        .fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'", &[])
        .await
        .unwrap()
    {
        let table = table.text(0).unwrap();
        everything.push_str(&format!("{:?}", db.dump_table(&table).await.unwrap()));
    }
    assert!(!everything.contains("customer 1"), "the name is gone");
    assert!(
        everything.contains("customer 2"),
        "the other customer stays"
    );
    assert!(everything.contains("[erased]"));

    let verified = run(&["verify"]).await;
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let again = run(&["forget", "--customer", "+919638100001"]).await;
    assert!(String::from_utf8(again.stdout)
        .unwrap()
        .starts_with("nothing to erase"));
}

#[tokio::test]
async fn secrets_rotate_needs_the_new_key_and_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let mut without_key = chatledger(dir.path());
    without_key.env_remove("CHATLEDGER_SECRETS_KEY");
    let stderr = failing(without_key, &["secrets", "rotate"]).await;
    assert_one_clear_line(&stderr, "CHATLEDGER_SECRETS_KEY");
    let mut bad_key = chatledger(dir.path());
    bad_key.env("CHATLEDGER_SECRETS_KEY", "c2hvcnQ=");
    let stderr = failing(bad_key, &["secrets", "rotate"]).await;
    assert_one_clear_line(&stderr, "32 bytes");
    let mut command = chatledger(dir.path());
    command
        .env(
            "CHATLEDGER_SECRETS_KEY",
            "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=",
        )
        .args(["secrets", "rotate"]);
    let output = command.output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("resealed the secrets of 0 credential(s) under key k-"),
        "{stdout}"
    );
}

/// A provider's API as the example channels reach it: records each request (path, the
/// `apikey` header, the body) and answers as the Cloud API does.
async fn fake_cloud_api() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>,
) {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(String, String, Value)>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let record = record.clone();
        async move {
            let path = request.uri().path().to_owned();
            let key = request
                .headers()
                .get("apikey")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let to = body["to"].clone();
            record.lock().unwrap().push((path, key, body));
            axum::Json(serde_json::json!({"messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": "wamid.sent.1"}]}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// The example configuration with the README's environment: `serve` says each channel can
/// send (and that its phone number id is still a placeholder), and a reply reaches the
/// provider.
#[tokio::test]
async fn the_example_configuration_sends_a_reply() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let (provider, seen) = fake_cloud_api().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = chatledger(dir.path());
    command
        .env("CHATLEDGER_CONFIG_DIR", config)
        .env("PINBOT_WEBHOOK_SECRET", "example-webhook-secret")
        .env("WA_API_KEY_1", "example-api-key")
        .env("ADMIN_TOKEN", "example-admin-token-0123456789")
        .env("PINBOT_API_BASE_URL", &provider);
    let (child, log) = startup_log(command).await;
    let placeholders: Vec<&str> = log
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("placeholder"))
        })
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    assert_eq!(
        placeholders,
        ["9099039188", "8000247247", "9726724247", "9586924247"],
        "{log:?}"
    );
    let base = format!("http://{}", listening(&log));
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
        .header("content-type", "application/json")
        .header("x-webhook-secret", "example-webhook-secret")
        // Written now: a reply goes only inside the 24-hour window.
        .body(
            text_message(1, 1).replace(
                "1763800000",
                &std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    .to_string(),
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let graphql = |query: &'static str, variables: Value| {
        client
            .post(format!("{base}/graphql"))
            .bearer_auth("example-admin-token-0123456789")
            .json(&serde_json::json!({"query": query, "variables": variables}))
            .send()
    };
    let mut chat_id = Value::Null;
    for _ in 0..100 {
        let answer: Value = graphql("{ chats { nodes { chatId } } }", Value::Null)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        chat_id = answer["data"]["chats"]["nodes"][0]["chatId"].clone();
        if chat_id.is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(chat_id.is_string(), "the message opened a chat");
    let sent: Value = graphql(
        "mutation($c: ID!) { sendReply(chatId: $c, text: \"On our way\") { messageId } }",
        serde_json::json!({"c": chat_id}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(sent["errors"].is_null(), "{sent}");
    for _ in 0..100 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (path, key, body) = &requests[0];
    assert_eq!(path, "/PLACEHOLDER-pinbot-id-of-9099039188/messages");
    assert_eq!(key, "example-api-key");
    assert_eq!(body["text"]["body"], "On our way");
    terminate(child).await;
}

/// `config check` passes the example and names each problem of a broken file by its line,
/// exit code 1.
#[tokio::test]
async fn config_check_names_the_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
    let good = chatledger(dir.path())
        .args(["--config-dir", example, "config", "check"])
        .output()
        .await
        .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("4 channels, no problems"));

    let broken = dir.path().join("config");
    std::fs::create_dir(&broken).unwrap();
    let channels = std::fs::read_to_string(format!("{example}/channels.yaml"))
        .unwrap()
        .replacen("provider: pinbot", "provider: carrier-pigeon", 1);
    std::fs::write(broken.join("channels.yaml"), &channels).unwrap();
    let line = channels
        .lines()
        .position(|l| l.contains("carrier-pigeon"))
        .unwrap()
        + 1;
    let failed = chatledger(dir.path())
        .args(["--config-dir", broken.to_str().unwrap(), "config", "check"])
        .output()
        .await
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let said = String::from_utf8(failed.stdout).unwrap();
    assert!(
        said.contains(&format!("channels.yaml:{line}:")) && said.contains("carrier-pigeon"),
        "{said}"
    );
}

/// The read models of the SQLite log in `dir`, every table as its rows in text, sorted (the
/// tables of read models that release had).
async fn read_models_in(dir: &Path) -> Vec<(String, Vec<Vec<Option<String>>>)> {
    use chatledger_projections::read_db::ReadDb;
    let db = ReadDb::open_sqlite(&dir.join("chatledger.db"))
        .await
        .unwrap();
    let mut dump = Vec::new();
    for projector in chatledger_projections::read_models::all() {
        for table in projector.tables() {
            if let Ok(rows) = db.dump_table(table).await {
                dump.push((table.to_string(), rows));
            }
        }
    }
    dump
}

/// A copy of a recorded log (and the read models its release built) in a fresh directory.
fn recorded_copy(name: &str) -> tempfile::TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/logs")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    for file in ["chatledger.db", "chatledger.read-models.db"] {
        std::fs::copy(from.join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// A log recorded by an earlier release (`tests/fixtures/logs/README.md` says which and how)
/// verifies, and `chatledger replay` rebuilds from it exactly the read models that release
/// built while it ran.
#[tokio::test]
async fn a_log_recorded_by_an_earlier_release_replays_into_the_same_read_models() {
    let name = "2026-12-02-c35a51d";
    let then = read_models_in(recorded_copy(name).path()).await;
    let rows: usize = then.iter().map(|(_, rows)| rows.len()).sum();
    assert!(
        rows > 20,
        "the recording holds a scenario, not an empty log: {rows} rows"
    );
    let dir = recorded_copy(name);
    let verified = chatledger(dir.path()).arg("verify").output().await.unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let replayed = chatledger(dir.path()).arg("replay").output().await.unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let now = read_models_in(dir.path()).await;
    for (table, before) in &then {
        let after = now.iter().find(|(t, _)| t == table).map(|(_, rows)| rows);
        assert_eq!(Some(before), after, "read model table {table}");
    }
    // Read models added since are built from the same log.
    assert!(now.len() >= then.len());
}

/// A fake Cloud API media endpoint: `GET /{id}` answers the file's link, `GET /files/{id}`
/// the file after `delay` (so that a process can be killed in the middle of fetches); it
/// counts the downloads of each file.
async fn fake_media_api(
    delay: Duration,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
) {
    use std::sync::{Arc, Mutex};
    let downloads: Arc<Mutex<std::collections::BTreeMap<String, usize>>> = Arc::default();
    let counted = downloads.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let base = url.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (counted, base) = (counted.clone(), base.clone());
        async move {
            use axum::response::IntoResponse;
            let path = request.uri().path().trim_start_matches('/').to_owned();
            let bytes = |id: &str| {
                let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
                jpeg.extend(id.bytes().cycle().take(20_000));
                jpeg
            };
            match path.strip_prefix("files/") {
                Some(id) => {
                    *counted.lock().unwrap().entry(id.to_owned()).or_default() += 1;
                    tokio::time::sleep(delay).await;
                    ([("content-type", "image/jpeg")], bytes(id)).into_response()
                }
                None => axum::Json(serde_json::json!({"messaging_product": "whatsapp",
                    "url": format!("{base}/files/{path}"), "mime_type": "image/jpeg",
                    "file_size": bytes(&path).len().to_string(), "id": path}))
                .into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, downloads)
}

/// A server killed (`kill -9`) while it fetches customers' images: the next one resumes the
/// fetches, and each image ends stored exactly once.
#[tokio::test]
async fn media_fetches_cut_by_a_kill_resume_and_each_file_is_recorded_once() {
    let (api, downloads) = fake_media_api(Duration::from_millis(400)).await;
    let dir = tempfile::tempdir().unwrap();
    let db = CrashDb::new(false, dir.path()).await;
    let server = |dir: &Path| {
        let mut command = crash_server(dir, &db);
        command
            .env("PINBOT_API_BASE_URL", &api)
            .env("WA_API_KEY_1", "media-test-key")
            .env("ADMIN_TOKEN", "media-admin-token-0123456789")
            .env("MEDIA_CONCURRENCY", "4")
            .env("MEDIA_FIRST_BACKOFF_MS", "50");
        command
    };
    let (first, base) = start(server(dir.path())).await;
    let client = reqwest::Client::new();
    const IMAGES: usize = 24;
    for n in 0..IMAGES {
        let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "c"}, "wa_id": format!("91963820{n:04}")}],
              "messages": [{"from": format!("91963820{n:04}"), "id": format!("wamid.img.{n}"), "timestamp": "1763800000",
                            "type": "image", "image": {"id": format!("img{n}"), "mime_type": "image/jpeg"}}]}}]}]});
        let response = client
            .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
            .header("content-type", "application/json")
            .header("x-webhook-secret", "crash-test")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Killed once some downloads are under way, and before they can all be done.
    for _ in 0..200 {
        if downloads.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut first = first;
    first.kill().await.unwrap();
    let started_before = downloads.lock().unwrap().len();
    assert!(
        started_before < IMAGES,
        "the kill came in the middle of the fetches"
    );

    let (second, base) = start(server(dir.path())).await;
    let stored = |events: &str| {
        events
            .lines()
            .filter(|l| l.contains("\"MediaStored\""))
            .count()
    };
    let mut events = String::new();
    for _ in 0..300 {
        let output = chatledger(dir.path())
            .env("DATABASE_URL", &db.database_url)
            .args(["events", "--type", "MediaStored"])
            .output()
            .await
            .unwrap();
        events = String::from_utf8(output.stdout).unwrap();
        if stored(&events) >= IMAGES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        stored(&events),
        IMAGES,
        "each image recorded once: {events}"
    );
    let twice = downloads
        .lock()
        .unwrap()
        .values()
        .filter(|n| **n > 1)
        .count();
    println!(
        "{started_before} of {IMAGES} downloads had started when the first server was killed; \
         {twice} were made again after the restart"
    );
    // Every file is in the store, under its conversation.
    let files = walk(&dir.path().join("chatledger-media"));
    assert_eq!(files.len(), IMAGES, "{files:?}");
    wait_caught_up(&base).await;
    terminate(second).await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn metrics_on_their_own_address_and_a_consent_record_for_auditors() {
    let dir = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_address = free.local_addr().unwrap();
    drop(free);
    let mut command = chatledger(dir.path());
    command
        .env(
            "CHATLEDGER_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        )
        .env("PINBOT_WEBHOOK_SECRET", "consent-test")
        .env("ADMIN_TOKEN", "consent-test-admin")
        .env("METRICS_LISTEN", metrics_address.to_string());
    let (child, base) = start(command).await;
    let client = reqwest::Client::new();
    let stop = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "contacts": [{"profile": {"name": "customer 1"}, "wa_id": "919638100001"}],
          "messages": [{"from": "919638100001", "id": "wamid.consent.1",
                        "timestamp": "1763800000", "type": "text", "text": {"body": "Stop"}}]}}]}]});
    let response = client
        .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
        .header("content-type", "application/json")
        .header("x-webhook-secret", "consent-test")
        .body(stop.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let consent =
        "{ customer(stakeholder: \"partner\", number: \"+919638100001\") { consent { granted } } }";
    let mut withdrawn = false;
    for _ in 0..300 {
        let answer: Value = client
            .post(format!("{base}/graphql"))
            .bearer_auth("consent-test-admin")
            .json(&serde_json::json!({"query": consent}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if answer["data"]["customer"]["consent"][0]["granted"] == false {
            withdrawn = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(withdrawn, "STOP withdrew marketing");
    // /metrics answers on its own address without a token, and on the main one only with one.
    let (status, _) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 401);
    let scraped = client
        .get(format!("http://{metrics_address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(
        text.contains("chatledger_webhooks_total{channel=\"9099039188\",outcome=\"recorded\"} 1"),
        "{text}"
    );
    assert!(terminate(child).await.success());

    let exported = chatledger(dir.path())
        .env(
            "CHATLEDGER_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config"),
        )
        .args(["consent", "--customer", "96381 00001"])
        .output()
        .await
        .unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(exported.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["customer"], "+919638100001");
    assert_eq!(lines[0]["event_type"], "ConsentWithdrawn");
    assert_eq!(lines[0]["granted"], false);
    assert_eq!(lines[0]["change"]["evidence"], "wamid.consent.1");
    assert_eq!(
        lines[0]["summary"],
        "withdrew marketing by keyword (evidence: wamid.consent.1), recorded by customer"
    );
    assert_eq!(lines[0]["hash"].as_str().unwrap().len(), 64);
}
