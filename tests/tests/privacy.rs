//! Personal data: sealed in the log from the start, and gone from the whole database once a
//! customer is forgotten, while the log still verifies and other customers keep theirs.

mod common;

use chatledger_core::conversation::CustomerKey;
use chatledger_projections::audit::audit_log;
use chatledger_tests::db::Backend;
use common::*;
use serde_json::json;

const RAMESH: &str = "919638120888";
const SITA: &str = "919811122233";
const RAMESH_TEXT: &str = "my flat is 42 Elm Street";
const REPLY_TEXT: &str = "we will come to Elm Street at nine";
const SITA_TEXT: &str = "please call me tomorrow";

impl Server {
    async fn customer_says(&self, from: &str, name: &str, id: &str, text: &str) {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": name}, "wa_id": from}],
              "messages": [{"from": from, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(),
                "type": "text", "text": {"body": text}}]}}]}]});
        let response = self
            .post_meta(PARTNER, serde_json::to_vec(&body).unwrap())
            .await;
        assert_eq!(response.status(), 200);
    }

    async fn settled(&self) {
        let head = self.store.head_position().await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.state.read_side.wait_for(head),
        )
        .await
        .expect("the read models catch up");
    }
}

async fn a_forgotten_customer_is_gone_and_the_log_still_verifies(backend: Backend) {
    let server = start(backend).await;
    server
        .customer_says(RAMESH, "Ramesh Kumar", "wamid.r1", RAMESH_TEXT)
        .await;
    server
        .customer_says(SITA, "Sita Devi", "wamid.s1", SITA_TEXT)
        .await;
    server.settled().await;
    let chats = server
        .query(
            "{ chats(first: 10) { nodes { chatId customerNumber } } }",
            json!({}),
        )
        .await;
    let chat_of = |number: &str| {
        chats["chats"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["customerNumber"] == format!("+{number}"))
            .map(|c| c["chatId"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (ramesh_chat, sita_chat) = (chat_of(RAMESH), chat_of(SITA));
    server
        .query(
            "mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { kind } }",
            json!({"c": ramesh_chat, "t": REPLY_TEXT}),
        )
        .await;
    server.settled().await;

    // The log never held them in the clear; the read models do, until forgotten.
    let stored: String = server
        .state
        .personal
        .stored()
        .read_all(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| format!("{}\n", e.data))
        .collect();
    for secret in [
        RAMESH_TEXT,
        REPLY_TEXT,
        "Ramesh Kumar",
        SITA_TEXT,
        "Sita Devi",
    ] {
        assert!(!stored.contains(secret), "{secret:?} is sealed in the log");
    }
    let before = server.whole_database().await;
    assert!(before.contains(RAMESH_TEXT) && before.contains("Ramesh Kumar"));

    let erased = server
        .state
        .personal
        .forget(
            &CustomerKey::Phone(format!("+{RAMESH}")),
            "request #7",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(erased.len(), 1, "{erased:?}");
    server.settled().await;

    let after = server.whole_database().await;
    for gone in [RAMESH_TEXT, REPLY_TEXT, "Ramesh Kumar"] {
        assert!(!after.contains(gone), "{gone:?} is still in the database");
    }
    for kept in [SITA_TEXT, "Sita Devi"] {
        assert!(
            after.contains(kept),
            "{kept:?}, another customer's, must stay"
        );
    }

    let query = "query($c: ID!) { chat(chatId: $c) { customerName messages { direction text } history { type summary } } }";
    let ramesh = server.query(query, json!({"c": ramesh_chat})).await;
    assert_eq!(ramesh["chat"]["customerName"], "[erased]");
    let texts: Vec<&str> = ramesh["chat"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts[..2], ["[erased]", "[erased]"], "{ramesh}");
    assert!(ramesh["chat"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "PersonalDataErased"));
    let sita = server.query(query, json!({"c": sita_chat})).await;
    assert_eq!(sita["chat"]["customerName"], "Sita Devi");
    assert_eq!(sita["chat"]["messages"][0]["text"], SITA_TEXT);

    // The stored bytes never changed: the chains and seals still hold.
    audit_log(server.state.personal.stored().as_ref(), vec![], |_| {})
        .await
        .expect("the log verifies after forgetting");
    // A rebuild from the log reads the same "[erased]".
    let events = server.events().await;
    let first = events
        .iter()
        .find(|e| e.event_type == "MessageReceived" && e.stream.ends_with(RAMESH))
        .unwrap();
    assert_eq!(first.data["text"], "[erased]");
    assert_eq!(first.data["customer"]["name"], "[erased]");
}

chatledger_tests::on_both_backends!(a_forgotten_customer_is_gone_and_the_log_still_verifies);
