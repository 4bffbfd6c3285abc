//! A log of realistic conversations, replayed into every read model, and the reactors
//! starting over it.

use crate::*;

pub(crate) fn customer_phone(i: u64) -> String {
    format!("+9170{:08}", i)
}

/// One conversation's ten events: opened, two customer messages, the SLA clock, an
/// assignment, a tag, a reply with its dispatch and two receipts; every fifth conversation's
/// last message is an SLA alert instead, every seventh a context change.
pub(crate) fn conversation_events(i: u64) -> (String, Vec<NewEvent>) {
    let phone = customer_phone(i);
    let conversation = chatledger_tests::messages::partner_conversation(&phone);
    let stream = conversation.stream();
    let chat_id = chatledger_core::conversation::new_id();
    let now = Utc::now();
    let message = |n: u64, text: &str| ConversationEvent::MessageReceived {
        chat_id,
        received_at: now,
        message: Box::new(InboundMessage {
            provider: "pinbot".into(),
            customer: Customer {
                phone: Some(phone.clone()),
                user_id: None,
                name: Some(format!("Partner {i}")),
            },
            sent_at: Some(now),
            raw: json!({"from": phone, "id": format!("wamid.bench.{i}.{n}"), "type": "text", "text": {"body": text}}),
            ..chatledger_tests::messages::text_message(
                &format!("wamid.bench.{i}.{n}"),
                &phone,
                text,
            )
        }),
    };
    let asha = ExecutiveRef {
        id: Uuid::from_u128(u128::from(i % 7 + 1)),
        name: format!("Executive {}", i % 7 + 1),
    };
    let reply_id = chatledger_core::conversation::new_id();
    let receipt = |status: &str| ConversationEvent::ReceiptRecorded {
        chat_id: Some(chat_id),
        known_message: true,
        received_at: now,
        receipt: Box::new(Receipt {
            provider: "pinbot".into(),
            provider_message_id: format!("wamid.out.{i}"),
            status: status.into(),
            at: Some(now),
            recipient: Customer {
                phone: Some(phone.clone()),
                ..Customer::default()
            },
            errors: vec![],
            callback: None,
            raw: json!({"id": format!("wamid.out.{i}"), "status": status}),
        }),
    };
    let last = if i.is_multiple_of(5) {
        ConversationEvent::SlaAlertRaised(SlaBreach {
            chat_id,
            customer_message: format!("wamid.bench.{i}.1"),
            clock_started_at: now,
            due_at: now,
            fired_at: now,
            policy_version: 0,
            threshold_seconds: 180,
            notification: None,
        })
    } else if i.is_multiple_of(7) {
        let mut changes = serde_json::Map::new();
        changes.insert("documents_status".into(), json!("Approved"));
        ConversationEvent::ContextChanged {
            conversation: conversation.clone(),
            changes,
            previous: serde_json::Map::new(),
            context: json!({"documents_status": "Approved"}),
            identity_fields: vec![],
            identity_changed: false,
            chat_id: Some(chat_id),
            changed_at: now,
        }
    } else {
        message(2, "thank you, that helps")
    };
    let events = vec![
        ConversationEvent::ChatOpened {
            chat_id,
            conversation,
            reason: OpenReason::FirstMessage,
            context: json!({}),
            previous_chat_id: None,
            opened_at: now,
        },
        message(1, "my payout has not arrived yet, can you check?"),
        ConversationEvent::SlaClockStarted {
            chat_id,
            stakeholder: "partner".into(),
            customer_message: format!("wamid.bench.{i}.1"),
            started_at: now,
        },
        ConversationEvent::ChatAssigned {
            chat_id,
            executive: asha.clone(),
            rule: AssignmentRule::RoundRobin,
            candidates: vec![asha.clone()],
            by: None,
            cause: chat_id,
            assigned_at: now,
        },
        ConversationEvent::TagApplied {
            chat_id,
            tag: "Payment".into(),
            by: asha.name.clone(),
            at: now,
        },
        ConversationEvent::ReplyQueued {
            chat_id,
            message_id: reply_id,
            to: CustomerKey::Phone(phone.clone()),
            kind: "text".into(),
            text: Some("It goes out today.".into()),
            template: None,
            media: None,
            purpose: OutboundPurpose::Reply,
            by: asha.name.clone(),
            queued_at: now,
        },
        ConversationEvent::MessageDispatched {
            chat_id,
            message_id: reply_id,
            provider_message_id: format!("wamid.out.{i}"),
            attempts: 1,
            dispatched_at: now,
        },
        receipt("delivered"),
        receipt("read"),
        last,
    ];
    let events = events
        .iter()
        .map(|e| e.to_new_event(&stream, Metadata::by("bench")))
        .collect();
    (stream, events)
}

