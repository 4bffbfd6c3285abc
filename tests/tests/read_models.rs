//! The read side against a real database: live projection, rebuild, and their agreement.

use std::sync::Arc;
use std::time::Duration;

use chatledger_application::conversations::Conversations;
use chatledger_core::conversation::DecodedEvent;
use chatledger_core::conversation::{
    ConversationCommand, ConversationRef, Customer, InboundMessage, ProviderError, Receipt,
};
use chatledger_core::sla::{SLA_POLICY_EVENT, SLA_POLICY_STREAM};
use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent};
use chatledger_projections::read_db::ReadDb;
use chatledger_projections::read_models;
use chatledger_projections::runner::{rebuild, run_live, Live};
use chatledger_projections::tail::LogTail;
use chatledger_tests::db::{Backend, TestDb};
use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

fn conversation(customer: &str) -> ConversationRef {
    chatledger_tests::messages::partner_conversation(customer)
}

fn message(customer: &str, id: &str, kind: &str, text: Option<&str>) -> ConversationCommand {
    ConversationCommand::ReceiveMessage {
        conversation: conversation(customer),
        message: Box::new(InboundMessage {
            kind: kind.into(),
            text: text.map(Into::into),
            customer: Customer {
                phone: Some(customer.into()),
                user_id: None,
                name: Some(format!("name of {customer}")),
            },
            sent_at: Some("2026-11-22T10:00:00Z".parse().unwrap()),
            ..chatledger_tests::messages::text_message(id, customer, "")
        }),
        new_chat_id: Uuid::new_v4(),
        now: Utc::now(),
    }
}

fn receipt(customer: &str, id: &str, status: &str) -> ConversationCommand {
    ConversationCommand::RecordReceipt {
        receipt: Box::new(Receipt {
            provider: "meta".into(),
            provider_message_id: id.into(),
            status: status.into(),
            at: None,
            recipient: Customer {
                phone: Some(customer.into()),
                ..Customer::default()
            },
            errors: if status == "failed" {
                vec![ProviderError {
                    code: 131026,
                    title: Some("Message undeliverable".into()),
                    message: None,
                    details: None,
                }]
            } else {
                vec![]
            },
            raw: json!({"id": id, "status": status}),
            callback: None,
        }),
        now: Utc::now(),
    }
}

/// A small history: two customers, several messages, receipts out of order (and one that
/// arrives before its message).
async fn write_history(store: Arc<dyn EventStore>) {
    let handler = Conversations::new(store);
    let meta = Metadata::by("test");
    let a = "+919638120888";
    let b = "+919726700000";
    let stream_a = conversation(a).stream();
    let stream_b = conversation(b).stream();
    handler
        .handle(
            &stream_a,
            vec![message(a, "wamid.a1", "text", Some("hello"))],
            &meta,
        )
        .await
        .unwrap();
    handler
        .handle(&stream_a, vec![receipt(a, "wamid.a1", "read")], &meta)
        .await
        .unwrap();
    handler
        .handle(&stream_a, vec![receipt(a, "wamid.a1", "delivered")], &meta)
        .await
        .unwrap();
    handler
        .handle(&stream_b, vec![receipt(b, "wamid.b1", "delivered")], &meta)
        .await
        .unwrap();
    handler
        .handle(
            &stream_b,
            vec![message(b, "wamid.b1", "image", None)],
            &meta,
        )
        .await
        .unwrap();
    handler
        .handle(
            &stream_a,
            vec![message(a, "wamid.a2", "location", None)],
            &meta,
        )
        .await
        .unwrap();
    handler
        .handle(&stream_a, vec![receipt(a, "wamid.a2", "failed")], &meta)
        .await
        .unwrap();
}

async fn dump_all(db: &ReadDb) -> Vec<(String, Vec<Vec<Option<String>>>)> {
    let mut dump = Vec::new();
    for projector in read_models::all() {
        for table in projector.tables() {
            dump.push((table.to_string(), db.dump_table(table).await.unwrap()));
        }
    }
    dump
}

