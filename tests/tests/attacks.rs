//! Attacks, as an attacker would try them, against the real router on SQLite and PostgreSQL.
//! Each test is one attack and says what must hold; a panic anywhere in the server fails it.
//!
//! 1. Hostile values at every text, id, count and time field of every inbound format: each is
//!    refused with a 4xx naming the field, or recorded (and quarantined where it cannot be
//!    applied); either way the next customer's message reaches the dashboard and a replay
//!    completes.
//! 2. An event no read model can apply, already in the log: quarantined, readiness says so.
//! 3. Webhooks without authentication, and too many items in one.
//! 4. Bodies and counts without bounds.
//! 5. Slow and idle clients.
//! 6. Password checks, multiplied by aliases and by guessing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use chatledger_core::executive::Role;
use chatledger_core::{ExpectedVersion, Metadata, NewEvent};
use chatledger_projections::read_models;
use chatledger_projections::runner::rebuild;
use chatledger_tests::db::Backend;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Panics anywhere in the process (the server runs in it) are counted and fail the test.

static PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_TEXTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A failed assertion of a test is that test's failure, not the server's panic:
            // counting it would fail every test that runs after it.
            let in_a_test = info
                .location()
                .is_some_and(|l| l.file().starts_with("tests/"));
            if !in_a_test {
                PANICS.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut texts) = PANIC_TEXTS.lock() {
                    texts.push(info.to_string());
                }
            }
            previous(info);
        }));
    });
}

fn assert_no_panic() {
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "the server panicked: {:?}",
        PANIC_TEXTS.lock().unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// Hostile values.

/// Strings an attacker puts in text and id fields.
fn hostile_strings() -> Vec<(&'static str, Value)> {
    vec![
        ("NUL", json!("a\u{0}b")),
        ("NUL only", json!("\u{0}")),
        ("10,000 characters", json!("x".repeat(10_000))),
        ("70,000 characters", json!("y".repeat(70_000))),
        ("right-to-left marks", json!("\u{202e}\u{200f}evil\u{202c}")),
        ("zero-width joiners", json!("\u{200d}\u{200d}\u{feff}")),
        ("empty", json!("")),
        ("spaces", json!("   ")),
    ]
}

/// Numbers (and number-like strings) an attacker puts in counts, ids and times.
fn hostile_numbers() -> Vec<(&'static str, Value)> {
    vec![
        ("zero", json!(0)),
        ("negative", json!(-1)),
        ("i64::MAX", json!(i64::MAX)),
        ("i64::MIN", json!(i64::MIN)),
        ("u64::MAX", json!(u64::MAX)),
        ("a float", json!(1.5)),
        ("a huge float", json!(1e300)),
        ("the end of chrono's range", json!(8_210_266_876_799_i64)),
        ("the end of chrono's range, as text", json!("8210266876799")),
        ("before chrono's range, as text", json!("-8210266876799")),
        ("u64::MAX, as text", json!(u64::MAX.to_string())),
    ]
}

fn all_hostile() -> Vec<(&'static str, Value)> {
    let mut all = hostile_strings();
    all.extend(hostile_numbers());
    all
}

/// What an answer to a hostile input must be: recorded (2xx), or refused with a 4xx whose
/// message names the field (or, for a value that makes the whole body too large, the body's
/// limit). Never a 5xx.
fn assert_handled(what: &str, status: u16, body: &Value, field_words: &[&str]) {
    assert!(
        status < 500,
        "{what}: answered {status}, a server error: {body}"
    );
    if status == 413 {
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("limit"),
            "{what}: refused with 413 without naming the limit: {body}"
        );
    } else if (400..500).contains(&status) {
        let message = body["message"]
            .as_str()
            .or_else(|| body["errors"][0]["message"].as_str())
            .unwrap_or_default();
        assert!(
            field_words.iter().any(|w| message.contains(w)),
            "{what}: refused with {status}, but the message does not name the field ({field_words:?}): {body}"
        );
    }
}

fn set(value: &mut Value, pointer: &str, to: Value) {
    *value
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer}")) = to;
}

