//! The operations console in a real browser (headless Chromium), against the real server on
//! port 0 with a real database and the fake WhatsApp provider. A failed wait saves a
//! screenshot under `target/console-screenshots/`.

mod common;

use std::time::Duration;

use chatledger_core::executive::Role;
use chatledger_tests::db::Backend;
use common::browser::Browser;
use common::*;
use serde_json::json;

/// Opens the console and signs in as `email`; waits until the desk shows who is signed in.
async fn sign_in(browser: &mut Browser, server: &Server, email: &str, name: &str) {
    browser.goto(&format!("{}/", server.base)).await;
    browser.fill("#email", email).await;
    browser.fill("#password", "a good long password").await;
    browser.click("#sign-in").await;
    browser
        .wait_for(
            &format!(
                "document.querySelector('#me').innerText.startsWith({})",
                json!(name)
            ),
            "signed in",
        )
        .await;
    browser
        .wait_for(
            "document.body.dataset.live === 'connected'",
            "live updates connected",
        )
        .await;
}

async fn sign_out(browser: &mut Browser) {
    browser.click("#sign-out").await;
    browser
        .wait_for("document.querySelector('#email')", "signed out")
        .await;
}

fn status_webhook(wamid: &str, status: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "statuses": [{"id": wamid, "status": status, "timestamp": chrono::Utc::now().timestamp().to_string(), "recipient_id": "919638120888"}]}}]}]}))
    .unwrap()
}

/// The provider's id of the message we sent with `text`, once it is dispatched.
async fn dispatched_id(server: &Server, text: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = server.events().await;
        let queued = events
            .iter()
            .find(|e| e.event_type == "ReplyQueued" && e.data["text"] == text)
            .map(|e| e.data["message_id"].clone());
        if let Some(id) = queued.and_then(|id| {
            events
                .iter()
                .find(|e| e.event_type == "MessageDispatched" && e.data["message_id"] == id)
                .map(|e| e.data["provider_message_id"].as_str().unwrap().to_owned())
        }) {
            return id;
        }
        assert!(tokio::time::Instant::now() < deadline, "never dispatched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_executive_works_a_chat_live(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@example.com", Role::Executive, &["partner"])
        .await;
    let mut browser = Browser::start(&format!("executive-{}", backend.name())).await;
    sign_in(&mut browser, &server, "asha@example.com", "asha").await;
    // Starts offline; goes online.
    browser
        .expect(
            "document.querySelector('#online').getAttribute('aria-pressed') === 'false'",
            "an executive starts offline",
        )
        .await;
    browser.click("#online").await;
    browser
        .wait_for(
            "document.querySelector('#online').getAttribute('aria-pressed') === 'true'",
            "online",
        )
        .await;

    // A customer writes: the chat appears without a reload.
    browser.eval("window.notReloaded = true").await;
    server
        .partner_says(
            "919638120888",
            "wamid.console.1",
            chatledger_projections::clock::Clock::now(server.clock.as_ref()).timestamp(),
            "Is my cab on its way?",
        )
        .await;
    browser
        .wait_for(
            "document.querySelector('#chat-list button[data-chat-id]')",
            "the new chat in the list",
        )
        .await;
    browser
        .expect(
            "window.notReloaded === true && document.querySelector('#chat-list').innerText.includes('Is my cab on its way?')",
            "the chat appeared without a reload",
        )
        .await;
    browser.click("#chat-list button[data-chat-id]").await;
    browser
        .wait_for(
            "document.querySelector('#messages li.inbound').innerText.includes('Is my cab on its way?')",
            "the chat opens",
        )
        .await;

    // Replies inside the 24-hour window; the tick moves with the provider's receipts.
    browser.fill("#reply-text", "Yes, 5 minutes away").await;
    browser.click("#send-reply").await;
    browser
        .wait_for(
            "[...document.querySelectorAll('#messages li.outbound')].some(li => li.innerText.includes('5 minutes away') && li.dataset.status === 'accepted')",
            "the reply shows as accepted by the provider",
        )
        .await;
    let wamid = dispatched_id(&server, "Yes, 5 minutes away").await;
    let response = server
        .post_meta(PARTNER, status_webhook(&wamid, "read"))
        .await;
    assert_eq!(response.status(), 200);
    browser
        .wait_for(
            "[...document.querySelectorAll('#messages li.outbound')].some(li => li.dataset.status === 'read' && li.querySelector('.ticks.read'))",
            "the read tick",
        )
        .await;

    // The README's picture of the console, when asked for.
    if let Ok(path) = std::env::var("CHATLEDGER_CONSOLE_SCREENSHOT") {
        browser.screenshot_to(std::path::Path::new(&path)).await;
    }

    // Applies a tag from the catalog, then resolves.
    browser
        .wait_for(
            "document.querySelector('#tag-choice option')",
            "the tag catalog",
        )
        .await;
    let tag = browser
        .eval("document.querySelector('#tag-choice').value")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    browser.click("#apply-tag").await;
    browser
        .wait_for(
            &format!(
                "document.querySelector('#tags').innerText.includes({})",
                json!(tag)
            ),
            "the tag on the chat",
        )
        .await;
    browser.click("#resolve").await;
    browser
        .wait_for(
            "document.querySelector('#chat-status').innerText === 'resolved'",
            "resolved",
        )
        .await;
    browser
        .expect(
            "document.querySelector('#reply-text') === null",
            "no reply to a resolved chat",
        )
        .await;
    browser
        .expect("document.querySelector('#error').hidden", "no error shown")
        .await;
    let tags = server
        .query(
            "query { chats(first: 1) { nodes { tags status } } }",
            json!({}),
        )
        .await;
    assert!(
        tags["chats"]["nodes"][0]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!(tag)),
        "{tags}"
    );
    assert_eq!(tags["chats"]["nodes"][0]["status"], "RESOLVED");
}