/// The read models' indexes in generation `generation`, named without its suffix.
async fn indexes_of_generation(db: &ReadDb, generation: i64) -> Vec<String> {
    let suffix = format!("_g{generation}");
    let sql = if db.kind() == "postgres" {
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    } else {
        // Indexes SQLite makes for a primary key have no statement of their own.
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    };
    let mut names: Vec<String> = db
        .fetch_all(sql, &[])
        .await
        .unwrap()
        .iter()
        .filter_map(|row| row.text(0))
        .filter(|name| name.contains(&suffix))
        .map(|name| name.replace(&suffix, ""))
        .collect();
    names.sort();
    names
}

/// Runs every projector live until each has reached the log's head.
async fn project_live(store: Arc<dyn EventStore>, db: &ReadDb) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    let head = store.head_position().await.unwrap();
    let mut projectors = Vec::new();
    let mut reached = Vec::new();
    for projector in read_models::all() {
        let (progress, rx) = watch::channel(0);
        projectors.push(Live {
            projector,
            progress,
        });
        reached.push(rx);
    }
    tokio::spawn(run_live(
        LogTail::new(store.clone()),
        db.clone(),
        projectors,
        stopped.clone(),
    ));
    for mut rx in reached {
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|p| *p >= head))
            .await
            .expect("the projector catches up")
            .unwrap();
    }
    stop
}

async fn live_projection_and_rebuild_agree(backend: Backend) {
    let (test_db, store) = backend.open().await;
    write_history(store.clone()).await;
    let db = test_db.read_db().await;
    let stop = project_live(store.clone(), &db).await;

    let chats = db
        .fetch_all("SELECT customer, status, opened_reason, customer_name, last_message_text, service_window_ends_at FROM chats ORDER BY position", &[])
        .await
        .unwrap();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0].text(0).as_deref(), Some("+919638120888"));
    assert_eq!(chats[0].text(1).as_deref(), Some("OPEN"));
    assert_eq!(chats[0].text(2).as_deref(), Some("FirstMessage"));
    assert_eq!(chats[0].text(3).as_deref(), Some("name of +919638120888"));
    assert_eq!(
        chats[0].text(4).as_deref(),
        Some("[location]"),
        "the last message is shown"
    );
    assert_eq!(
        chats[0].text(5).as_deref(),
        Some("2026-11-23T10:00:00.000000Z"),
        "24 hours after the last message"
    );

    let statuses = db
        .fetch_all("SELECT provider_message_id, kind, delivery_status, error FROM messages ORDER BY position", &[])
        .await
        .unwrap();
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let statuses: Vec<Row> = statuses
        .iter()
        .map(|r| (r.text(0), r.text(1), r.text(2), r.text(3)))
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        statuses,
        vec![
            (s("wamid.a1"), s("text"), s("read"), None),
            (s("wamid.b1"), s("image"), s("delivered"), None),
            (
                s("wamid.a2"),
                s("location"),
                s("failed"),
                s("131026: Message undeliverable")
            ),
        ],
        "a late 'delivered' does not move 'read' back; a receipt before its message still counts"
    );
    assert_eq!(
        db.dump_table("message_receipts").await.unwrap().len(),
        4,
        "every receipt is kept"
    );
    let customer = db
        .fetch_optional("SELECT chat_ids, name FROM customers WHERE stakeholder = 'partner' AND customer = '+919638120888'", &[])
        .await
        .unwrap()
        .expect("the customer is there");
    assert_eq!(customer.json(0).unwrap().as_array().unwrap().len(), 1);

    // A rebuild from position 0 gives exactly the same tables, and the live projectors carry
    // on in the new generation.
    let live = dump_all(&db).await;
    let live_indexes = indexes_of_generation(&db, 1).await;
    assert!(
        live_indexes.contains(&"chats_by_stakeholder".to_owned())
            && live_indexes.contains(&"messages_by_chat".to_owned()),
        "a new read model has the indexes its queries read through: {live_indexes:?}"
    );
    let rebuilt = rebuild(store.clone(), &db, &read_models::all(), |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        indexes_of_generation(&db, 2).await,
        live_indexes,
        "a rebuilt generation has every index the one it replaces had (those only queries read \
         through are built after its fill)"
    );
    if db.kind() == "postgres" {
        // Column statistics are written by ANALYZE alone (this log is too small for
        // autovacuum's thresholds), and at once: the filled tables have theirs.
        let analyzed: Vec<String> = db
            .fetch_all(
                "SELECT DISTINCT tablename::TEXT FROM pg_stats \
                 WHERE schemaname = current_schema() AND tablename LIKE '%\\_g2'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .filter_map(|row| row.text(0))
            .collect();
        for table in [
            "chats_g2",
            "messages_g2",
            "message_receipts_g2",
            "customers_g2",
        ] {
            assert!(
                analyzed.iter().any(|t| t == table),
                "a rebuilt table has statistics for the dashboard's first queries: {table} not in {analyzed:?}"
            );
        }
    }
    assert_eq!(rebuilt.generations.len(), read_models::all().len());
    assert!(rebuilt
        .generations
        .iter()
        .all(|(_, generation)| *generation == 2));
    assert_eq!(
        dump_all(&db).await,
        live,
        "rebuilt read models equal the live ones, table by table"
    );
    let handler = Conversations::new(store.clone());
    let c = "+919811100000";
    handler
        .handle(
            &conversation(c).stream(),
            vec![message(c, "wamid.c1", "text", Some("after the switch"))],
            &Metadata::by("test"),
        )
        .await
        .unwrap();
    let found = async {
        loop {
            let row = db
                .fetch_optional("SELECT chat_id FROM chats WHERE customer = $1", &[c.into()])
                .await
                .unwrap();
            if row.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), found)
        .await
        .expect("the live projector follows the new generation");
    stop.send_replace(true);
}

