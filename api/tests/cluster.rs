//! Several real `serve` processes on one PostgreSQL database, and a fake provider that counts
//! what it receives: every reply and every SLA notification reaches it once, whichever
//! process queued it, when a process joins under load, and when the one sending is killed.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatledger_core::conversation::{ConversationEvent, DecodedEvent};
use chatledger_core::EventStore;
use serde_json::{json, Value};
use support::*;
use tokio::process::{Child, Command};

const SECRET: &str = "cluster-webhook-secret";
const ADMIN: &str = "cluster-admin-token-0123456789";
/// A guard against hanging, not a speed requirement.
const SETTLE_GUARD: Duration = Duration::from_secs(90);

/// One test at a time: each runs several servers, each with its own connections.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The provider, as Meta's Cloud API (through Pinbot's base URL) answers: each message is
/// counted by the id we send in `biz_opaque_callback_data`, answered after `delay` with a
/// wamid of its own, and reported back as `sent` with a status webhook (echoing our id, as
/// Meta does) to the first process that takes it.
#[derive(Clone)]
struct Provider {
    url: String,
    received: Arc<Mutex<BTreeMap<String, usize>>>,
    /// Where status webhooks go: the processes still up.
    webhooks: Arc<Mutex<Vec<String>>>,
}

impl Provider {
    async fn start(delay: Duration) -> Self {
        let received: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let webhooks: Arc<Mutex<Vec<String>>> = Arc::default();
        let (count, targets) = (received.clone(), webhooks.clone());
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (count, targets) = (count.clone(), targets.clone());
            async move {
                let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let ours = body["biz_opaque_callback_data"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let to = body["to"].as_str().unwrap_or_default().to_owned();
                *count.lock().unwrap().entry(ours.clone()).or_default() += 1;
                let wamid = format!("wamid.sent.{ours}");
                // The receipt goes out whether or not the sender is still there to hear the
                // answer.
                tokio::spawn(report_sent(targets, wamid.clone(), ours, to.clone(), delay));
                tokio::time::sleep(delay).await;
                axum::Json(json!({"messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": to}], "messages": [{"id": wamid}]}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Provider {
            url,
            received,
            webhooks,
        }
    }

    fn received(&self) -> BTreeMap<String, usize> {
        self.received.lock().unwrap().clone()
    }
}

async fn report_sent(
    targets: Arc<Mutex<Vec<String>>>,
    wamid: String,
    ours: String,
    to: String,
    delay: Duration,
) {
    tokio::time::sleep(delay + Duration::from_millis(20)).await;
    let status = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"},
          "statuses": [{"id": wamid, "status": "sent", "timestamp": unix_now().to_string(),
                        "recipient_id": to, "biz_opaque_callback_data": ours}]}}]}]});
    let client = reqwest::Client::new();
    for _ in 0..50 {
        let bases = targets.lock().unwrap().clone();
        for base in bases {
            let posted = client
                .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
                .header("x-webhook-secret", SECRET)
                .json(&status)
                .send()
                .await;
            if posted.is_ok_and(|r| r.status() == 200) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The example configuration with an SLA policy of `alert` / `escalate` seconds.
fn config_with_sla(dir: &Path, alert: u64, escalate: u64) -> std::path::PathBuf {
    let config = dir.join("config");
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"));
    copy_dir(example, &config);
    std::fs::write(
        config.join("sla.yaml"),
        format!("alert_after_seconds: {alert}\nescalate_after_seconds: {escalate}\nstakeholders: {{}}\n"),
    )
    .unwrap();
    config
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Servers of one installation: one database, one configuration, one provider.
struct Installation {
    dir: tempfile::TempDir,
    db: CrashDb,
    config: std::path::PathBuf,
    provider: Provider,
    /// The log, read as the tests check it.
    store: chatledger_adapters::PostgresStore,
}

impl Installation {
    async fn new(sla: (u64, u64), delay: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = CrashDb::new(true, dir.path()).await;
        let config = config_with_sla(dir.path(), sla.0, sla.1);
        let provider = Provider::start(delay).await;
        let schema = db.schema.as_ref().unwrap();
        let store =
            chatledger_adapters::PostgresStore::connect_lazy(&schema.url, Some(&schema.name))
                .unwrap();
        Installation {
            dir,
            db,
            config,
            provider,
            store,
        }
    }

    fn server(&self) -> Command {
        let mut command = chatledger(self.dir.path());
        command
            .env("DATABASE_URL", &self.db.database_url)
            .env("CHATLEDGER_CONFIG_DIR", &self.config)
            .env("PINBOT_WEBHOOK_SECRET", SECRET)
            .env("WA_API_KEY_1", "cluster-api-key")
            .env("ADMIN_TOKEN", ADMIN)
            .env("PINBOT_API_BASE_URL", &self.provider.url)
            .env("DISPATCH_RECIPIENT_INTERVAL_MS", "0")
            .env("DISPATCH_UNKNOWN_GRACE_SECONDS", "3")
            .env("SLA_ALERT_GROUP_NUMBER", "+919000000001")
            .env("SLA_SHIFT_LEAD_NUMBER", "+919000000002");
        command
    }

    /// Starts a server and lets the provider report to it.
    async fn start(&self) -> (Child, String) {
        let (child, base) = start(self.server()).await;
        self.provider.webhooks.lock().unwrap().push(base.clone());
        (child, base)
    }

    /// Every conversation event in the log, as stored (message ids are not personal data).
    async fn log(&self) -> Vec<(String, ConversationEvent)> {
        self.log_with_actors()
            .await
            .into_iter()
            .map(|(stream, _, event)| (stream, event))
            .collect()
    }

    /// The same, with who recorded each event.
    async fn log_with_actors(&self) -> Vec<(String, String, ConversationEvent)> {
        let store = &self.store;
        let mut events = Vec::new();
        let mut from = 0;
        loop {
            let batch = store.read_all(from, 5_000).await.unwrap();
            let Some(last) = batch.last() else { break };
            from = last.position;
            for event in batch {
                let (stream, actor) = (event.stream.clone(), event.metadata.actor.clone());
                if let Ok(Some(conversation)) = DecodedEvent::new(event).conversation() {
                    events.push((stream, actor, conversation.clone()));
                }
            }
        }
        events
    }
}

/// What the log says was to be sent and what it says was sent.
#[derive(Debug, Default)]
struct Sends {
    /// Replies queued and SLA notifications raised: message id → stream.
    intended: BTreeMap<String, String>,
    /// Message id → the provider ids recorded as its outcome.
    dispatched: BTreeMap<String, Vec<String>>,
    failed: BTreeSet<String>,
    /// Tries recorded, per message.
    tries: BTreeMap<String, u32>,
    /// (stream, customer message, level) of each alert and escalation recorded.
    alerts: Vec<(String, String, &'static str)>,
}

fn sends(log: &[(String, ConversationEvent)]) -> Sends {
    let mut sends = Sends::default();
    for (stream, event) in log {
        match event {
            ConversationEvent::ReplyQueued { message_id, .. } => {
                sends
                    .intended
                    .insert(message_id.to_string(), stream.clone());
            }
            ConversationEvent::SlaAlertRaised(breach) | ConversationEvent::SlaEscalated(breach) => {
                let level = if matches!(event, ConversationEvent::SlaAlertRaised(_)) {
                    "alert"
                } else {
                    "escalation"
                };
                sends
                    .alerts
                    .push((stream.clone(), breach.customer_message.clone(), level));
                if let Some(notification) = &breach.notification {
                    sends
                        .intended
                        .insert(notification.message_id.to_string(), stream.clone());
                }
            }
            ConversationEvent::DispatchAttempted { message_id, .. } => {
                *sends.tries.entry(message_id.to_string()).or_default() += 1;
            }
            ConversationEvent::MessageDispatched {
                message_id,
                provider_message_id,
                ..
            } => sends
                .dispatched
                .entry(message_id.to_string())
                .or_default()
                .push(provider_message_id.clone()),
            ConversationEvent::MessageDispatchFailed { message_id, .. } => {
                sends.failed.insert(message_id.to_string());
            }
            _ => {}
        }
    }
    sends
}

fn inbound(customer: usize) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "contacts": [{"profile": {"name": format!("customer {customer}")}, "wa_id": format!("9196382{customer:05}")}],
          "messages": [{"from": format!("9196382{customer:05}"), "id": format!("wamid.cluster.{customer}"),
                        "timestamp": unix_now().to_string(), "type": "text", "text": {"body": "where is my cab?"}}]}}]}]})
    .to_string()
}