/// Appends `conversations` conversations (personal data sealed, as the server does) with 8
/// appenders; returns conversations/s.
pub(crate) async fn build_log(db: &Db, conversations: u64) -> Result<f64, String> {
    const WRITERS: u64 = 8;
    let (store, _) = db.open().await?;
    let store: Arc<dyn EventStore> = Arc::new(PersonalData::new(store));
    // A policy whose thresholds no clock of this log crosses while the bench runs, so that a
    // server started on it folds the log and raises nothing.
    let policy = chatledger_core::sla::SlaPolicy {
        alert_after_seconds: QUIET_SLA.0,
        escalate_after_seconds: QUIET_SLA.1,
        stakeholders: Default::default(),
    };
    store
        .append(
            chatledger_core::sla::SLA_POLICY_STREAM,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                Uuid::new_v4(),
                chatledger_core::sla::SLA_POLICY_EVENT,
                json!(policy),
                Metadata::by("bench"),
            )],
        )
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = writer;
            while i < conversations {
                let (stream, events) = conversation_events(i);
                store
                    .append(&stream, ExpectedVersion::NoStream, events)
                    .await
                    .map_err(|e| e.to_string())?;
                i += WRITERS;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(conversations as f64 / started.elapsed().as_secs_f64())
}

/// Runs `chatledger replay` on `db` as a child process: (events in the log, seconds, peak RSS
/// in MB).
pub(crate) fn replay(db: &Db) -> Result<(u64, f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let output = std::process::Command::new(exe)
        .args(["__chatledger", "--database-url", &db.url(), "replay"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(format!(
            "replay failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // SAFETY: getrusage only writes into the struct it is given.
    let rss_kb = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage.ru_maxrss
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        println!("    replay | {line}");
    }
    let events = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .find_map(|line| {
            line.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .find(|w| w[1].starts_with("events"))
                .and_then(|w| w[0].replace(',', "").parse::<u64>().ok())
        })
        .unwrap_or_default();
    Ok((events, seconds, rss_kb as f64 / 1024.0))
}

/// The SLA thresholds (alert, escalation) of the replay log, in seconds: ten and twenty days.
pub(crate) const QUIET_SLA: (u64, u64) = (864_000, 1_728_000);

/// How long `serve` takes, from its start, until every reactor and view has folded the log as
/// it stood at the start: first with no snapshot (the whole log), then again after a graceful
/// stop has kept them. Milliseconds each.
pub(crate) async fn reactors_start(db: &Db) -> Result<(f64, f64), String> {
    const REACTORS: [&str; 5] = [
        "dispatcher",
        "SLA timers",
        "assigner",
        "integrations",
        "sessions",
    ];
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // The example configuration, with the log's SLA policy: what is measured is folding, not
    // raising the alerts of 100,000 waiting customers.
    let config = tempfile::tempdir().map_err(|e| e.to_string())?;
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"));
    for file in ["channels.yaml", "tags.yaml"] {
        std::fs::copy(example.join(file), config.path().join(file)).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(config.path().join("context")).map_err(|e| e.to_string())?;
    std::fs::copy(
        example.join("context/partner.yaml"),
        config.path().join("context/partner.yaml"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        config.path().join("sla.yaml"),
        format!(
            "alert_after_seconds: {}\nescalate_after_seconds: {}\nstakeholders: {{}}\n",
            QUIET_SLA.0, QUIET_SLA.1
        ),
    )
    .map_err(|e| e.to_string())?;
    let config = config.path();
    let client = reqwest::Client::new();
    let mut figures = Vec::new();
    for _ in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let head = {
            let (store, _) = db.open().await?;
            store.head_position().await.map_err(|e| e.to_string())?
        };
        let started = Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args(["__chatledger", "--database-url", &db.url(), "serve"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CHATLEDGER_CONFIG_DIR", config)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let ready = loop {
            if started.elapsed() > Duration::from_secs(600) {
                break Err("the reactors did not fold the log within 10 minutes".to_owned());
            }
            let answer = client
                .get(format!("http://127.0.0.1:{port}/api/health/ready"))
                .send()
                .await;
            if let Ok(answer) = answer {
                if let Ok(body) = answer.json::<Value>().await {
                    let reactors = &body["reactors"];
                    if REACTORS
                        .iter()
                        .all(|r| reactors[r]["position"].as_u64().is_some_and(|p| p >= head))
                    {
                        break Ok(started.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // SIGTERM: a graceful stop keeps the snapshots.
        // SAFETY: kill only sends a signal to the child started above.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().map_err(|e| e.to_string())?;
        figures.push(ready?);
    }
    Ok((figures[0], figures[1]))
}