/// What projectors rely on from a read-model transaction, whichever way the backend sends its
/// writes (PostgreSQL queues them until the next read or the commit): a read sees the
/// transaction's earlier writes; a write that fails fails the transaction and keeps none of
/// it; a transaction dropped without commit keeps nothing; the next one works.
async fn read_transactions_keep_all_or_nothing(backend: Backend) {
    let (test_db, _store) = backend.open().await;
    let db = test_db.read_db().await;
    assert_eq!(db.writes_pipelined(), backend == Backend::Postgres);
    transactions_keep_all_or_nothing(db).await;
}

/// On PostgreSQL, with a database URL only sqlx reads (a setting of its own), writes go one by
/// one through sqlx's transactions, and keep the same promises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_transactions_through_the_pool_keep_all_or_nothing() {
    let (test_db, _store) = Backend::Postgres.open().await;
    transactions_keep_all_or_nothing(through_the_pool(&test_db)).await;
}

/// The read models of `test_db` (PostgreSQL) with a URL setting only sqlx reads: the pipelined
/// writer cannot connect with it, and writes go through the pool's transactions.
fn through_the_pool(test_db: &TestDb) -> ReadDb {
    let TestDb::Postgres(schema) = test_db else {
        unreachable!("a PostgreSQL database")
    };
    let separator = if schema.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}statement-cache-capacity=100", schema.url);
    let db = ReadDb::connect_postgres_lazy(&url, Some(&schema.name)).unwrap();
    assert!(
        !db.writes_pipelined(),
        "the pipelined writer cannot read this URL"
    );
    db
}

