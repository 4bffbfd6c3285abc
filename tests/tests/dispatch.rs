//! Sending through providers: the HTTP sender against a local fake that speaks the Cloud
//! API and Twilio's Messages API, and the dispatcher across a restart.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatledger_adapters::whatsapp::send::{Endpoint, HttpSender};
use chatledger_application::conversations::Conversations;
use chatledger_core::conversation::{
    ConversationCommand, ConversationRef, Customer, CustomerKey, InboundMessage, Receipt,
};
use chatledger_core::sender::{MessageSender, OutboundMessage};
use chatledger_core::Metadata;
use chatledger_projections::dispatch::{DispatchLimits, Dispatcher};
use chatledger_projections::tail::LogTail;
use chatledger_tests::db::Backend;
use chrono::Utc;
use common::FakeProvider;
use serde_json::json;
use uuid::Uuid;

fn message() -> OutboundMessage {
    OutboundMessage {
        message_id: "m-1".into(),
        to: "+919638120888".into(),
        text: Some("hello".into()),
        template: None,
        media: None,
    }
}

fn cloud(provider: &FakeProvider) -> HttpSender {
    let endpoint = Endpoint::CloudApi {
        media: chatledger_core::channel::MediaDelivery::Upload,
        url: format!("{}/v21.0/123/messages", provider.url),
        headers: vec![("Authorization".into(), "Bearer test-token".into())],
    };
    HttpSender::new(
        HashMap::from([("c".to_owned(), endpoint)]),
        Duration::from_secs(5),
    )
}

#[tokio::test]
async fn cloud_api_answers_are_classified() {
    let provider = FakeProvider::start().await;
    let sender = cloud(&provider);
    let sent = sender.send("c", &message()).await.unwrap();
    assert_eq!(sent.provider_message_id, "wamid.fake.1");
    assert_eq!(
        provider.requests()[0].headers["authorization"],
        "Bearer test-token"
    );

    // Rate limits and server trouble are transient; an expired token is not.
    let rate_limit: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/whatsapp/meta-send-error-response-130429.json"
        ))
        .unwrap(),
    )
    .unwrap();
    provider.answer_next(400, rate_limit);
    let error = sender.send("c", &message()).await.unwrap_err();
    assert!(error.transient, "130429 is a rate limit: {error}");
    assert_eq!(error.code, Some(130429));

    provider.answer_next(
        429,
        json!({"error": {"message": "Too many calls", "code": 80007}}),
    );
    assert!(sender.send("c", &message()).await.unwrap_err().transient);

    let expired: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/whatsapp/meta-error-obj-190-expired-token.json"
        ))
        .unwrap(),
    )
    .unwrap();
    provider.answer_next(401, json!({"error": expired}));
    let error = sender.send("c", &message()).await.unwrap_err();
    assert!(!error.transient);
    assert_eq!(error.code, Some(190));
    assert!(error.message.contains("Session has expired"), "{error}");

    let unknown = sender
        .send("no-such-channel", &message())
        .await
        .unwrap_err();
    assert!(!unknown.transient && unknown.message.contains("no way to send"));
}

