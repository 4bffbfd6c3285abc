//! Reactors start from their last snapshot and fold only the log after it: what was pending
//! or running when the snapshot was kept is acted on once, and what the snapshot says stands.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatledger_adapters::whatsapp::send::{Endpoint, HttpSender};
use chatledger_application::conversations::Conversations;
use chatledger_core::conversation::{ConversationCommand, InboundMessage};
use chatledger_core::{EventStore, Metadata};
use chatledger_projections::clock::{Clock, ManualClock};
use chatledger_projections::dispatch::{DispatchLimits, Dispatcher};
use chatledger_projections::ownership::Ownership;
use chatledger_projections::sla::{SlaNotifications, SlaTimers};
use chatledger_projections::snapshots::Snapshots;
use chatledger_projections::tail::LogTail;
use chatledger_tests::db::Backend;
use chrono::Utc;
use common::FakeProvider;
use serde_json::Value;
use uuid::Uuid;

/// A customer writes in on their own stream, at `at`.
async fn customer_writes(
    store: &Arc<dyn EventStore>,
    phone: &str,
    at: chrono::DateTime<Utc>,
) -> (String, Uuid) {
    let conversation = chatledger_tests::messages::partner_conversation(phone);
    let stream = conversation.stream();
    let chat_id = Uuid::new_v4();
    let message = InboundMessage {
        sent_at: Some(at),
        ..chatledger_tests::messages::text_message(&format!("wamid.{phone}"), phone, "hello?")
    };
    Conversations::new(store.clone())
        .handle(
            &stream,
            vec![ConversationCommand::ReceiveMessage {
                conversation,
                message: Box::new(message),
                new_chat_id: chat_id,
                now: at,
            }],
            &Metadata::by("test"),
        )
        .await
        .unwrap();
    (stream, chat_id)
}

/// The last snapshot of `reactor`, once there is one.
async fn snapshot_of(
    snapshots: &Snapshots,
    store: &Arc<dyn EventStore>,
    reactor: &str,
) -> (u64, Value) {
    for _ in 0..300 {
        if let Some(kept) = snapshots.load::<Value>(reactor, 1, store.as_ref()).await {
            return kept;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{reactor} kept no snapshot");
}

/// Runs `reactor` until it has folded the log, then stops it: it keeps a snapshot as it stops.
async fn run_then_stop<F: std::future::Future<Output = ()> + Send + 'static>(
    run: impl FnOnce(tokio::sync::watch::Receiver<bool>) -> F,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run(stopped));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("it stops")
        .unwrap();
}

fn notifications() -> SlaNotifications {
    SlaNotifications {
        alert_to: None,
        escalate_to: None,
        alert_template: "sla_alert".into(),
        escalation_template: "sla_escalation".into(),
        language: "en".into(),
    }
}

