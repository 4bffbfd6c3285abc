//! Inbound WhatsApp end to end: the real router on port 0, real HTTP, a real database (SQLite
//! and PostgreSQL), and the real provider payloads in tests/fixtures/whatsapp.

use std::sync::Arc;

use chatledger_adapters::whatsapp::signature::meta_signature;
use chatledger_adapters::whatsapp::twilio::parse_form;
use chatledger_api::config::{parse_channels, record_channels};
use chatledger_core::RecordedEvent;
use chatledger_tests::db::Backend;
use serde_json::{json, Value};

mod common;

use common::*;

fn types(events: &[RecordedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// What each fixture must become.
enum Expect {
    /// A chat opened and one message of this kind (and text, when given).
    Message {
        kind: &'static str,
        text: Option<&'static str>,
        media: bool,
    },
    /// One receipt with this status.
    Receipt { status: &'static str },
    /// One notice on the channel's stream, of this kind.
    Notice { kind: &'static str },
}

const META_FIXTURES: &[(&str, Expect)] = &[
    (
        "meta-text.json",
        Expect::Message {
            kind: "text",
            text: Some("Body Text"),
            media: false,
        },
    ),
    (
        "meta-text-signed-raw.json",
        Expect::Message {
            kind: "text",
            text: Some("Hey there! I am using PyWa."),
            media: false,
        },
    ),
    (
        "meta-image.json",
        Expect::Message {
            kind: "image",
            text: None,
            media: true,
        },
    ),
    (
        "meta-document.json",
        Expect::Message {
            kind: "document",
            text: None,
            media: true,
        },
    ),
    (
        "meta-audio-voice.json",
        Expect::Message {
            kind: "audio",
            text: None,
            media: true,
        },
    ),
    (
        "meta-reaction.json",
        Expect::Message {
            kind: "reaction",
            text: Some("😮"),
            media: false,
        },
    ),
    (
        "meta-location.json",
        Expect::Message {
            kind: "location",
            text: None,
            media: false,
        },
    ),
    (
        "meta-contacts.json",
        Expect::Message {
            kind: "contacts",
            text: None,
            media: false,
        },
    ),
    (
        "meta-unsupported.json",
        Expect::Message {
            kind: "unsupported",
            text: None,
            media: false,
        },
    ),
    (
        "meta-reply-context.json",
        Expect::Message {
            kind: "text",
            text: None,
            media: false,
        },
    ),
    (
        "meta-value-level-errors.json",
        Expect::Message {
            kind: "interactive",
            text: None,
            media: false,
        },
    ),
    (
        "meta-interactive-button-reply.json",
        Expect::Message {
            kind: "interactive",
            text: Some("title"),
            media: false,
        },
    ),
    (
        "meta-button-template-quick-reply.json",
        Expect::Message {
            kind: "button",
            text: None,
            media: false,
        },
    ),
    (
        "meta-interactive-list-reply.json",
        Expect::Message {
            kind: "interactive",
            text: None,
            media: false,
        },
    ),
    ("meta-status-sent.json", Expect::Receipt { status: "sent" }),
    (
        "meta-status-delivered.json",
        Expect::Receipt {
            status: "delivered",
        },
    ),
    ("meta-status-read.json", Expect::Receipt { status: "read" }),
    (
        "meta-status-failed.json",
        Expect::Receipt { status: "failed" },
    ),
    (
        "meta-change-errors-no-messages.json",
        Expect::Notice { kind: "errors" },
    ),
    (
        "meta-error-obj-190-expired-token.json",
        Expect::Notice {
            kind: "unrecognized",
        },
    ),
    (
        "meta-error-obj-131047-reengagement.json",
        Expect::Notice {
            kind: "unrecognized",
        },
    ),
    (
        "meta-send-error-response-130429.json",
        Expect::Notice {
            kind: "unrecognized",
        },
    ),
];

const TWILIO_FIXTURES: &[(&str, Expect)] = &[
    (
        "twilio-wa-inbound-text.form",
        Expect::Message {
            kind: "text",
            text: Some("Msg"),
            media: false,
        },
    ),
    (
        "twilio-inbound-media-2-attachments.form",
        Expect::Message {
            kind: "document",
            text: Some("Msg"),
            media: true,
        },
    ),
    // Twilio's status callback here names no recipient: kept on the channel's stream.
    (
        "twilio-status-delivered.form",
        Expect::Notice {
            kind: "receipt_without_recipient",
        },
    ),
];

fn check(
    name: &str,
    channel: &str,
    expect: &Expect,
    events: &[RecordedEvent],
    raw: impl Fn(&RecordedEvent) -> Value,
) {
    // A message with media also sets the media reactor going, whose outcome (the file kept, or
    // why not) may reach the log before it is read here: that is the reactor's to record, not
    // the webhook's, and its own tests check it.
    let events: Vec<RecordedEvent> = events
        .iter()
        .filter(|e| !e.event_type.starts_with("Media"))
        .cloned()
        .collect();
    let events = events.as_slice();
    match expect {
        Expect::Message { kind, text, media } => {
            assert_eq!(
                types(events),
                vec!["ChatOpened", "MessageReceived", "SlaClockStarted"],
                "{name}"
            );
            let (opened, message) = (&events[0], &events[1]);
            assert!(
                message
                    .stream
                    .starts_with(&format!("conversation-{channel}-+")),
                "{name}: {}",
                message.stream
            );
            assert_eq!(opened.stream, message.stream);
            assert_eq!(
                opened.data["chat_id"], message.data["chat_id"],
                "{name}: the message is in the opened chat"
            );
            assert_eq!(opened.data["reason"], "FirstMessage");
            assert_eq!(opened.data["channel"], channel, "{name}");
            let stakeholder = if channel == PARTNER {
                "partner"
            } else {
                "customer"
            };
            assert_eq!(opened.data["stakeholder"], stakeholder, "{name}");
            assert_eq!(opened.data["customer"]["kind"], "phone", "{name}");
            assert_eq!(message.data["kind"], *kind, "{name}");
            if let Some(text) = text {
                assert_eq!(message.data["text"], *text, "{name}");
            }
            assert_eq!(
                message.data.get("media").is_some(),
                *media,
                "{name}: media {}",
                message.data
            );
            assert_eq!(
                raw(message),
                message.data["raw"].clone(),
                "{name}: the raw payload is kept"
            );
            assert_eq!(message.metadata.extra["channel"], channel);
            assert!(message.metadata.received_at.is_some());
        }
        Expect::Receipt { status } => {
            assert_eq!(types(events), vec!["ReceiptRecorded"], "{name}");
            let receipt = &events[0];
            assert_eq!(receipt.data["status"], *status, "{name}");
            assert_eq!(
                receipt.data["known_message"], false,
                "{name}: we never sent it"
            );
            assert!(
                receipt
                    .stream
                    .starts_with(&format!("conversation-{channel}-+")),
                "{name}"
            );
            if *status == "failed" {
                assert_eq!(receipt.data["errors"][0]["code"], 130472);
                assert!(receipt.data["errors"][0]["title"].is_string());
            }
            assert_eq!(
                raw(receipt),
                receipt.data["raw"].clone(),
                "{name}: the raw payload is kept"
            );
        }
        Expect::Notice { kind } => {
            assert_eq!(types(events), vec!["ProviderNoticeReceived"], "{name}");
            assert_eq!(events[0].stream, format!("channel-{channel}"));
            assert_eq!(events[0].data["kind"], *kind, "{name}");
            assert!(!events[0].data["raw"].is_null());
        }
    }
}

/// The raw part of a Meta fixture an event must keep: its message or its status.
fn meta_raw(payload: &Value, event: &RecordedEvent) -> Value {
    let value = &payload["entry"][0]["changes"][0]["value"];
    match event.event_type.as_str() {
        "MessageReceived" => {
            let mut raw = json!({"message": value["messages"][0]});
            if let Some(contact) = value["contacts"].get(0) {
                raw["contact"] = contact.clone();
            }
            raw
        }
        _ => json!({"status": value["statuses"][0]}),
    }
}

async fn every_fixture_is_recorded(backend: Backend) {
    // Fixtures reuse ids (`wamid.xyzxyz`) across files, so each gets a log of its own.
    for (name, expect) in META_FIXTURES {
        let server = start(backend).await;
        let body = fixture(name);
        let response = server.post_meta(PARTNER, body.clone()).await;
        assert_eq!(
            response.status(),
            200,
            "{name}: {}",
            response.text().await.unwrap()
        );
        let payload: Value = serde_json::from_slice(&body).unwrap();
        check(name, PARTNER, expect, &server.events().await, |e| {
            meta_raw(&payload, e)
        });
    }
    for (name, expect) in TWILIO_FIXTURES {
        let server = start(backend).await;
        let body = fixture(name);
        let response = server
            .post_twilio("twilio-us", body.trim_ascii().to_vec())
            .await;
        assert_eq!(response.status(), 200, "{name}");
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("<Response></Response>"));
        let fields =
            chatledger_adapters::whatsapp::twilio::raw_fields(&parse_form(body.trim_ascii()));
        check(name, "twilio-us", expect, &server.events().await, |_| {
            fields.clone()
        });
    }
}

async fn the_signed_fixture_is_accepted_byte_for_byte_and_nothing_else_is(backend: Backend) {
    let server = start(backend).await;
    let body = fixture("meta-text-signed-raw.json");
    let post = |body: Vec<u8>, signature: Option<&str>| {
        let mut request = server
            .client
            .post(format!("{}/api/chats/whatsapp_chat/{PARTNER}", server.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature.to_owned());
        }
        request.send()
    };
    let mut one_byte_changed = body.clone();
    let at = one_byte_changed.iter().position(|b| *b == b'H').unwrap();
    one_byte_changed[at] = b'h';
    let reserialised =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
    for (what, bad, signature) in [
        ("one byte changed", one_byte_changed, Some(A1_SIGNATURE)),
        ("re-serialised", reserialised, Some(A1_SIGNATURE)),
        ("unsigned", body.clone(), None),
        (
            "signed with another secret",
            body.clone(),
            Some(&*meta_signature(b"not the app secret", &body)),
        ),
    ] {
        let response = post(bad, signature).await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "unauthorized", "{what}");
        assert!(
            server.events().await.is_empty(),
            "{what}: the log is unchanged"
        );
    }
    let response = post(body.clone(), Some(A1_SIGNATURE)).await.unwrap();
    assert_eq!(response.status(), 200);
    let events = server.events().await;
    assert_eq!(
        types(&events),
        vec!["ChatOpened", "MessageReceived", "SlaClockStarted"]
    );
    assert_eq!(events[1].data["text"], "Hey there! I am using PyWa.");
    assert_eq!(
        events[1].stream,
        format!("conversation-{PARTNER}-+972544401243")
    );
}

async fn a_redelivery_leaves_the_log_as_it_was(backend: Backend) {
    let server = start(backend).await;
    for name in [
        "meta-text.json",
        "meta-status-failed.json",
        "meta-change-errors-no-messages.json",
    ] {
        let first = server.post_meta(PARTNER, fixture(name)).await;
        assert_eq!(first.status(), 200, "{name}");
        let before = server.events().await;
        let again = server.post_meta(PARTNER, fixture(name)).await;
        assert_eq!(
            again.status(),
            200,
            "{name}: a redelivery is still acknowledged"
        );
        let answer: Value = again.json().await.unwrap();
        assert_eq!(answer["recorded"]["duplicates"], 1, "{name}: {answer}");
        assert_eq!(
            server.events().await,
            before,
            "{name}: nothing new was recorded"
        );
    }
}

fn text_payload(from: &str, id: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "919099039188", "phone_number_id": "1"},
          "contacts": [{"profile": {"name": "Ravi"}, "wa_id": from}],
          "messages": [{"from": from, "id": id, "timestamp": "1763800000", "type": "text", "text": {"body": text}}]}}]}]}))
    .unwrap()
}