async fn graphql(base: &str, query: &str, variables: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(ADMIN)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `customers` customers write in, each to one of `bases` in turn; returns their chat ids
/// once every chat is open.
async fn customers_write(bases: &[String], customers: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    for customer in 0..customers {
        let response = client
            .post(format!(
                "{}/api/chats/whatsapp_chat/9099039188",
                bases[customer % bases.len()]
            ))
            .header("content-type", "application/json")
            .header("x-webhook-secret", SECRET)
            .body(inbound(customer))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let started = Instant::now();
    loop {
        let answer = graphql(
            &bases[0],
            "{ chats(first: 200) { nodes { chatId } } }",
            Value::Null,
        )
        .await;
        let chats: Vec<String> = answer["data"]["chats"]["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| n["chatId"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if chats.len() == customers {
            return chats;
        }
        assert!(
            started.elapsed() < SETTLE_GUARD,
            "chats did not open: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn reply(base: &str, chat: &str) {
    let sent = graphql(
        base,
        "mutation($c: ID!) { sendReply(chatId: $c, text: \"Your cab is on its way\") { messageId } }",
        json!({"c": chat}),
    )
    .await;
    assert!(sent["errors"].is_null(), "{sent}");
}

/// Each process's partitions and the processes it counts, from readiness, once every process
/// is ready.
async fn owned(bases: &[String]) -> Vec<(u64, BTreeSet<u64>)> {
    let mut shares = Vec::new();
    for base in bases {
        let (status, body) = get(&format!("{base}/api/health/ready")).await;
        if status != 200 {
            return Vec::new();
        }
        let owned = body["ownership"]["owned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        shares.push((body["ownership"]["members"].as_u64().unwrap(), owned));
    }
    shares
}

/// Waits until the processes at `bases` count each other and share all 64 partitions fairly:
/// each owns some and at most its share, no two the same; returns how long that took.
async fn shared_out(bases: &[String]) -> Duration {
    let started = Instant::now();
    let fair = 64usize.div_ceil(bases.len());
    loop {
        let shares = owned(bases).await;
        let total: usize = shares.iter().map(|(_, s)| s.len()).sum();
        let union: BTreeSet<u64> = shares.iter().flat_map(|(_, s)| s).copied().collect();
        if shares.len() == bases.len()
            && shares.iter().all(|(members, s)| {
                *members == bases.len() as u64 && !s.is_empty() && s.len() <= fair
            })
            && total == 64
            && union.len() == 64
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < SETTLE_GUARD,
            "the partitions were not shared out: {shares:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until everything the log says is to be sent has an outcome and at least `alerts`
/// alerts and escalations are recorded; then a moment more, for any second send to show.
async fn settled(installation: &Installation, alerts: usize) -> Sends {
    let started = Instant::now();
    loop {
        let sends = sends(&installation.log().await);
        let open: Vec<&String> = sends
            .intended
            .keys()
            .filter(|id| !sends.dispatched.contains_key(*id) && !sends.failed.contains(*id))
            .collect();
        // At least `alerts` notifications of streams alerted and escalated both (a customer
        // answered just after their alert is never escalated: a bare count is not enough).
        let escalated = sends
            .alerts
            .iter()
            .filter(|(stream, ..)| sends.alerts.iter().filter(|(s, ..)| s == stream).count() >= 2)
            .count()
            >= alerts;
        if open.is_empty() && sends.alerts.len() >= alerts && escalated {
            break;
        }
        assert!(
            started.elapsed() < SETTLE_GUARD,
            "not everything was sent: {} open, {} alerts",
            open.len(),
            sends.alerts.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sends(&installation.log().await)
}

/// What must hold whatever happened: each message the log meant to send reached the provider
/// exactly once, its recorded outcome names what the provider answered, nothing failed, and
/// each alert or escalation was raised once.
fn each_sent_once(sends: &Sends, received: &BTreeMap<String, usize>) {
    assert!(sends.failed.is_empty(), "failed: {:?}", sends.failed);
    let twice: Vec<(&String, &usize)> = received.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let intended: BTreeSet<&String> = sends.intended.keys().collect();
    let reached: BTreeSet<&String> = received.keys().collect();
    assert_eq!(
        intended, reached,
        "the provider got what the log meant to send"
    );
    for (message, outcomes) in &sends.dispatched {
        assert_eq!(
            outcomes,
            &vec![format!("wamid.sent.{message}")],
            "one outcome per message, naming the provider's id"
        );
    }
    let mut alerts = sends.alerts.clone();
    alerts.sort();
    alerts.dedup();
    assert_eq!(alerts.len(), sends.alerts.len(), "an alert raised twice");
}

/// Two processes, then a third that joins while replies are going out: 100 replies spread
/// over the processes and an alert and escalation for each of 20 unanswered customers, each
/// sent once.
#[tokio::test]
async fn replies_and_alerts_over_two_then_three_processes_are_each_sent_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let installation = Installation::new((15, 18), Duration::from_millis(30)).await;
    let (a, base_a) = installation.start().await;
    let (b, base_b) = installation.start().await;
    shared_out(&[base_a.clone(), base_b.clone()]).await;

    let chats = customers_write(&[base_a.clone(), base_b.clone()], 120).await;
    // The first 50 replies over two processes; a third process joins under load; the next
    // 50 go over all three. The last 20 customers wait past their alert and escalation.
    for (i, chat) in chats[..50].iter().enumerate() {
        reply([&base_a, &base_b][i % 2], chat).await;
    }
    let (c, base_c) = installation.start().await;
    for (i, chat) in chats[50..100].iter().enumerate() {
        reply([&base_a, &base_b, &base_c][i % 3], chat).await;
    }
    let bases = [base_a, base_b, base_c];
    // Each takes a fair share (at most 22 of 64), the newcomer too.
    shared_out(&bases).await;

    let sends = settled(&installation, 40).await;
    let received = installation.provider.received();
    each_sent_once(&sends, &received);
    let replies = sends.intended.len() - sends.alerts.len();
    assert_eq!(replies, 100, "{sends:?}");
    let unanswered: BTreeSet<&String> = sends.alerts.iter().map(|(s, ..)| s).collect();
    assert!(unanswered.len() >= 20, "{:?}", sends.alerts);
    // The 20 customers nobody answered got one alert and one escalation each; one answered
    // just after their alert got that alert alone (each_sent_once: nothing raised twice).
    let count = |stream: &String| sends.alerts.iter().filter(|(s, ..)| s == stream).count();
    let both = unanswered.iter().filter(|s| count(s) == 2).count();
    assert!(both >= 20, "{:?}", sends.alerts);
    for stream in &unanswered {
        assert!(count(stream) <= 2, "{stream}: {:?}", sends.alerts);
    }
    for child in [a, b, c] {
        terminate(child).await;
    }
}

/// kill -9 of a process in the middle of sending: the survivor takes its partitions over,
/// every queued reply is sent, none twice, and the log's record of each matches the
/// provider's.
#[tokio::test]
async fn a_process_killed_mid_send_is_replaced_and_nothing_is_sent_twice() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A slow provider, so that sends are in flight when the kill comes.
    let installation = Installation::new((600, 1200), Duration::from_millis(150)).await;
    let (mut a, base_a) = installation.start().await;
    let (b, base_b) = installation.start().await;
    shared_out(&[base_a.clone(), base_b.clone()]).await;

    let chats = customers_write(&[base_a.clone(), base_b.clone()], 100).await;
    for (i, chat) in chats.iter().enumerate() {
        reply([&base_a, &base_b][i % 2], chat).await;
    }
    let started = Instant::now();
    while installation.provider.received().len() < 20 {
        assert!(started.elapsed() < SETTLE_GUARD, "nothing was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill().await.unwrap();
    let killed_at = Instant::now();
    installation
        .provider
        .webhooks
        .lock()
        .unwrap()
        .retain(|base| *base != base_a);
    let took_over = shared_out(std::slice::from_ref(&base_b)).await;
    println!(
        "the survivor owned every partition {:.2} s after the kill (checked every 50 ms; {:.2} s in all)",
        took_over.as_secs_f64(),
        killed_at.elapsed().as_secs_f64()
    );

    let sends = settled(&installation, 0).await;
    let received = installation.provider.received();
    each_sent_once(&sends, &received);
    assert_eq!(sends.intended.len(), 100);
    // How the tries the killed process left without an outcome ended: settled by the
    // provider's receipt (as are sends whose receipt beat the sender's own record), or, when
    // the request never reached the provider, sent again after the grace.
    let log = installation.log_with_actors().await;
    let by_receipt = log
        .iter()
        .filter(|(_, actor, event)| {
            matches!(event, ConversationEvent::MessageDispatched { .. })
                && actor != "reactor:dispatcher"
        })
        .count();
    let tried_again = sends.tries.values().filter(|tries| **tries > 1).count();
    println!(
        "outcomes recorded from the provider's receipt: {by_receipt}; messages sent again after the grace: {tried_again}"
    );
    terminate(b).await;
}

/// A second `serve` on the same SQLite file refuses to start, with one clear line; the first
/// goes on serving.
#[tokio::test]
async fn a_second_process_on_one_sqlite_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (first, base) = start(chatledger(dir.path())).await;
    let stderr = failing(
        chatledger(dir.path()),
        &["serve", "--listen", "127.0.0.1:0"],
    )
    .await;
    assert_one_clear_line(&stderr, "another chatledger process is serving");
    let (status, _) = get(&format!("{base}/api/health/ready")).await;
    assert_eq!(status, 200, "the first goes on");
    assert!(terminate(first).await.success());
    // Once the first has stopped, a new one starts.
    let (again, _) = start(chatledger(dir.path())).await;
    assert!(terminate(again).await.success());
}

/// `chatledger cluster` names each process up with its partitions, and the read models'
/// checkpoints.
#[tokio::test]
async fn cluster_shows_who_owns_what() {
    let _one = ONE_AT_A_TIME.lock().await;
    let installation = Installation::new((600, 1200), Duration::ZERO).await;
    let (a, base_a) = installation.start().await;
    let (b, base_b) = installation.start().await;
    shared_out(&[base_a.clone(), base_b.clone()]).await;
    let output = installation.server().arg("cluster").output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["mode"], "postgres");
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{report}");
    let pids: HashMap<u32, usize> = [&a, &b]
        .iter()
        .map(|c| c.id().unwrap())
        .zip([0, 1])
        .collect();
    let mut total = 0;
    for member in members {
        let name = member["name"].as_str().unwrap();
        let pid: u32 = name.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(pids.contains_key(&pid), "{name} is one of ours");
        total += member["partitions"].as_array().unwrap().len();
    }
    assert_eq!(total, 64, "{report}");
    assert_eq!(report["unowned"], json!([]));
    assert!(
        report["read_models"]["chats"]["checkpoint"].is_u64(),
        "{report}"
    );
    // Readiness says the same of each process, with how far each reactor has got.
    let (_, ready) = get(&format!("{base_a}/api/health/ready")).await;
    assert_eq!(ready["ownership"]["mode"], "postgres", "{ready}");
    assert_eq!(ready["ownership"]["members"], 2, "{ready}");
    for reactor in [
        "dispatcher",
        "SLA timers",
        "assigner",
        "integrations",
        "sessions",
    ] {
        assert!(
            ready["reactors"][reactor]["lag"].is_u64(),
            "{reactor} in {ready}"
        );
    }
    for child in [a, b] {
        terminate(child).await;
    }
}