async fn a_lead_reassigns_and_watches_an_alert_arrive(backend: Backend) {
    let server = start(backend).await;
    server
        .register("lead@example.com", Role::Lead, &["partner"])
        .await;
    server
        .register("ravi@example.com", Role::Executive, &["partner"])
        .await;
    let ravi = server.login("ravi@example.com").await;
    let online = server
        .graphql(
            Some(&ravi),
            "mutation { setMyStatus(online: true) { online } }",
            json!({}),
        )
        .await;
    assert_eq!(online["data"]["setMyStatus"]["online"], true, "{online}");
    server
        .partner_says(
            "919638120888",
            "wamid.lead.1",
            chrono::Utc::now().timestamp(),
            "Driver did not come",
        )
        .await;
    let mut browser = Browser::start(&format!("lead-{}", backend.name())).await;
    sign_in(&mut browser, &server, "lead@example.com", "lead").await;
    browser.click("#chat-list button[data-chat-id]").await;
    browser
        .wait_for(
            "document.querySelector('#assignee-choice option')",
            "the executives to give it to",
        )
        .await;
    let ravi_id = chatledger_core::executive::executive_id("ravi@example.com").to_string();
    browser.fill("#assignee-choice", &ravi_id).await;
    browser.click("#assign").await;
    browser
        .wait_for(
            "document.querySelector('#chat').innerText.includes('assigned to ravi')",
            "assigned to Ravi",
        )
        .await;

    // The SLA board: the chat waits; at its due time (the server's clock moved past it) the
    // alert appears without a reload.
    browser.click("#nav-sla").await;
    browser
        .wait_for(
            "document.querySelector('#sla-board li[data-chat-id]')",
            "the chat on the board",
        )
        .await;
    browser
        .expect(
            "document.querySelector('#sla-board li[data-chat-id]').dataset.alerted === 'false'",
            "not alerted before its time",
        )
        .await;
    server.clock.advance(chrono::Duration::seconds(200));
    browser
        .wait_for(
            "document.querySelector('#alerts li[data-chat-id]')",
            "the alert as it fires",
        )
        .await;
    browser
        .wait_for(
            "document.querySelector('#sla-board li[data-chat-id]').dataset.alerted === 'true'",
            "the board marks it alerted",
        )
        .await;
    browser
        .expect(
            "document.querySelector('#alerts').innerText.includes('alert')",
            "the alert says what it is",
        )
        .await;
}