async fn transactions_keep_all_or_nothing(db: ReadDb) {
    let mut tx = db.begin().await.unwrap();
    tx.execute("CREATE TABLE probe (id BIGINT PRIMARY KEY, note TEXT)", &[])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let notes = |db: ReadDb| async move {
        db.fetch_all("SELECT id, note FROM probe ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.i64(0).unwrap(), row.text(1)))
            .collect::<Vec<_>>()
    };

    let mut tx = db.begin().await.unwrap();
    for id in 1..=3i64 {
        tx.execute(
            "INSERT INTO probe (id, note) VALUES ($1, $2)",
            &[id.into(), format!("note {id}").into()],
        )
        .await
        .unwrap();
    }
    tx.execute(
        "UPDATE probe SET note = $2 WHERE id = $1",
        &[2i64.into(), Option::<String>::None.into()],
    )
    .await
    .unwrap();
    let seen = tx
        .fetch_all("SELECT COUNT(*) FROM probe WHERE note IS NOT NULL", &[])
        .await
        .unwrap();
    assert_eq!(seen[0].i64(0), Some(2), "a read sees the writes before it");
    tx.commit().await.unwrap();
    assert_eq!(
        notes(db.clone()).await,
        vec![
            (1, Some("note 1".into())),
            (2, None),
            (3, Some("note 3".into()))
        ]
    );

    // The second insert collides with a stored row: the transaction fails, by the commit at
    // the latest, and neither its first insert nor its update is kept.
    let mut tx = db.begin().await.unwrap();
    let mut outcome = Ok(());
    for (sql, args) in [
        (
            "INSERT INTO probe (id, note) VALUES ($1, $2)",
            vec![4i64.into(), "four".into()],
        ),
        (
            "INSERT INTO probe (id, note) VALUES ($1, $2)",
            vec![1i64.into(), "again".into()],
        ),
        (
            "UPDATE probe SET note = $2 WHERE id = $1",
            vec![3i64.into(), "changed".into()],
        ),
    ] {
        outcome = outcome.and(tx.execute(sql, &args).await);
    }
    let outcome = match outcome {
        Ok(()) => tx.commit().await,
        Err(e) => {
            drop(tx);
            Err(e)
        }
    };
    assert!(outcome.is_err(), "a duplicate key fails the transaction");

    // Dropped without commit: nothing kept.
    let mut tx = db.begin().await.unwrap();
    tx.execute("DELETE FROM probe", &[]).await.unwrap();
    drop(tx);

    let mut tx = db.begin().await.unwrap();
    tx.execute(
        "INSERT INTO probe (id, note) VALUES ($1, $2)",
        &[5i64.into(), "five".into()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        notes(db.clone()).await,
        vec![
            (1, Some("note 1".into())),
            (2, None),
            (3, Some("note 3".into())),
            (5, Some("five".into()))
        ],
        "the failed and the dropped transactions left nothing; the next one committed"
    );
}

/// SLA clocks take the policy in force when they start, also when a policy change and the
/// chats around it are projected in one batch (the projector remembers the policy it read
/// only for the rest of its transaction).
async fn sla_clocks_take_the_policy_in_force_within_one_batch(backend: Backend) {
    let (test_db, store) = backend.open().await;
    let handler = Conversations::new(store.clone());
    let meta = Metadata::by("test");
    let policy = |alert: u64| {
        NewEvent::new(
            Uuid::new_v4(),
            SLA_POLICY_EVENT,
            json!({"alert_after_seconds": alert, "escalate_after_seconds": alert * 10}),
            Metadata::by("test"),
        )
    };
    let customers = ["+919811100001", "+919811100002", "+919811100003"];
    store
        .append(
            SLA_POLICY_STREAM,
            ExpectedVersion::NoStream,
            vec![policy(60)],
        )
        .await
        .unwrap();
    for (i, customer) in customers.iter().enumerate() {
        if i == 2 {
            store
                .append(
                    SLA_POLICY_STREAM,
                    ExpectedVersion::Exact(0),
                    vec![policy(120)],
                )
                .await
                .unwrap();
        }
        handler
            .handle(
                &conversation(customer).stream(),
                vec![message(
                    customer,
                    &format!("wamid.sla{i}"),
                    "text",
                    Some("hi"),
                )],
                &meta,
            )
            .await
            .unwrap();
    }
    // Everything is in the log before projection starts: one catch-up batch applies it all.
    let db = test_db.read_db().await;
    let stop = project_live(store.clone(), &db).await;
    let clocks = |db: ReadDb| async move {
        db.fetch_all(
            "SELECT policy_version, clock_started_at, alert_due_at FROM sla ORDER BY position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let started = row.time(1).unwrap();
            let due = row.time(2).unwrap();
            (row.i64(0).unwrap(), (due - started).num_seconds())
        })
        .collect::<Vec<_>>()
    };
    assert_eq!(
        clocks(db.clone()).await,
        vec![(0, 60), (0, 60), (1, 120)],
        "each clock is due by the policy in force when it started"
    );
    rebuild(store.clone(), &db, &read_models::all(), |_, _| {})
        .await
        .unwrap();
    assert_eq!(clocks(db.clone()).await, vec![(0, 60), (0, 60), (1, 120)]);
    stop.send_replace(true);
}

/// Two conversations, interleaved, in every shape the read models fold a batch of: receipts
/// before their message and before the outcome of a send, a late lower receipt, a failed send,
/// a tag removed and applied again, an unassignment, a context change, an erasure between
/// messages, a resolution with its rating, a chat closed and its successor.
fn varied_history() -> Vec<(String, NewEvent)> {
    use chatledger_core::conversation::{
        AssignmentRule, CloseReason, ConversationEvent as E, CustomerKey, ExecutiveRef, OpenReason,
        OutboundPurpose, SlaBreach, SlaStop,
    };
    let at = |minute: u32| -> chrono::DateTime<Utc> {
        format!("2026-11-22T10:{minute:02}:00Z").parse().unwrap()
    };
    let (a, b) = ("+919638120888", "+919726700000");
    let (chat_a, chat_a2, chat_b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let asha = ExecutiveRef {
        id: Uuid::new_v4(),
        name: "Asha".into(),
    };
    let inbound = |phone: &str, chat_id: Uuid, id: &str, name: Option<&str>, minute: u32| {
        E::MessageReceived {
            chat_id,
            received_at: at(minute),
            message: Box::new(InboundMessage {
                customer: Customer {
                    phone: Some(phone.into()),
                    user_id: None,
                    name: name.map(Into::into),
                },
                sent_at: Some(at(minute)),
                ..chatledger_tests::messages::text_message(id, phone, &format!("text of {id}"))
            }),
        }
    };
    let receipt = |phone: &str, chat_id: Uuid, id: &str, status: &str| E::ReceiptRecorded {
        chat_id: Some(chat_id),
        known_message: true,
        received_at: at(30),
        receipt: Box::new(Receipt {
            provider: "meta".into(),
            provider_message_id: id.into(),
            status: status.into(),
            at: Some(at(30)),
            recipient: Customer {
                phone: Some(phone.into()),
                ..Customer::default()
            },
            errors: vec![],
            callback: None,
            raw: json!({"id": id, "status": status}),
        }),
    };
    let reply = |phone: &str, chat_id: Uuid, message_id: Uuid, minute: u32| E::ReplyQueued {
        chat_id,
        message_id,
        to: CustomerKey::Phone(phone.into()),
        kind: "text".into(),
        text: Some(format!("reply {minute}")),
        template: None,
        media: None,
        purpose: OutboundPurpose::Reply,
        by: "Asha".into(),
        queued_at: at(minute),
    };
    let dispatched = |chat_id: Uuid, message_id: Uuid, id: &str| E::MessageDispatched {
        chat_id,
        message_id,
        provider_message_id: id.into(),
        attempts: 1,
        dispatched_at: at(31),
    };
    let tag = |chat_id: Uuid, applied: bool, minute: u32| {
        if applied {
            E::TagApplied {
                chat_id,
                tag: "Payment".into(),
                by: "Asha".into(),
                at: at(minute),
            }
        } else {
            E::TagRemoved {
                chat_id,
                tag: "Payment".into(),
                by: "Asha".into(),
                at: at(minute),
            }
        }
    };
    let opened = |phone: &str, chat_id: Uuid, previous: Option<Uuid>| E::ChatOpened {
        chat_id,
        conversation: conversation(phone),
        reason: if previous.is_some() {
            OpenReason::ContextChanged
        } else {
            OpenReason::FirstMessage
        },
        context: json!({"city": "Pune"}),
        previous_chat_id: previous,
        opened_at: at(1),
    };
    let (reply_a, failed_a, reply_b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let clock = |chat_id: Uuid, message: &str, minute: u32| E::SlaClockStarted {
        chat_id,
        stakeholder: "partner".into(),
        customer_message: message.into(),
        started_at: at(minute),
    };
    let breach = |chat_id: Uuid, message: &str, minute: u32| SlaBreach {
        chat_id,
        customer_message: message.into(),
        clock_started_at: at(2),
        due_at: at(minute),
        fired_at: at(minute),
        policy_version: 1,
        threshold_seconds: 60,
        notification: None,
    };
    let stream_a = conversation(a).stream();
    let stream_b = conversation(b).stream();
    let events = vec![
        (&stream_a, opened(a, chat_a, None)),
        (&stream_a, receipt(a, chat_a, "wamid.a1", "delivered")),
        (&stream_a, inbound(a, chat_a, "wamid.a1", Some("Ravi"), 2)),
        (&stream_a, clock(chat_a, "wamid.a1", 2)),
        (&stream_b, opened(b, chat_b, None)),
        (&stream_b, clock(chat_b, "wamid.b1", 3)),
        (&stream_a, E::SlaAlertRaised(breach(chat_a, "wamid.a1", 3))),
        (
            &stream_a,
            E::ChatAssigned {
                chat_id: chat_a,
                executive: asha.clone(),
                rule: AssignmentRule::RoundRobin,
                candidates: vec![asha.clone()],
                by: None,
                cause: chat_a,
                assigned_at: at(3),
            },
        ),
        (&stream_b, inbound(b, chat_b, "wamid.b1", Some("Meera"), 3)),
        (&stream_a, tag(chat_a, true, 4)),
        (&stream_a, reply(a, chat_a, reply_a, 4)),
        (&stream_b, reply(b, chat_b, reply_b, 4)),
        (&stream_a, receipt(a, chat_a, "wamid.out.a", "delivered")),
        (&stream_a, dispatched(chat_a, reply_a, "wamid.out.a")),
        (&stream_b, dispatched(chat_b, reply_b, "wamid.out.b")),
        (&stream_b, receipt(b, chat_b, "wamid.out.b", "read")),
        (&stream_a, receipt(a, chat_a, "wamid.out.a", "sent")),
        (&stream_b, receipt(b, chat_b, "wamid.out.b", "delivered")),
        (&stream_a, reply(a, chat_a, failed_a, 7)),
        (
            &stream_a,
            E::MessageDispatchFailed {
                chat_id: chat_a,
                message_id: failed_a,
                code: Some(131047),
                error: "Re-engagement message".into(),
                permanent: true,
                attempts: 1,
                failed_at: at(8),
            },
        ),
        (&stream_a, E::SlaEscalated(breach(chat_a, "wamid.a1", 8))),
        (
            &stream_b,
            E::SlaClockStopped {
                chat_id: chat_b,
                customer_message: "wamid.b1".into(),
                reason: SlaStop::Answered,
                stopped_at: at(8),
            },
        ),
        (&stream_a, tag(chat_a, false, 8)),
        (&stream_a, tag(chat_a, true, 9)),
        (
            &stream_a,
            E::ChatReassigned {
                chat_id: chat_a,
                executive: None,
                previous: asha.clone(),
                rule: AssignmentRule::AssigneeWentOffline,
                candidates: vec![],
                by: None,
                cause: chat_a,
                assigned_at: at(9),
            },
        ),
        (
            &stream_a,
            E::ContextChanged {
                conversation: conversation(a),
                changes: serde_json::Map::new(),
                previous: serde_json::Map::new(),
                context: json!({"city": "Mumbai"}),
                identity_fields: vec![],
                identity_changed: false,
                chat_id: Some(chat_a),
                changed_at: at(10),
            },
        ),
        (&stream_a, inbound(a, chat_a, "wamid.a2", None, 11)),
        (
            &stream_a,
            E::PersonalDataErased {
                customer: CustomerKey::Phone(a.into()),
                key_id: "key-a".into(),
                by: "dpo".into(),
                erased_at: at(12),
            },
        ),
        (&stream_a, inbound(a, chat_a, "wamid.a3", Some("R."), 13)),
        (&stream_a, clock(chat_a, "wamid.a3", 13)),
        (
            &stream_a,
            E::ChatResolved {
                chat_id: chat_a,
                by: "Asha".into(),
                resolved_at: at(14),
            },
        ),
        (
            &stream_a,
            E::ChatRated {
                chat_id: chat_a,
                rating: 4,
                provider_message_id: "wamid.a4".into(),
                rated_at: at(15),
            },
        ),
        (
            &stream_a,
            E::ChatClosed {
                chat_id: chat_a,
                reason: CloseReason::ContextChanged,
                superseded_by: chat_a2,
                closed_at: at(16),
            },
        ),
        (&stream_a, opened(a, chat_a2, Some(chat_a))),
        (&stream_a, inbound(a, chat_a2, "wamid.a5", None, 17)),
        (
            &stream_b,
            E::ChatResolved {
                chat_id: chat_b,
                by: "Asha".into(),
                resolved_at: at(18),
            },
        ),
    ];
    let mut events: Vec<(String, NewEvent)> = events
        .into_iter()
        .map(|(stream, event)| {
            (
                stream.clone(),
                event.to_new_event(stream, Metadata::by("test")),
            )
        })
        .collect();
    // A stricter policy in the middle: the clock started after it is due sooner.
    let policy = chatledger_core::sla::SlaPolicy {
        alert_after_seconds: 60,
        escalate_after_seconds: 120,
        stakeholders: Default::default(),
    };
    events.insert(
        20,
        (
            SLA_POLICY_STREAM.to_owned(),
            NewEvent::new(
                Uuid::new_v4(),
                SLA_POLICY_EVENT,
                json!(policy),
                Metadata::by("test"),
            ),
        ),
    );
    events
}

/// Every read model writes the same rows whether it is handed the whole history as one batch
/// (which it may fold in memory) or one event at a time: the fold keeps each event's meaning.
async fn a_folded_batch_writes_what_its_events_write_one_by_one(backend: Backend) {
    let (test_db, store) = backend.open().await;
    let db = test_db.read_db().await;
    folded_batch_writes_what_its_events_write_one_by_one(store, db).await;
}

/// On PostgreSQL through sqlx's transactions (see the test above it), a batch's rows travel as
/// the same arrays, and mean the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_folded_batch_through_the_pool_writes_what_its_events_write_one_by_one() {
    let (test_db, store) = Backend::Postgres.open().await;
    folded_batch_writes_what_its_events_write_one_by_one(store, through_the_pool(&test_db)).await;
}

async fn folded_batch_writes_what_its_events_write_one_by_one(
    store: Arc<dyn EventStore>,
    db: ReadDb,
) {
    for (stream, event) in varied_history() {
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
    let events: Vec<DecodedEvent> = store
        .read_all(0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(DecodedEvent::new)
        .collect();
    for projector in read_models::all() {
        let wanted: Vec<&DecodedEvent> = events
            .iter()
            .filter(|e| projector.wants(&e.event_type))
            .collect();
        let mut tx = db.begin().await.unwrap();
        for suffix in ["_one", "_all"] {
            for statement in projector.schema(suffix) {
                tx.execute(&statement, &[]).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
        for event in &wanted {
            let mut tx = db.begin().await.unwrap();
            projector.apply(&mut tx, "_one", event).await.unwrap();
            tx.commit().await.unwrap();
        }
        let mut tx = db.begin().await.unwrap();
        projector
            .apply_batch(&mut tx, "_all", &wanted)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for table in projector.tables() {
            let one = db.dump_table(&format!("{table}_one")).await.unwrap();
            assert_eq!(
                db.dump_table(&format!("{table}_all")).await.unwrap(),
                one,
                "{table}: the batch folded as one writes what its events write one by one"
            );
            assert!(
                !one.is_empty()
                    || ![
                        "chats",
                        "messages",
                        "message_receipts",
                        "chat_tags",
                        "customers"
                    ]
                    .contains(table),
                "{table} has rows to compare"
            );
        }
    }
    // The folded rows are the ones the events mean.
    let chats = db
        .fetch_all(
            "SELECT status, customer_name, last_message_text, assigned_to, rating, superseded_by, context
             FROM chats_all ORDER BY position",
            &[],
        )
        .await
        .unwrap();
    let row = |i: usize| {
        (0..7)
            .map(|c| chats[i].text(c).or(chats[i].i64(c).map(|n| n.to_string())))
            .collect::<Vec<_>>()
    };
    let s = |v: &str| Some(v.to_owned());
    let first = row(0);
    assert_eq!(
        first[..5],
        [s("CLOSED"), s("R."), s("text of wamid.a3"), None, s("4")],
        "closed after its resolution and rating, unassigned, named again after the erasure"
    );
    assert!(first[5].is_some(), "superseded by its successor");
    assert_eq!(first[6], s(r#"{"city":"Mumbai"}"#));
    assert_eq!(row(1)[0], s("RESOLVED"), "the other customer's chat");
    assert_eq!(row(1)[1], s("Meera"));
    assert_eq!(row(2)[0], s("OPEN"), "the successor chat");
    let messages = db
        .fetch_all(
            "SELECT provider_message_id, text, delivery_status, error FROM messages_all ORDER BY position",
            &[],
        )
        .await
        .unwrap();
    let messages: Vec<Vec<Option<String>>> = messages
        .iter()
        .map(|m| (0..4).map(|c| m.text(c)).collect())
        .collect();
    assert_eq!(
        messages,
        vec![
            vec![s("wamid.a1"), s("[erased]"), s("delivered"), None],
            vec![s("wamid.b1"), s("text of wamid.b1"), None, None],
            vec![s("wamid.out.a"), s("[erased]"), s("delivered"), None],
            vec![s("wamid.out.b"), s("reply 4"), s("read"), None],
            vec![None, s("[erased]"), s("failed"), s("131047: Re-engagement message")],
            vec![s("wamid.a2"), s("[erased]"), None, None],
            vec![s("wamid.a3"), s("text of wamid.a3"), None, None],
            vec![s("wamid.a5"), s("text of wamid.a5"), None, None],
        ],
        "receipts before a message or its dispatch count, a late lower one does not, the erasure reaches what came before it"
    );
}

chatledger_tests::on_both_backends!(
    a_folded_batch_writes_what_its_events_write_one_by_one,
    live_projection_and_rebuild_agree,
    read_transactions_keep_all_or_nothing,
    sla_clocks_take_the_policy_in_force_within_one_batch
);
