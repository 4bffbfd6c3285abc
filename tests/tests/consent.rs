//! Consent end to end: keywords customers send change their consent once, get one answer,
//! and marketing templates honour it while replies in their conversation still go.

mod common;

use std::time::Duration;

use chatledger_core::executive::Role;
use chatledger_tests::db::Backend;
use common::*;
use serde_json::{json, Value};

const STOP_REPLY: &str =
    "You will not receive marketing messages from us any more. Reply START to receive them again.";

/// The requests the fake provider got whose text is `text`.
fn sent_with(server: &Server, text: &str) -> usize {
    server
        .provider
        .requests()
        .iter()
        .filter(|r| r.body["text"]["body"] == text)
        .count()
}

async fn settle(server: &Server) {
    server.caught_up().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.caught_up().await;
}

async fn every_stop_word_withdraws_once_and_is_answered_once(backend: Backend) {
    let server = start(backend).await;
    let now = chrono::Utc::now().timestamp();
    // Five STOPs from one customer: one withdrawal, one answer.
    for n in 0..5 {
        server
            .partner_says(
                "919638120888",
                &format!("wamid.stop.{n}"),
                now,
                if n % 2 == 0 { "STOP" } else { " stop " },
            )
            .await;
    }
    // Each default stop word, in any case, from a customer of its own; "STOP PLEASE" is not one.
    let words = [
        "STOPALL",
        "unsubscribe",
        "Cancel",
        "END",
        "quit",
        "REVOKE",
        "optout",
    ];
    for (i, word) in words.iter().enumerate() {
        server
            .partner_says(
                &format!("9196381210{i:02}"),
                &format!("wamid.word.{i}"),
                now,
                word,
            )
            .await;
    }
    server
        .partner_says("919638121099", "wamid.please", now, "STOP PLEASE")
        .await;
    settle(&server).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sent_with(&server, STOP_REPLY) < 1 + words.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "answers: {}",
            sent_with(&server, STOP_REPLY)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&server).await;
    assert_eq!(
        sent_with(&server, STOP_REPLY),
        1 + words.len(),
        "one answer each"
    );
    let events = server.events().await;
    let withdrawn: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == "ConsentWithdrawn")
        .map(|e| e.stream.as_str())
        .collect();
    assert_eq!(withdrawn.len(), 1 + words.len(), "{withdrawn:?}");
    assert!(
        !withdrawn.contains(&"consent-+919638121099"),
        "STOP PLEASE is not a keyword"
    );
    let first = events
        .iter()
        .find(|e| e.event_type == "ConsentWithdrawn")
        .unwrap();
    assert_eq!(first.stream, "consent-+919638120888");
    assert_eq!(first.data["method"], "keyword");
    assert_eq!(first.data["evidence"], "wamid.stop.0");
    assert_eq!(first.data["categories"], json!(["marketing"]));
}

async fn marketing_waits_for_start_while_replies_go(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@example.com", Role::Executive, &["partner"])
        .await;
    let token = server.login("asha@example.com").await;
    let now = chrono::Utc::now().timestamp();
    server
        .partner_says("919638120888", "wamid.c.1", now, "Hi, about my payout")
        .await;
    server
        .partner_says("919638120888", "wamid.c.2", now, "STOP")
        .await;
    settle(&server).await;
    let chats = server
        .query("query { chats(first: 5) { nodes { chatId } } }", json!({}))
        .await;
    let chat = chats["chats"]["nodes"][0]["chatId"].clone();
    let template = "mutation($c: ID!, $k: String) { sendTemplate(chatId: $c, name: \"offer\", language: \"en\", category: $k) { kind } }";
    let refused = server
        .graphql(Some(&token), template, json!({"c": chat, "k": "marketing"}))
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "CONSENT_WITHDRAWN",
        "{refused}"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Keyword"),
        "says how: {refused}"
    );
    // A utility template and a reply in the conversation the customer started still go.
    let utility = server
        .graphql(Some(&token), template, json!({"c": chat, "k": "utility"}))
        .await;
    assert!(utility["errors"].is_null(), "{utility}");
    let reply = server
        .graphql(
            Some(&token),
            "mutation($c: ID!) { sendReply(chatId: $c, text: \"Paid today\") { kind } }",
            json!({"c": chat}),
        )
        .await;
    assert!(reply["errors"].is_null(), "{reply}");

    // START restores.
    server
        .partner_says("919638120888", "wamid.c.3", now, "start")
        .await;
    settle(&server).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again = server
            .graphql(Some(&token), template, json!({"c": chat, "k": "marketing"}))
            .await;
        if again["errors"].is_null() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{again}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The history shows every change with its evidence.
    let customer = server
        .query(
            "query { customer(stakeholder: \"partner\", number: \"+919638120888\") {
                consent { category granted method }
                consentHistory { granted categories method evidence actor at } } }",
            json!({}),
        )
        .await;
    let history: &Value = &customer["customer"]["consentHistory"];
    assert_eq!(history.as_array().unwrap().len(), 2, "{history}");
    assert_eq!(history[0]["granted"], false);
    assert_eq!(history[0]["evidence"], "wamid.c.2");
    assert_eq!(history[1]["granted"], true);
    assert_eq!(history[1]["evidence"], "wamid.c.3");
    assert_eq!(
        customer["customer"]["consent"],
        json!([{"category": "marketing", "granted": true, "method": "keyword"}])
    );
}