/// The SLA timers keep each running clock; started again from that snapshot, an alert that
/// fell due meanwhile fires once, and a clock the snapshot does not hold is not looked for in
/// the log before it.
async fn sla_timers_start_from_their_snapshot(backend: Backend) {
    let (db, store) = backend.open().await;
    let snapshots = Snapshots::new(db.read_db().await);
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let received = clock.now();
    let (kept_stream, _) = customer_writes(&store, "+919638100001", received).await;
    let (dropped_stream, _) = customer_writes(&store, "+919638100002", received).await;
    let timers = || {
        SlaTimers::new(
            store.clone(),
            Arc::new(Conversations::new(store.clone())),
            clock.clone(),
            notifications(),
        )
        .remembered_in(snapshots.clone())
    };
    let first = timers();
    let tail = LogTail::new(store.clone());
    run_then_stop(move |stopped| first.run(tail, stopped)).await;
    let (position, mut view) = snapshot_of(&snapshots, &store, "SLA timers").await;
    assert_eq!(position, store.head_position().await.unwrap());
    assert_eq!(
        view["streams"][&kept_stream]["clock"]["customer_message"], "wamid.+919638100001",
        "{view}"
    );
    // The snapshot is what the next start trusts: one clock taken out of it is not folded
    // again from the log before it.
    view["streams"]
        .as_object_mut()
        .unwrap()
        .remove(&dropped_stream);
    snapshots.save("SLA timers", 1, position, &view).await;

    clock.advance(chrono::Duration::seconds(200));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(timers().run(LogTail::new(store.clone()), stopped));
    let alerts = |stream: String| {
        let store = store.clone();
        async move {
            store
                .read_stream(&stream, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.event_type == "SlaAlertRaised")
                .count()
        }
    };
    for _ in 0..300 {
        if alerts(kept_stream.clone()).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send_replace(true);
    assert_eq!(alerts(kept_stream).await, 1, "the kept clock fires once");
    assert_eq!(
        alerts(dropped_stream).await,
        0,
        "the log before the snapshot is not read again"
    );
}

/// A dispatcher that owned nothing kept a message pending in its snapshot; the next one
/// starts from it, reads that stream for the message and sends it once, with what was queued
/// after the snapshot.
async fn the_dispatcher_starts_from_its_snapshot(backend: Backend) {
    let (db, store) = backend.open().await;
    let snapshots = Snapshots::new(db.read_db().await);
    let provider = FakeProvider::start().await;
    let conversations = Arc::new(Conversations::new(store.clone()));
    let (stream, chat_id) = customer_writes(&store, "+919638100003", Utc::now()).await;
    let reply = |text: &str| ConversationCommand::SendReply {
        chat_id,
        message_id: Uuid::new_v4(),
        text: text.into(),
        by: "asha".into(),
        now: Utc::now(),
    };
    conversations
        .handle(
            &stream,
            vec![reply("before the snapshot")],
            &Metadata::by("test"),
        )
        .await
        .unwrap();
    let sender = Arc::new(HttpSender::new(
        HashMap::from([(
            "9099039188".to_owned(),
            Endpoint::CloudApi {
                media: chatledger_core::channel::MediaDelivery::Upload,
                url: format!("{}/123/messages", provider.url),
                headers: vec![("apikey".into(), "k".into())],
            },
        )]),
        Duration::from_secs(5),
    ));
    let dispatcher = || {
        Dispatcher::new(
            store.clone(),
            conversations.clone(),
            sender.clone(),
            DispatchLimits {
                recipient_interval: Duration::ZERO,
                ..DispatchLimits::default()
            },
        )
        .remembered_in(snapshots.clone())
    };
    // Owns nothing: folds, keeps the message pending, sends nothing.
    let first = dispatcher().owned_by(Ownership::shared());
    let tail = LogTail::new(store.clone());
    run_then_stop(move |stopped| first.run(tail, stopped)).await;
    assert!(provider.requests().is_empty());
    let (_, view) = snapshot_of(&snapshots, &store, "dispatcher").await;
    assert_eq!(
        view["pending_streams"],
        serde_json::json!([stream]),
        "{view}"
    );
    assert!(
        !view.to_string().contains("before the snapshot"),
        "no message text in a snapshot: {view}"
    );

    conversations
        .handle(
            &stream,
            vec![reply("after the snapshot")],
            &Metadata::by("test"),
        )
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(dispatcher().run(LogTail::new(store.clone()), stopped));
    for _ in 0..300 {
        if provider.requests().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send_replace(true);
    let mut sent: Vec<String> = provider
        .requests()
        .iter()
        .map(|r| r.body["text"]["body"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    assert_eq!(sent, ["after the snapshot", "before the snapshot"]);
}

/// The assigner keeps its roster (who is online, which chats wait); started again from that
/// snapshot it gives a chat that opened before it to the executive who was online then.
async fn the_assigner_starts_from_its_snapshot(backend: Backend) {
    use chatledger_core::executive::{
        executive_id, executive_stream, ExecutiveRegistered, ExecutiveStatusChanged, Role,
    };
    use chatledger_core::ExpectedVersion;
    use chatledger_projections::assignment::Assigner;

    let (db, store) = backend.open().await;
    let snapshots = Snapshots::new(db.read_db().await);
    let asha = executive_id("asha@oneway.cab");
    let registered = ExecutiveRegistered {
        executive_id: asha,
        email: "asha@oneway.cab".into(),
        name: "asha".into(),
        role: Role::Executive,
        stakeholders: vec!["partner".into()],
        password_hash: "$argon2id$not-a-real-hash".into(),
    };
    let online = ExecutiveStatusChanged {
        executive_id: asha,
        online: true,
        at: Utc::now(),
    };
    store
        .append(
            &executive_stream(asha),
            ExpectedVersion::NoStream,
            vec![
                registered.to_new_event(Metadata::by("test")),
                online.to_new_event(Uuid::new_v4(), Metadata::by("test")),
            ],
        )
        .await
        .unwrap();
    let (stream, _) = customer_writes(&store, "+919638100004", Utc::now()).await;
    let assigner = || {
        Assigner::new(store.clone(), Arc::new(Conversations::new(store.clone())))
            .remembered_in(snapshots.clone())
    };
    // Owns nothing: keeps the chat waiting, assigns nothing.
    let first = assigner().owned_by(Ownership::shared());
    let tail = LogTail::new(store.clone());
    run_then_stop(move |stopped| first.run(tail, stopped)).await;
    let (_, view) = snapshot_of(&snapshots, &store, "assigner").await;
    assert!(
        !view.to_string().contains("argon2"),
        "no password hash in a snapshot: {view}"
    );
    let assigned = || {
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            store
                .read_stream(&stream, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.event_type == "ChatAssigned")
                .map(|e| e.data["executive"]["id"].clone())
                .collect::<Vec<_>>()
        }
    };
    assert!(assigned().await.is_empty());

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(assigner().run(LogTail::new(store.clone()), stopped));
    for _ in 0..300 {
        if !assigned().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send_replace(true);
    assert_eq!(assigned().await, [serde_json::json!(asha.to_string())]);
}

chatledger_tests::on_both_backends!(
    sla_timers_start_from_their_snapshot,
    the_dispatcher_starts_from_its_snapshot,
    the_assigner_starts_from_its_snapshot,
);