/// A Cloud API webhook with one text message from `from`.
fn meta_text(from: &str, id: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "Mallory"}, "wa_id": from}],
          "messages": [{"from": from, "id": id, "timestamp": "1764570000", "type": "text", "text": {"body": "hi"}}]}}]}]})
}

fn meta_image(from: &str, id: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "Mallory"}, "wa_id": from}],
          "messages": [{"from": from, "id": id, "timestamp": "1764570000", "type": "image",
            "image": {"id": "media-1", "mime_type": "image/jpeg", "sha256": "abc", "caption": "look"}}]}}]}]})
}

fn meta_status(id: &str) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "statuses": [{"id": id, "status": "delivered", "timestamp": "1764570000", "recipient_id": "919811100001"}]}}]}]})
}

const MESSAGE: &str = "/entry/0/changes/0/value/messages/0";
const CONTACT: &str = "/entry/0/changes/0/value/contacts/0";
const STATUS: &str = "/entry/0/changes/0/value/statuses/0";

impl Server {
    async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("x-webhook-secret", PINBOT_SECRET)
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post_twilio_form(&self, fields: &[(&str, String)]) -> (u16, String) {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            form.append_pair(k, v);
        }
        let response = self
            .post_twilio("twilio-us", form.finish().into_bytes())
            .await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// A fresh customer writes; the message must reach the dashboard (the read models are not
    /// stuck behind anything an attacker sent).
    async fn next_customer_is_seen(&self, n: u32) {
        let from = format!("9198222{n:05}");
        let id = format!("wamid.next.{n}");
        let (status, body) = self
            .post_json(
                "/api/chats/whatsapp_chat/9099039188",
                &meta_text(&from, &id),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let data = self
            .query(
                r#"query($n: String) { chats(filter: {customerNumber: $n}) { nodes { messages { text } } } }"#,
                json!({"n": from}),
            )
            .await;
        assert_eq!(
            data["chats"]["nodes"][0]["messages"][0]["text"], "hi",
            "{data}"
        );
    }

    /// Rebuilds every read model from the log, as `chatledger replay` does.
    async fn replay_completes(&self) {
        rebuild(
            self.store.clone(),
            &self.state.read_side.db,
            &read_models::all(),
            |_, _| {},
        )
        .await
        .expect("a replay completes");
    }
}

// ---------------------------------------------------------------------------------------
// 1. Hostile values at every field of every inbound format.

async fn hostile_values_in_meta_webhooks(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    let mut n = 0;
    // A payload (from, id), where in it the hostile value goes, and words naming the field.
    type Field = (
        fn(&str, &str) -> Value,
        &'static str,
        &'static [&'static str],
    );
    let fields: &[Field] = &[
        (meta_text, "/text/body", &["text"]),
        (meta_text, "/id", &["id"]),
        (meta_text, "/type", &["type"]),
        (meta_text, "/from", &["from"]),
        (meta_text, "/timestamp", &["timestamp"]),
        (meta_image, "/image/caption", &["caption"]),
        (meta_image, "/image/id", &["media.id"]),
        (meta_image, "/image/mime_type", &["mime_type"]),
    ];
    for (payload, field, words) in fields {
        for (label, value) in all_hostile() {
            n += 1;
            let mut body = payload("919811100001", &format!("wamid.attack.{n}"));
            set(&mut body, &format!("{MESSAGE}{field}"), value);
            let (status, answer) = server
                .post_json("/api/chats/whatsapp_chat/9099039188", &body)
                .await;
            assert_handled(
                &format!("{label} at messages[]{field}"),
                status,
                &answer,
                words,
            );
        }
    }
    for (label, value) in all_hostile() {
        n += 1;
        let mut body = meta_text("919811100001", &format!("wamid.attack.{n}"));
        set(&mut body, &format!("{CONTACT}/profile/name"), value.clone());
        let (status, answer) = server
            .post_json("/api/chats/whatsapp_chat/9099039188", &body)
            .await;
        assert_handled(
            &format!("{label} at the profile name"),
            status,
            &answer,
            &["name"],
        );
        for (field, words) in [
            ("/id", &["id"][..]),
            ("/status", &["status"][..]),
            ("/timestamp", &["timestamp"][..]),
            ("/recipient_id", &["recipient"][..]),
        ] {
            n += 1;
            let mut body = meta_status(&format!("wamid.status.{n}"));
            set(&mut body, &format!("{STATUS}{field}"), value.clone());
            let (status, answer) = server
                .post_json("/api/chats/whatsapp_chat/9099039188", &body)
                .await;
            assert_handled(
                &format!("{label} at statuses[]{field}"),
                status,
                &answer,
                words,
            );
        }
    }
    // A batch of one poisoned and one valid message: the valid one is kept and the refused
    // one reported by field.
    let mut batch = meta_text("919811100002", "wamid.batch.bad");
    let good = meta_text("919811100002", "wamid.batch.good")["entry"][0]["changes"][0]["value"]
        ["messages"][0]
        .clone();
    set(
        &mut batch,
        &format!("{MESSAGE}/text/body"),
        json!("a\u{0}b"),
    );
    batch["entry"][0]["changes"][0]["value"]["messages"]
        .as_array_mut()
        .unwrap()
        .push(good);
    let (status, answer) = server
        .post_json("/api/chats/whatsapp_chat/9099039188", &batch)
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["recorded"]["messages"], 1, "{answer}");
    assert_eq!(answer["refused"][0]["id"], "wamid.batch.bad", "{answer}");
    assert_eq!(answer["refused"][0]["field"], "text", "{answer}");
    // All of it alone is a 400 naming the field, and nothing is recorded.
    let mut alone = meta_text("919811100003", "wamid.alone");
    set(
        &mut alone,
        &format!("{MESSAGE}/timestamp"),
        json!("8210266876799"),
    );
    let (status, answer) = server
        .post_json("/api/chats/whatsapp_chat/9099039188", &alone)
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("timestamp:"),
        "{answer}"
    );
    // An unpaired surrogate cannot be written in `json!`: sent as raw bytes, it is not JSON,
    // and the answer says where it is.
    let head = server.store.head_position().await.unwrap();
    let raw = serde_json::to_string(&meta_text("919811100004", "wamid.surrogate"))
        .unwrap()
        .replace("\"hi\"", "\"\\ud800 alone\"");
    assert!(raw.contains("ud800"));
    let response = server
        .client
        .post(format!(
            "{}/api/chats/whatsapp_chat/9099039188",
            server.base
        ))
        .header("content-type", "application/json")
        .header("x-webhook-secret", PINBOT_SECRET)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let answer: Value = response.json().await.unwrap();
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("escape") && message.contains("column"),
        "{answer}"
    );
    assert_eq!(server.store.head_position().await.unwrap(), head);

    server.next_customer_is_seen(1).await;
    server.replay_completes().await;
    server.next_customer_is_seen(2).await;
    assert_no_panic();
}