async fn whatsapps_own_marketing_setting_stops_and_resumes(backend: Backend) {
    let server = start(backend).await;
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-user-preferences-stop.json"))
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-user-preferences-resume.json"))
            .await
            .status(),
        200
    );
    // Redelivered: nothing more.
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-user-preferences-stop.json"))
            .await
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let changes = loop {
        let changes: Vec<chatledger_core::RecordedEvent> = server
            .events()
            .await
            .into_iter()
            .filter(|e| e.stream == "consent-+16505551234")
            .collect();
        if changes.len() >= 2 {
            break changes;
        }
        assert!(tokio::time::Instant::now() < deadline, "{changes:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    settle(&server).await;
    let kinds: Vec<&str> = changes.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(kinds, ["ConsentWithdrawn", "ConsentGranted"]);
    assert_eq!(changes[0].data["method"], "user_preferences");
    assert_eq!(
        changes[0].data["wording_version"],
        "User requested to stop marketing messages"
    );
    assert_eq!(changes[0].data["at"], "2025-02-12T00:43:44Z");
    assert_eq!(
        server
            .events()
            .await
            .iter()
            .filter(|e| e.stream == "consent-+16505551234")
            .count(),
        2,
        "a redelivered webhook changes nothing"
    );
}

async fn an_executive_records_consent_with_its_reason(backend: Backend) {
    let server = start(backend).await;
    server
        .register("ravi@example.com", Role::Executive, &["partner"])
        .await;
    let token = server.login("ravi@example.com").await;
    server
        .partner_says(
            "919638120888",
            "wamid.e.1",
            chrono::Utc::now().timestamp(),
            "hello",
        )
        .await;
    let set = "mutation($g: Boolean!, $r: String!) { setConsent(customerNumber: \"+919638120888\", category: \"marketing\", granted: $g, reason: $r, wordingVersion: \"v2\") { category granted method } }";
    let withdrawn = server
        .graphql(
            Some(&token),
            set,
            json!({"g": false, "r": "asked on the phone, call #88"}),
        )
        .await;
    assert_eq!(
        withdrawn["data"]["setConsent"],
        json!([{"category": "marketing", "granted": false, "method": "agent"}]),
        "{withdrawn}"
    );
    // The same again changes nothing; an auditor may not change it.
    server
        .graphql(Some(&token), set, json!({"g": false, "r": "asked again"}))
        .await;
    server
        .register("audit@example.com", Role::Auditor, &[])
        .await;
    let auditor = server.login("audit@example.com").await;
    let refused = server
        .graphql(Some(&auditor), set, json!({"g": true, "r": "x"}))
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    let changes: Vec<chatledger_core::RecordedEvent> = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.stream == "consent-+919638120888")
        .collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].data["evidence"], "asked on the phone, call #88");
    assert_eq!(changes[0].data["wording_version"], "v2");
    assert!(changes[0].data["actor"]
        .as_str()
        .unwrap()
        .starts_with("executive:"));
}