async fn a_post_with_an_old_and_a_new_message_records_the_new_one(backend: Backend) {
    let server = start(backend).await;
    let post = |ids: &[&str]| {
        let messages: Vec<Value> = ids
            .iter()
            .map(|id| json!({"from": "919638120888", "id": id, "timestamp": "1763800000", "type": "text", "text": {"body": id}}))
            .collect();
        serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": {"metadata": {"phone_number_id": "1"}, "messages": messages}}]}]}))
        .unwrap()
    };
    // Meta may put one message twice in a post: it is recorded once, the copy counted.
    let first: Value = server
        .post_meta(PARTNER, post(&["wamid.old", "wamid.old"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        first["recorded"],
        json!({"messages": 1, "receipts": 0, "notices": 0, "duplicates": 1}),
        "{first}"
    );
    let mixed: Value = server
        .post_meta(PARTNER, post(&["wamid.old", "wamid.new"]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        mixed["recorded"],
        json!({"messages": 1, "receipts": 0, "notices": 0, "duplicates": 1}),
        "{mixed}"
    );
}

async fn concurrent_webhooks_for_one_customer_make_one_chat(backend: Backend) {
    let server = Arc::new(start(backend).await);
    let posts = (0..200).map(|i| {
        let server = server.clone();
        tokio::spawn(async move {
            let body = text_payload(
                "919638120888",
                &format!("wamid.concurrent.{i}"),
                &format!("message {i}"),
            );
            server.post_meta(PARTNER, body).await.status()
        })
    });
    for post in posts {
        assert_eq!(post.await.unwrap(), 200);
    }
    let events = server.events().await;
    let stream = format!("conversation-{PARTNER}-+919638120888");
    assert!(events.iter().all(|e| e.stream == stream));
    assert_eq!(
        types(&events)
            .iter()
            .filter(|t| **t == "ChatOpened")
            .count(),
        1,
        "one chat"
    );
    assert_eq!(
        events[0].event_type, "ChatOpened",
        "the chat opens before its first message"
    );
    let messages: Vec<&RecordedEvent> = events
        .iter()
        .filter(|e| e.event_type == "MessageReceived")
        .collect();
    assert_eq!(messages.len(), 200);
    let ids: std::collections::HashSet<&str> = messages
        .iter()
        .map(|e| e.data["provider_message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 200, "every message exactly once");
    assert!(messages
        .iter()
        .all(|m| m.data["chat_id"] == events[0].data["chat_id"]));
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        // The chat's opening, 200 messages, and the SLA clock the first one started.
        (0..202).collect::<Vec<_>>()
    );
    // The chain covers the events as stored, with the customer's personal data sealed.
    let stored = server
        .state
        .personal
        .stored()
        .read_stream(&events[0].stream, 0, 1_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), events.len());
    chatledger_tests::contract::assert_hash_chains(&stored);
}

async fn bad_input_gets_a_clear_4xx_and_records_nothing(backend: Backend) {
    let server = start(backend).await;
    let url = format!("{}/api/chats/whatsapp_chat/{PARTNER}", server.base);
    // A client per request: the server closes a connection it refused a body on.
    let send = |content_type: &'static str, body: Vec<u8>| {
        reqwest::Client::new()
            .post(&url)
            .header("content-type", content_type)
            .header("x-webhook-secret", PINBOT_SECRET)
            .body(body)
            .send()
    };
    let huge = {
        let mut body = b"{\"object\":\"whatsapp_business_account\",\"padding\":\"".to_vec();
        body.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 10));
        body.extend(b"\"}");
        body
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            "application/json",
            b"{\"entry\": [".to_vec(),
            400,
            "invalid_json",
        ),
        ("empty body", "application/json", vec![], 400, "empty_body"),
        (
            "not an object",
            "application/json",
            b"[1, 2]".to_vec(),
            400,
            "invalid_payload",
        ),
        (
            "wrong content type",
            "text/plain",
            fixture("meta-text.json"),
            415,
            "unsupported_media_type",
        ),
        ("huge body", "application/json", huge, 413, "body_too_large"),
    ];
    for (what, content_type, body, status, code) in cases {
        let response = send(content_type, body).await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        let error: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(error["error"], code, "{what}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert!(server.events().await.is_empty(), "nothing was recorded");
    // A fresh client: the server closes the connection it refused the huge body on, and a
    // pooled connection may not have noticed yet.
    let health = reqwest::Client::new()
        .get(format!("{}/api/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server stays up");
    // And it still records valid input.
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-text.json"))
            .await
            .status(),
        200
    );
}

async fn a_number_we_do_not_handle_is_refused_with_404(backend: Backend) {
    let server = start(backend).await;
    for number in ["9638120888", "919638120888"] {
        let response = server.post_meta(number, fixture("meta-text.json")).await;
        assert_eq!(response.status(), 404);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "unknown_number");
        assert!(error["message"].as_str().unwrap().contains(number));
    }
    assert!(server.events().await.is_empty());
}