async fn hostile_values_in_twilio_webhooks(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    let base = |sid: String| -> Vec<(&'static str, String)> {
        vec![
            ("MessageSid", sid),
            ("AccountSid", "ACattack".into()),
            ("From", "whatsapp:+919811100004".into()),
            ("To", "whatsapp:+12028831111".into()),
            ("Body", "hi".into()),
            ("ProfileName", "Mallory".into()),
            ("NumMedia", "0".into()),
        ]
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut n = 0;
    for (label, value) in all_hostile() {
        for (field, words) in [
            ("Body", &["text"][..]),
            ("MessageSid", &["id"][..]),
            ("From", &["from"][..]),
            ("ProfileName", &["name"][..]),
            ("NumMedia", &["media"][..]),
        ] {
            n += 1;
            let mut fields = base(format!("SMattack{n}"));
            fields.retain(|(k, _)| *k != field);
            fields.push((field, text(&value)));
            if field == "NumMedia" {
                fields.push(("MediaUrl0", "https://api.twilio.com/media/1".into()));
                fields.push(("MediaContentType0", "image/jpeg".into()));
            }
            let (status, answer) = server.post_twilio_form(&fields).await;
            let answer = serde_json::from_str(&answer).unwrap_or(json!({"message": answer}));
            assert_handled(&format!("{label} at {field}"), status, &answer, words);
        }
        n += 1;
        let fields = vec![
            ("MessageSid", format!("SMstatus{n}")),
            ("MessageStatus", text(&value)),
            ("To", "whatsapp:+919811100004".into()),
            ("From", "whatsapp:+12028831111".into()),
        ];
        let (status, answer) = server.post_twilio_form(&fields).await;
        let answer = serde_json::from_str(&answer).unwrap_or(json!({"message": answer}));
        assert_handled(
            &format!("{label} at MessageStatus"),
            status,
            &answer,
            &["status"],
        );
    }
    server.next_customer_is_seen(3).await;
    server.replay_completes().await;
    assert_no_panic();
}

async fn hostile_values_from_the_transaction_system(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    let context = json!({"customer": "9811100005", "customer_type": "partner", "context": {"documents_status": "Approved"}});
    let booking = json!({"event": "created", "customer_number": "9811100005", "booking_id": "B-1",
        "ride_datetime": "2026-12-01 09:30", "ride_status": "confirmed"});
    for (label, value) in all_hostile() {
        for field in ["/customer", "/customer_type", "/context/documents_status"] {
            let mut body = context.clone();
            set(&mut body, field, value.clone());
            let (status, answer) = server
                .transaction("context_change", Some(TRANSACTION_TOKEN), body)
                .await;
            let word = field.rsplit('/').next().unwrap();
            assert_handled(&format!("{label} at {field}"), status, &answer, &[word]);
        }
        for field in [
            "/event",
            "/customer_number",
            "/booking_id",
            "/ride_datetime",
            "/ride_status",
        ] {
            let mut body = booking.clone();
            set(&mut body, field, value.clone());
            let (status, answer) = server
                .transaction("booking", Some(TRANSACTION_TOKEN), body)
                .await;
            let word = field.trim_start_matches('/');
            assert_handled(&format!("{label} at {field}"), status, &answer, &[word]);
        }
    }
    // A field name that cannot be stored.
    let (status, answer) = server
        .transaction(
            "context_change",
            Some(TRANSACTION_TOKEN),
            json!({"customer": "9811100005", "customer_type": "partner", "context": {"a\u{0}b": "x"}}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    // A ride in the year 262,000 is no ride.
    let mut far = booking.clone();
    set(&mut far, "/ride_datetime", json!("+262143-01-01T00:00:00Z"));
    let (status, answer) = server
        .transaction("booking", Some(TRANSACTION_TOKEN), far)
        .await;
    assert_handled(
        "a ride at the end of time",
        status,
        &answer,
        &["ride_datetime"],
    );
    server.next_customer_is_seen(4).await;
    server.replay_completes().await;
    assert_no_panic();
}

async fn hostile_values_at_login_onboarding_and_graphql(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    for (label, value) in all_hostile() {
        for field in ["email", "password"] {
            let mut body = json!({"email": "asha@oneway.cab", "password": "wrong"});
            body[field] = value.clone();
            let (status, answer) = server.post_json("/api/auth/login", &body).await;
            assert!(
                status < 500,
                "{label} at the login's {field}: {status} {answer}"
            );
        }
        for field in ["business_id", "code", "waba_id", "phone_number_id", "state"] {
            let mut body = json!({"business_id": "acme", "code": "c", "waba_id": "1",
                "phone_number_id": "2", "state": "acme.nope"});
            body[field] = value.clone();
            let (status, answer) = server
                .post_json("/api/onboarding/whatsapp/official/callback", &body)
                .await;
            assert!(
                (400..500).contains(&status),
                "{label} at the callback's {field}: {status} {answer}"
            );
        }
        let chat_id = Uuid::new_v4().to_string();
        for (query, variables) in [
            (
                "mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { messageId } }",
                json!({"c": chat_id, "t": value}),
            ),
            (
                "mutation($c: ID!, $t: String!) { applyTag(chatId: $c, tag: $t) { chatId } }",
                json!({"c": chat_id, "t": value}),
            ),
            (
                "query($n: String) { chats(filter: {customerNumber: $n, tag: $n, stakeholder: $n}) { nodes { chatId } } }",
                json!({"n": value}),
            ),
            (
                "query($s: String, $n: Int) { events(stream: $s, after: $n, first: $n) { nodes { position } } }",
                json!({"s": value, "n": value}),
            ),
            (
                "query($n: Int) { chats(first: $n) { nodes { chatId } } }",
                json!({"n": value}),
            ),
            (
                "query($n: String!) { customer(stakeholder: $n, number: $n) { number } }",
                json!({"n": value}),
            ),
            (
                "query($c: ID!, $a: DateTime!) { chatAsOf(chatId: $c, at: $a) { chatId } }",
                json!({"c": value, "a": value}),
            ),
        ] {
            let response = server
                .client
                .post(format!("{}/graphql", server.base))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"query": query, "variables": variables}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert!(status < 500, "{label} in {query}: {status} {answer}");
            if status >= 400 {
                assert_eq!(
                    answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
                    "{answer}"
                );
            }
        }
    }
    // A literal with a NUL is refused before anything runs, naming the argument.
    let response = server
        .client
        .post(format!("{}/graphql", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"query": r#"{ chats(filter: {tag: "a\u0000b"}) { nodes { chatId } } }"#}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["field"], "chats.filter.tag",
        "{answer}"
    );
    server.next_customer_is_seen(5).await;
    assert_no_panic();
}

/// The schema is public (it is in the repository): introspection answers without a token.
/// Data does not.
async fn the_schema_is_public_its_data_is_not(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    server
        .partner_says("919811100009", "wamid.private", 1_764_570_000, "private")
        .await;
    let anonymous = |query: &str| {
        server
            .client
            .post(format!("{}/graphql", server.base))
            .json(&json!({ "query": query }))
            .send()
    };
    let schema: Value = anonymous("{ __schema { queryType { name } } }")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        schema["data"]["__schema"]["queryType"]["name"], "Query",
        "{schema}"
    );
    let data: Value = anonymous("{ chats { nodes { messages { text } } } }")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(data["errors"][0]["message"].is_string(), "{data}");
    assert!(!data.to_string().contains("private"), "{data}");
    assert_no_panic();
}

// ---------------------------------------------------------------------------------------
// 2. An event no read model can apply, already in the log (written by an older release, or
//    by a bug): it is quarantined, the rest goes on, and readiness says so.

async fn an_unreadable_event_in_the_log_is_quarantined_not_fatal(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    server
        .partner_says("919811100006", "wamid.before", 1_764_570_000, "before")
        .await;
    let data = server
        .query(
            r#"{ chats(filter: {customerNumber: "+919811100006"}) { nodes { chatId } } }"#,
            json!({}),
        )
        .await;
    let chat_id = data["chats"]["nodes"][0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    let stream = "conversation-9099039188-+919811100006";
    let raw = server.state.personal.stored();
    let version = raw.read_stream(stream, 0, 100).await.unwrap().len() as u64;
    raw.append(
        stream,
        ExpectedVersion::Exact(version - 1),
        vec![
            NewEvent::new(
                Uuid::new_v4(),
                "MessageReceived",
                json!({"chat_id": 5, "message": "not a message"}),
                Metadata::by("an older release"),
            ),
            NewEvent::new(
                Uuid::new_v4(),
                "MessageReceived",
                json!({"_sealed": "not a seal"}),
                Metadata::by("an older release"),
            ),
        ],
    )
    .await
    .unwrap();
    server.next_customer_is_seen(6).await;
    // The customer whose history holds them is not refused either: deciding passes over
    // what it cannot read, and the message is recorded.
    server
        .partner_says("919811100006", "wamid.after", 1_764_570_100, "after")
        .await;
    let ready: Value = server
        .client
        .get(format!("{}/api/health/ready", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["quarantined"]["chats"].as_u64().unwrap() >= 1,
        "{ready}"
    );
    assert!(
        ready["reason"].as_str().unwrap().contains("quarantine"),
        "{ready}"
    );
    // The chat as it stood is still answered (without what cannot be read).
    let response = server
        .graphql(
            Some(ADMIN_TOKEN),
            "query($c: ID!, $a: DateTime!) { chatAsOf(chatId: $c, at: $a) { chatId } chat(chatId: $c) { history { type } } }",
            json!({"c": chat_id, "a": chrono::Utc::now()}),
        )
        .await;
    assert!(response["data"].is_object(), "{response}");
    server.replay_completes().await;
    let listed = chatledger_projections::quarantine::list(&server.state.read_side.db, None)
        .await
        .unwrap();
    assert!(listed.iter().any(|q| q.read_model == "chats"), "{listed:?}");
    server.next_customer_is_seen(7).await;
    assert_no_panic();
}

// ---------------------------------------------------------------------------------------
// 3. Webhooks without authentication; too many items in one.

async fn unauthenticated_webhooks_are_refused_and_nothing_is_recorded(backend: Backend) {
    count_panics();
    let server = start_with(backend, &[("META_APP_SECRET", "")]).await;
    let head = server.store.head_position().await.unwrap();
    let body = serde_json::to_vec(&meta_text("919811100007", "wamid.anon")).unwrap();
    let anonymous = server
        .client
        .post(format!(
            "{}/api/chats/whatsapp_chat/9099039188",
            server.base
        ))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // Meta-direct with no app secret set: closed, and the answer says what to set.
    let direct = server
        .client
        .post(format!(
            "{}/api/chats/whatsapp_chat/meta-direct",
            server.base
        ))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let said: Value = direct.json().await.unwrap();
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .contains("META_APP_SECRET"),
        "{said}"
    );
    // The app-level webhook, anonymous, with 37,000 unknown changes.
    let changes: Vec<Value> = (0..37_000)
        .map(|i| json!({"field": "x", "value": i}))
        .collect();
    let flood =
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": changes}]});
    let app = server
        .client
        .post(format!("{}/api/webhooks/whatsapp", server.base))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&flood).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(app.status(), 401);
    assert_eq!(
        server.store.head_position().await.unwrap(),
        head,
        "nothing recorded"
    );

    // Authenticated, but more items than one webhook may carry: 413, nothing recorded.
    let flood = json!({"object": "whatsapp_business_account", "entry": [{"id": "1",
        "changes": (0..1_001).map(|i| json!({"field": "x", "value": i})).collect::<Vec<_>>()}]});
    let (status, answer) = server
        .post_json("/api/chats/whatsapp_chat/9099039188", &flood)
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("1000"),
        "{answer}"
    );
    assert_eq!(
        server.store.head_position().await.unwrap(),
        head,
        "nothing recorded"
    );
    assert_no_panic();
}

// ---------------------------------------------------------------------------------------
// 4. Bodies and counts without bounds.

/// Sends `head` and then as many bytes of body as the server takes (up to `total`), and
/// returns the start of the answer (status line and headers) and how many body bytes went
/// out before it came.
async fn stream_body(base: &str, head: String, total: usize) -> (String, usize) {
    let address = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < total {
            write.write_all(&chunk).await?;
            written += chunk.len();
            counter.store(written, Ordering::SeqCst);
        }
        Ok::<_, std::io::Error>(())
    });
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(30), read.read(&mut answer))
        .await
        .expect("the server answers before the body is sent")
        .unwrap();
    let sent_then = sent.load(Ordering::SeqCst);
    writer.abort();
    (
        String::from_utf8_lossy(&answer[..n]).into_owned(),
        sent_then,
    )
}