async fn the_transaction_system_records_consent_from_its_forms(backend: Backend) {
    let server = start(backend).await;
    server
        .partner_says(
            "919638120888",
            "wamid.t.0",
            chrono::Utc::now().timestamp(),
            "hi",
        )
        .await;
    let grant = json!({"customer_number": "96381 20888", "action": "Grant", "categories": ["marketing", "service"],
        "method": "form", "wording_version": "signup-2026-11", "evidence": "form-submission-4411",
        "at": "2026-11-30T10:00:00+05:30"});
    let (status, answer) = server
        .transaction("consent", Some(TRANSACTION_TOKEN), grant.clone())
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("recorded")),
        "{answer}"
    );
    assert_eq!(answer["customer"], "+919638120888");
    let (status, answer) = server
        .transaction("consent", Some(TRANSACTION_TOKEN), grant)
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("unchanged")),
        "{answer}"
    );
    let withdraw = json!({"customer_number": "+919638120888", "action": "withdraw", "categories": ["marketing"],
        "evidence": "unsubscribe-link-77"});
    let (status, answer) = server
        .transaction("consent", Some(TRANSACTION_TOKEN), withdraw.clone())
        .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("recorded")),
        "{answer}"
    );
    // Refused, naming what is wrong; nothing recorded.
    let (status, _) = server.transaction("consent", None, withdraw.clone()).await;
    assert_eq!(status, 401);
    let (status, answer) = server
        .transaction("consent", Some(TRANSACTION_TOKEN), json!({"customer_number": "+919638120888", "action": "pause", "categories": ["marketing"], "evidence": "x"}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("grant, withdraw"),
        "{answer}"
    );
    let (status, answer) = server
        .transaction("consent", Some(TRANSACTION_TOKEN), json!({"customer_number": "+919638120888", "action": "grant", "categories": [], "evidence": "x"}))
        .await;
    assert_eq!(status, 400, "{answer}");
    server.caught_up().await;
    let customer = server
        .query(
            "query { customer(stakeholder: \"partner\", number: \"+919638120888\") {
                consent { category granted method } consentHistory { granted categories method wordingVersion evidence actor summary } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        customer["customer"]["consent"],
        json!([{"category": "marketing", "granted": false, "method": "api"},
               {"category": "service", "granted": true, "method": "form"}]),
        "{customer}"
    );
    let history = &customer["customer"]["consentHistory"];
    assert_eq!(history[0]["wordingVersion"], "signup-2026-11");
    assert_eq!(history[0]["evidence"], "form-submission-4411");
    assert_eq!(history[0]["actor"], "transaction-system");
    assert_eq!(history[1]["evidence"], "unsubscribe-link-77");
    assert_eq!(
        history[1]["summary"],
        "withdrew marketing through the transaction system (evidence: unsubscribe-link-77), recorded by transaction-system"
    );
}

const HELP_REPLY: &str = "Reply STOP to stop marketing messages, START to receive them again. Write to us here for anything else.";

async fn a_burst_of_help_is_all_recorded_and_answered_once(backend: Backend) {
    let server = start(backend).await;
    let now = chrono::Utc::now().timestamp();
    for n in 0..4 {
        server
            .partner_says("919638120888", &format!("wamid.help.{n}"), now + n, "HELP")
            .await;
    }
    settle(&server).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sent_with(&server, HELP_REPLY) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "no answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&server).await;
    assert_eq!(
        sent_with(&server, HELP_REPLY),
        1,
        "answered once in the window"
    );
    let received = server
        .events()
        .await
        .iter()
        .filter(|e| e.event_type == "MessageReceived")
        .count();
    assert_eq!(
        received, 4,
        "every message the provider delivered is recorded"
    );
    // Another customer is answered on their own.
    server
        .partner_says("919638120999", "wamid.help.other", now, "help")
        .await;
    settle(&server).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sent_with(&server, HELP_REPLY) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer to the other"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

chatledger_tests::on_both_backends!(
    every_stop_word_withdraws_once_and_is_answered_once,
    marketing_waits_for_start_while_replies_go,
    whatsapps_own_marketing_setting_stops_and_resumes,
    an_executive_records_consent_with_its_reason,
    the_transaction_system_records_consent_from_its_forms,
    a_burst_of_help_is_all_recorded_and_answered_once,
);