async fn meta_verification(backend: Backend) {
    let server = start(backend).await;
    let verify = |number: &str, token: &str| {
        server
            .client
            .get(format!(
                "{}/api/chats/whatsapp_chat/{number}?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}",
                server.base
            ))
            .send()
    };
    let ok = verify(PARTNER, VERIFY_TOKEN).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    assert_eq!(verify(PARTNER, "wrong").await.unwrap().status(), 403);
    assert_eq!(
        verify("9638120888", VERIFY_TOKEN).await.unwrap().status(),
        404
    );
}

async fn twilio_signatures_are_checked(backend: Backend) {
    let server = start(backend).await;
    let body = fixture("twilio-wa-inbound-text.form").trim_ascii().to_vec();
    let forged = server
        .client
        .post(format!("{}/api/webhooks/twilio/twilio-us", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert!(server.events().await.is_empty());
    assert_eq!(server.post_twilio("twilio-us", body).await.status(), 200);
    let events = server.events().await;
    assert_eq!(events[1].stream, "conversation-twilio-us-+14133881111");
    assert_eq!(
        server
            .post_twilio(PARTNER, b"Body=x".to_vec())
            .await
            .status(),
        404,
        "not a Twilio channel"
    );
}

async fn the_app_webhook_routes_by_phone_number_id(backend: Backend) {
    let server = start(backend).await;
    let body = fixture("meta-text-signed-raw.json");
    let post = |body: Vec<u8>, signature: String| {
        server
            .client
            .post(format!("{}/api/webhooks/whatsapp", server.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    };
    let response = post(body.clone(), A1_SIGNATURE.into()).await.unwrap();
    assert_eq!(response.status(), 200);
    let events = server.events().await;
    assert_eq!(
        events[1].stream, "conversation-meta-direct-+972544401243",
        "routed by metadata.phone_number_id"
    );

    let unknown = fixture("meta-text.json"); // phone_number_id 1122334455667 is not ours
    let signature = meta_signature(META_APP_SECRET.as_bytes(), &unknown);
    let response = post(unknown, signature).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "unknown_phone_number_id"
    );
    assert_eq!(
        server.events().await.len(),
        3,
        "nothing recorded for a number that is not ours"
    );
    assert_eq!(post(body, "sha256=00".into()).await.unwrap().status(), 401);
}

async fn the_channel_configuration_is_recorded_once_per_change(backend: Backend) {
    let (_db, store) = backend.open().await;
    let configured = parse_channels(&channels_yaml(), "test").unwrap();
    assert!(
        record_channels(store.as_ref(), &configured).await.unwrap(),
        "first start records it"
    );
    assert!(
        !record_channels(store.as_ref(), &configured).await.unwrap(),
        "an unchanged file records nothing"
    );
    let mut changed = configured.clone();
    changed.channels.pop();
    assert!(
        record_channels(store.as_ref(), &changed).await.unwrap(),
        "a change records a new version"
    );
    let history = store
        .read_stream("config-channels-all", 0, 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    let text = serde_json::to_string(&history).unwrap();
    assert!(
        !text.contains(PINBOT_SECRET),
        "secret values are never recorded"
    );
    assert_eq!(
        history[0].data["channels"][0]["auth"]["secret_header"]["env"],
        "PINBOT_WEBHOOK_SECRET"
    );
}

async fn one_post_with_several_customers_entries_and_statuses(backend: Backend) {
    let server = start(backend).await;
    let message = |from: &str, id: &str| json!({"from": from, "id": id, "timestamp": 1763800000, "type": "text", "text": {"body": id}});
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "1", "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "1"},
            "messages": [message("919638120888", "wamid.a1"), message("919726700000", "wamid.b1"), message("919638120888", "wamid.a2")]}}]},
        {"id": "1", "changes": [{"field": "messages", "value": {"metadata": {"phone_number_id": "1"},
            "statuses": [{"id": "wamid.sent1", "status": "delivered", "timestamp": 1763800001, "recipient_id": "919638120888"}]}},
            {"field": "account_update", "value": {"event": "VERIFIED_ACCOUNT"}}]}
    ]});
    let response = server
        .post_meta(PARTNER, serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["recorded"],
        json!({"messages": 3, "receipts": 1, "notices": 1, "duplicates": 0})
    );
    let events = server.events().await;
    let in_stream = |stream: &str| {
        events
            .iter()
            .filter(|e| e.stream == stream)
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        in_stream(&format!("conversation-{PARTNER}-+919638120888")),
        vec![
            "ChatOpened",
            "MessageReceived",
            "SlaClockStarted",
            "MessageReceived",
            "ReceiptRecorded"
        ]
    );
    assert_eq!(
        in_stream(&format!("conversation-{PARTNER}-+919726700000")),
        vec!["ChatOpened", "MessageReceived", "SlaClockStarted"]
    );
    assert_eq!(
        in_stream(&format!("channel-{PARTNER}")),
        vec!["ProviderNoticeReceived"]
    );
}