#[tokio::test]
async fn twilio_messages_api() {
    let provider = FakeProvider::start().await;
    let endpoint = Endpoint::Twilio {
        url: format!("{}/2010-04-01/Accounts/AC123/Messages.json", provider.url),
        account_sid: "AC123".into(),
        auth_token: "twilio-token".into(),
        from: "12028831111".into(),
    };
    let sender = HttpSender::new(
        HashMap::from([("t".to_owned(), endpoint)]),
        Duration::from_secs(5),
    );
    provider.answer_next(201, json!({"sid": "SM0123456789", "status": "queued"}));
    let sent = sender.send("t", &message()).await.unwrap();
    assert_eq!(sent.provider_message_id, "SM0123456789");
    let request = &provider.requests()[0];
    assert_eq!(request.path, "/2010-04-01/Accounts/AC123/Messages.json");
    assert!(request.headers["authorization"].starts_with("Basic "));
    let form: HashMap<String, String> = form_urlencoded::parse(request.raw.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(form["To"], "whatsapp:+919638120888");
    assert_eq!(form["From"], "whatsapp:+12028831111");
    assert_eq!(form["Body"], "hello");

    provider.answer_next(
        400,
        json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient"}),
    );
    let error = sender.send("t", &message()).await.unwrap_err();
    assert_eq!((error.code, error.transient), (Some(21610), false));
}

/// A reply queued while no dispatcher ran is sent by the next one to start, once.
async fn a_message_queued_before_a_restart_is_sent_once(backend: Backend) {
    let (_db, store) = backend.open().await;
    let provider = FakeProvider::start().await;
    let conversations = Arc::new(Conversations::new(store.clone()));
    let conversation = ConversationRef {
        channel: "c".into(),
        channel_number: "919099039188".into(),
        stakeholder: "partner".into(),
        customer: CustomerKey::Phone("+919638120888".into()),
    };
    let stream = conversation.stream();
    let chat_id = Uuid::new_v4();
    let incoming = InboundMessage {
        sent_at: Some(Utc::now()),
        ..chatledger_tests::messages::text_message("wamid.in", "+919638120888", "hi")
    };
    let commands = vec![
        ConversationCommand::ReceiveMessage {
            conversation,
            message: Box::new(incoming),
            new_chat_id: chat_id,
            now: Utc::now(),
        },
        ConversationCommand::SendReply {
            chat_id,
            message_id: Uuid::new_v4(),
            text: "queued while we were down".into(),
            by: "asha".into(),
            now: Utc::now(),
        },
    ];
    conversations
        .handle(&stream, commands, &Metadata::by("test"))
        .await
        .unwrap();

    let start = || {
        let endpoint = Endpoint::CloudApi {
            media: chatledger_core::channel::MediaDelivery::Upload,
            url: format!("{}/123/messages", provider.url),
            headers: vec![("apikey".into(), "k".into())],
        };
        let sender = Arc::new(HttpSender::new(
            HashMap::from([("c".to_owned(), endpoint)]),
            Duration::from_secs(5),
        ));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let dispatcher = Dispatcher::new(
            store.clone(),
            conversations.clone(),
            sender,
            DispatchLimits::default(),
        );
        tokio::spawn(dispatcher.run(LogTail::new(store.clone()), stopped));
        stop
    };
    let first = start();
    let dispatched = async {
        loop {
            let events = store.read_stream(&stream, 0, 10).await.unwrap();
            if events.iter().any(|e| e.event_type == "MessageDispatched") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), dispatched)
        .await
        .expect("the queued reply is sent");
    first.send_replace(true);
    let second = start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.send_replace(true);
    assert_eq!(
        provider.requests().len(),
        1,
        "a dispatched message is not sent again by the next dispatcher"
    );
    assert_eq!(
        provider.requests()[0].body["text"]["body"],
        "queued while we were down"
    );
}

/// A try recorded with no outcome (its process died between recording it and recording what
/// the provider said) is not sent again blindly: a receipt that echoes our id settles it as
/// sent; without one, it goes again once the grace is over, as try 2, and only once.
async fn a_try_with_no_outcome_waits_for_its_receipt_before_it_goes_again(backend: Backend) {
    let (_db, store) = backend.open().await;
    let provider = FakeProvider::start().await;
    let conversations = Arc::new(Conversations::new(store.clone()));
    let conversation = ConversationRef {
        channel: "c".into(),
        channel_number: "919099039188".into(),
        stakeholder: "partner".into(),
        customer: CustomerKey::Phone("+919638120888".into()),
    };
    let stream = conversation.stream();
    let chat_id = Uuid::new_v4();
    let (with_receipt, without) = (Uuid::new_v4(), Uuid::new_v4());
    let incoming = InboundMessage {
        sent_at: Some(Utc::now()),
        ..chatledger_tests::messages::text_message("wamid.in", "+919638120888", "hi")
    };
    let mut commands = vec![ConversationCommand::ReceiveMessage {
        conversation,
        message: Box::new(incoming),
        new_chat_id: chat_id,
        now: Utc::now(),
    }];
    for message_id in [with_receipt, without] {
        commands.push(ConversationCommand::SendReply {
            chat_id,
            message_id,
            text: format!("reply {message_id}"),
            by: "asha".into(),
            now: Utc::now(),
        });
        // Made by a process that died before it heard the answer.
        commands.push(ConversationCommand::RecordDispatchAttempt {
            message_id,
            attempt: 1,
            now: Utc::now(),
        });
    }
    conversations
        .handle(&stream, commands, &Metadata::by("test"))
        .await
        .unwrap();

    let endpoint = Endpoint::CloudApi {
        media: chatledger_core::channel::MediaDelivery::Upload,
        url: format!("{}/123/messages", provider.url),
        headers: vec![("apikey".into(), "k".into())],
    };
    let sender = Arc::new(HttpSender::new(
        HashMap::from([("c".to_owned(), endpoint)]),
        Duration::from_secs(5),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let limits = DispatchLimits {
        unknown_grace: Duration::from_secs(1),
        recipient_interval: Duration::ZERO,
        ..DispatchLimits::default()
    };
    let dispatcher = Dispatcher::new(store.clone(), conversations.clone(), sender, limits);
    tokio::spawn(dispatcher.run(LogTail::new(store.clone()), stopped));

    // The provider's receipt for the first, echoing our id, reaches us within the grace.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(provider.requests().is_empty(), "nothing is sent blindly");
    let receipt = Receipt {
        provider: "meta".into(),
        provider_message_id: "wamid.before-the-crash".into(),
        status: "sent".into(),
        at: None,
        recipient: Customer {
            phone: Some("+919638120888".into()),
            ..Customer::default()
        },
        errors: vec![],
        callback: Some(with_receipt.to_string()),
        raw: json!({"id": "wamid.before-the-crash", "status": "sent"}),
    };
    conversations
        .handle(
            &stream,
            vec![ConversationCommand::RecordReceipt {
                receipt: Box::new(receipt),
                now: Utc::now(),
            }],
            &Metadata::by("test"),
        )
        .await
        .unwrap();

    let both_settled = async {
        loop {
            let events = store.read_stream(&stream, 0, 100).await.unwrap();
            let settled: Vec<_> = events
                .iter()
                .filter(|e| e.event_type == "MessageDispatched")
                .map(|e| e.data.clone())
                .collect();
            if settled.len() == 2 {
                return settled;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let settled = tokio::time::timeout(Duration::from_secs(30), both_settled)
        .await
        .expect("both are settled");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.send_replace(true);

    let requests = provider.requests();
    assert_eq!(requests.len(), 1, "only the one nobody heard of goes again");
    assert_eq!(
        requests[0].body["biz_opaque_callback_data"],
        without.to_string()
    );
    let outcome = |id: Uuid| {
        settled
            .iter()
            .find(|d| d["message_id"] == id.to_string())
            .unwrap()
            .clone()
    };
    assert_eq!(
        outcome(with_receipt)["provider_message_id"],
        "wamid.before-the-crash"
    );
    assert_eq!(outcome(without)["provider_message_id"], "wamid.fake.1");
    assert_eq!(outcome(without)["attempts"], 2, "sent as the second try");
    let tries = store
        .read_stream(&stream, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "DispatchAttempted")
        .count();
    assert_eq!(tries, 3, "two before the crash, one after it");
}

/// A try that failed in another process and said when to go on is made again then, not after
/// the grace an unknown try waits: its outcome is known.
async fn a_try_that_failed_elsewhere_goes_again_when_it_said(backend: Backend) {
    let (_db, store) = backend.open().await;
    let provider = FakeProvider::start().await;
    let conversations = Arc::new(Conversations::new(store.clone()));
    let conversation = ConversationRef {
        channel: "c".into(),
        channel_number: "919099039188".into(),
        stakeholder: "partner".into(),
        customer: CustomerKey::Phone("+919638120888".into()),
    };
    let stream = conversation.stream();
    let chat_id = Uuid::new_v4();
    let message_id = Uuid::new_v4();
    let incoming = InboundMessage {
        sent_at: Some(Utc::now()),
        ..chatledger_tests::messages::text_message("wamid.in", "+919638120888", "hi")
    };
    // Another process tried, the provider was busy, and it gave way before the next try.
    let commands = vec![
        ConversationCommand::ReceiveMessage {
            conversation,
            message: Box::new(incoming),
            new_chat_id: chat_id,
            now: Utc::now(),
        },
        ConversationCommand::SendReply {
            chat_id,
            message_id,
            text: "after a busy provider".into(),
            by: "asha".into(),
            now: Utc::now(),
        },
        ConversationCommand::RecordDispatchAttempt {
            message_id,
            attempt: 1,
            now: Utc::now(),
        },
        ConversationCommand::RecordDispatch {
            message_id,
            outcome: chatledger_core::conversation::DispatchOutcome::Retrying {
                code: Some(130429),
                error: "Rate limit hit".into(),
                retry_at: Utc::now() + chrono::Duration::milliseconds(300),
            },
            attempts: 1,
            now: Utc::now(),
        },
    ];
    conversations
        .handle(&stream, commands, &Metadata::by("test"))
        .await
        .unwrap();
    let sender = Arc::new(HttpSender::new(
        HashMap::from([(
            "c".to_owned(),
            Endpoint::CloudApi {
                media: chatledger_core::channel::MediaDelivery::Upload,
                url: format!("{}/123/messages", provider.url),
                headers: vec![("apikey".into(), "k".into())],
            },
        )]),
        Duration::from_secs(5),
    ));
    let limits = DispatchLimits {
        unknown_grace: Duration::from_secs(3_600),
        recipient_interval: Duration::ZERO,
        ..DispatchLimits::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let dispatcher = Dispatcher::new(store.clone(), conversations.clone(), sender, limits);
    tokio::spawn(dispatcher.run(LogTail::new(store.clone()), stopped));
    let dispatched = async {
        loop {
            let events = store.read_stream(&stream, 0, 100).await.unwrap();
            if let Some(e) = events.iter().find(|e| e.event_type == "MessageDispatched") {
                return e.data.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // A guard against hanging: the grace alone would be an hour.
    let dispatched = tokio::time::timeout(Duration::from_secs(60), dispatched)
        .await
        .expect("sent when the failed try said, not after the grace");
    stop.send_replace(true);
    assert_eq!(dispatched["attempts"], 2);
    assert_eq!(provider.requests().len(), 1);
}

chatledger_tests::on_both_backends!(
    a_message_queued_before_a_restart_is_sent_once,
    a_try_with_no_outcome_waits_for_its_receipt_before_it_goes_again,
    a_try_that_failed_elsewhere_goes_again_when_it_said,
);