async fn an_auditor_sees_the_chat_as_it_stood(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@example.com", Role::Executive, &["partner"])
        .await;
    server
        .register("audit@example.com", Role::Auditor, &[])
        .await;
    let asha = server.login("asha@example.com").await;
    server
        .partner_says(
            "919638120888",
            "wamid.audit.1",
            chrono::Utc::now().timestamp(),
            "Refund please",
        )
        .await;
    let chats = server
        .query("query { chats(first: 1) { nodes { chatId } } }", json!({}))
        .await;
    let chat = chats["chats"]["nodes"][0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    server.clock.advance(chrono::Duration::seconds(30));
    let replied = server
        .graphql(
            Some(&asha),
            "mutation($c: ID!) { sendReply(chatId: $c, text: \"Refunded\") { messageId } }",
            json!({"c": chat}),
        )
        .await;
    assert!(replied["errors"].is_null(), "{replied}");
    server.clock.advance(chrono::Duration::seconds(30));
    let resolved = server
        .graphql(
            Some(&asha),
            "mutation($c: ID!) { resolveChat(chatId: $c) { status } }",
            json!({"c": chat}),
        )
        .await;
    assert!(resolved["errors"].is_null(), "{resolved}");
    server.caught_up().await;

    let mut browser = Browser::start(&format!("auditor-{}", backend.name())).await;
    sign_in(&mut browser, &server, "audit@example.com", "audit").await;
    // An auditor reads: no control that changes anything.
    browser.click("#chat-list button[data-chat-id]").await;
    browser
        .wait_for("document.querySelector('#messages li')", "the chat")
        .await;
    for control in [
        "#reply-text",
        "#resolve",
        "#apply-tag",
        "#assign",
        "#online",
        "#send-template",
    ] {
        browser
            .expect(
                &format!("document.querySelector({}) === null", json!(control)),
                &format!("{control} is not shown to an auditor"),
            )
            .await;
    }
    browser.click("#nav-audit").await;
    browser.fill("#audit-chat", &chat).await;
    browser.click("#audit-open").await;
    browser
        .wait_for(
            "document.querySelectorAll('#history tr').length >= 3",
            "the history in words",
        )
        .await;
    browser
        .wait_for(
            "document.querySelector('#audit-head').innerText.includes('position')",
            "the audit head",
        )
        .await;
    // Now: resolved. At the start: open, before the reply.
    browser
        .wait_for(
            "document.querySelector('#as-of-chat #chat-status') && document.querySelector('#as-of-chat #chat-status').innerText === 'resolved'",
            "the chat as it is",
        )
        .await;
    browser.fill("#as-of", "0").await;
    browser
        .wait_for(
            "document.querySelector('#as-of-chat #chat-status').innerText === 'open' && !document.querySelector('#as-of-chat').innerText.includes('Refunded')",
            "the chat as it was when it opened",
        )
        .await;
}

async fn another_stakeholders_executive_sees_only_their_own(backend: Backend) {
    let server = start(backend).await;
    server
        .register("vikram@example.com", Role::Executive, &["customer"])
        .await;
    server
        .partner_says(
            "919638120888",
            "wamid.other.1",
            chrono::Utc::now().timestamp(),
            "partner's secret",
        )
        .await;
    server.caught_up().await;
    let mut browser = Browser::start(&format!("stakeholders-{}", backend.name())).await;
    sign_in(&mut browser, &server, "vikram@example.com", "vikram").await;
    browser
        .wait_for(
            "document.querySelector('#chat-list').innerText.includes('No chats')",
            "an empty list",
        )
        .await;
    // A chat of his own stakeholder appears; the partner's never does.
    let own = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "contacts": [{"profile": {"name": "Meera"}, "wa_id": "919811100001"}],
          "messages": [{"from": "919811100001", "id": "wamid.own.1", "timestamp": chrono::Utc::now().timestamp().to_string(), "type": "text", "text": {"body": "my own question"}}]}}]}]}))
    .unwrap();
    let response = server.post_meta("8000247247", own).await;
    assert_eq!(response.status(), 200);
    browser
        .wait_for(
            "document.querySelector('#chat-list').innerText.includes('my own question')",
            "his own chat",
        )
        .await;
    browser
        .expect(
            "!document.querySelector('#chat-list').innerText.includes(\"partner's secret\") && document.querySelectorAll('#chat-list button[data-chat-id]').length === 1",
            "only his own stakeholder's chat",
        )
        .await;
    sign_out(&mut browser).await;
}

chatledger_tests::on_both_backends!(
    an_executive_works_a_chat_live,
    a_lead_reassigns_and_watches_an_alert_arrive,
    an_auditor_sees_the_chat_as_it_stood,
    another_stakeholders_executive_sees_only_their_own,
);