async fn a_sender_known_only_by_user_id_gets_a_conversation(backend: Backend) {
    let server = start(backend).await;
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "1"},
        "contacts": [{"profile": {"name": "Anon", "username": "anon"}, "user_id": "US.13491208655302741918"}],
        "messages": [{"from_user_id": "US.13491208655302741918", "id": "wamid.bsuid", "timestamp": "1763800000",
                      "type": "text", "text": {"body": "no number"}}]}}]}]});
    assert_eq!(
        server
            .post_meta(PARTNER, serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
    let events = server.events().await;
    assert_eq!(
        types(&events),
        vec!["ChatOpened", "MessageReceived", "SlaClockStarted"]
    );
    assert_eq!(
        events[1].stream,
        format!("conversation-{PARTNER}-US.13491208655302741918")
    );
    assert_eq!(
        events[1].data["customer"],
        json!({"user_id": "US.13491208655302741918", "name": "Anon"})
    );
}

chatledger_tests::on_both_backends!(
    one_post_with_several_customers_entries_and_statuses,
    a_sender_known_only_by_user_id_gets_a_conversation,
    every_fixture_is_recorded,
    the_signed_fixture_is_accepted_byte_for_byte_and_nothing_else_is,
    a_redelivery_leaves_the_log_as_it_was,
    a_post_with_an_old_and_a_new_message_records_the_new_one,
    concurrent_webhooks_for_one_customer_make_one_chat,
    bad_input_gets_a_clear_4xx_and_records_nothing,
    a_number_we_do_not_handle_is_refused_with_404,
    meta_verification,
    twilio_signatures_are_checked,
    the_app_webhook_routes_by_phone_number_id,
    the_channel_configuration_is_recorded_once_per_change,
);