fn resident_megabytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

async fn bodies_and_counts_are_bounded(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    let size = 256 * 1024 * 1024;
    let before = resident_megabytes();
    // Declared: refused at once, unread.
    let (status, sent) = stream_body(
        &server.base,
        format!(
            "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n"
        ),
        size,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(
        sent < 64 * 1024 * 1024,
        "the server read {sent} bytes before refusing"
    );
    // The unread rest of the body must not be taken for a next request.
    assert!(
        status.to_lowercase().contains("connection: close"),
        "{status}"
    );
    // Chunked, with no length declared: refused at the anonymous limit.
    let (status, sent) = stream_body(
        &server.base,
        "POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n100000\r\n".to_owned(),
        size,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert!(
        sent < 64 * 1024 * 1024,
        "the server read {sent} bytes before refusing"
    );
    println!(
        "resident memory around two 256 MiB posts: {before} MB before, {} MB after",
        resident_megabytes()
    );
    // Twilio never sends more than 10 media: a count of u64::MAX is answered at once.
    let fields = vec![
        ("MessageSid", "SMmany".to_owned()),
        ("From", "whatsapp:+919811100008".into()),
        ("To", "whatsapp:+12028831111".into()),
        ("NumMedia", u64::MAX.to_string()),
        ("MediaUrl0", "https://api.twilio.com/media/1".into()),
        ("MediaContentType0", "image/jpeg".into()),
    ];
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(30), server.post_twilio_form(&fields))
            .await
            .expect("answered");
    assert_eq!(status, 200);
    let health = server
        .client
        .get(format!("{}/api/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_no_panic();
}

// ---------------------------------------------------------------------------------------
// 5. Slow and idle clients are closed by the server.

/// Waits for the server to close `stream` (end of file, or a reset), reading whatever it says.
async fn closed_by_server(mut stream: tokio::net::TcpStream) -> String {
    let mut said = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => said.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    String::from_utf8_lossy(&said).into_owned()
}

async fn slow_and_idle_clients_are_closed(backend: Backend) {
    count_panics();
    let server = start_with(
        backend,
        &[
            ("HTTP_HEADER_TIMEOUT_SECONDS", "1"),
            ("HTTP_BODY_TIMEOUT_SECONDS", "1"),
            ("HTTP_MAX_CONNECTIONS", "8"),
        ],
    )
    .await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(address.clone());
    // Idle: connects and says nothing. More of them than the server serves at once.
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(connect().await.unwrap());
    }
    // Slow headers: half a request line, then nothing.
    let mut slow_headers = connect().await.unwrap();
    slow_headers.write_all(b"GET /api/hea").await.unwrap();
    // Slow body: headers, a tenth of the body, then nothing.
    let mut slow_body = connect().await.unwrap();
    slow_body
        .write_all(b"POST /api/auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"email\":")
        .await
        .unwrap();
    let mut waits = Vec::new();
    for stream in idle {
        waits.push(tokio::spawn(closed_by_server(stream)));
    }
    closed_by_server(slow_headers).await;
    let said = closed_by_server(slow_body).await;
    assert!(said.is_empty() || said.contains("408"), "{said}");
    for wait in waits {
        wait.await.unwrap();
    }
    // And the server still serves.
    let health = server
        .client
        .get(format!("{}/api/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_no_panic();
}

// ---------------------------------------------------------------------------------------
// 6. Password checks.

async fn password_checks_cannot_be_multiplied(backend: Backend) {
    count_panics();
    let server = start(backend).await;
    server
        .register("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let checks = server.state.logins.checks_run();
    let aliased: String = (0..1_000)
        .map(|i| {
            format!(r#"a{i}: login(email: "asha@oneway.cab", password: "guess {i}") {{ token }} "#)
        })
        .collect();
    let response = server
        .client
        .post(format!("{}/graphql", server.base))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"query": format!("mutation {{ {aliased} }}")})).unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert!(status == 400 || status == 413, "{status} {answer}");
    assert_eq!(
        server.state.logins.checks_run(),
        checks,
        "no password was checked for a request of 1,000 logins"
    );

    // Guessing: after the free failures every attempt waits, the right password too, and an
    // early attempt costs no check.
    let mut last = (0, Value::Null);
    for i in 0..8 {
        last = server
            .post_json(
                "/api/auth/login",
                &json!({"email": "asha@oneway.cab", "password": format!("guess {i}")}),
            )
            .await;
    }
    assert_eq!(last.0, 429, "{}", last.1);
    let checks = server.state.logins.checks_run();
    let response = server
        .client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({"email": "asha@oneway.cab", "password": "a good long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(server.state.logins.checks_run(), checks);
    assert_no_panic();
}

chatledger_tests::on_both_backends!(
    hostile_values_in_meta_webhooks,
    hostile_values_in_twilio_webhooks,
    hostile_values_from_the_transaction_system,
    hostile_values_at_login_onboarding_and_graphql,
    the_schema_is_public_its_data_is_not,
    an_unreadable_event_in_the_log_is_quarantined_not_fatal,
    unauthenticated_webhooks_are_refused_and_nothing_is_recorded,
    bodies_and_counts_are_bounded,
    slow_and_idle_clients_are_closed,
    password_checks_cannot_be_multiplied,
);
