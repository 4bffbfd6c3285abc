//! The Genesys Cloud bridge end to end, against a local Genesys speaking Open Messaging and
//! the fake WhatsApp provider: customers' messages reach agents once (through outages too),
//! the conversation is mapped, agents' replies reach customers once, signatures are
//! checked on the raw body, tenants stay apart, and tokens are renewed once.

mod common;

use std::time::Duration;

use base64::Engine;
use chatledger_tests::db::Backend;
use common::genesys::{FakeGenesys, FakeTenant};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// onewaycab routes its srdp number to Genesys; acme routes its only number.
const ONEWAYCAB_CHANNEL: &str = "9586924247";
const ACME_CHANNEL: &str = "acme-wa";
const ONEWAYCAB_SECRET: &str = "onewaycab-genesys-webhook-secret";
const ACME_SECRET: &str = "acme-genesys-webhook-secret-0001";

fn tenants() -> (FakeTenant, FakeTenant) {
    (
        FakeTenant {
            client_id: "onewaycab-client".into(),
            client_secret: "onewaycab-client-secret".into(),
            integration_id: "73cb7fb7-c2db-4996-88f3-0a83a4fea1da".into(),
        },
        FakeTenant {
            client_id: "acme-client".into(),
            client_secret: "acme-client-secret".into(),
            integration_id: "a9d478ff-da37-4d41-88e8-01536aee464a".into(),
        },
    )
}

/// A server whose onewaycab and acme integrations talk to a fresh fake Genesys.
async fn start_bridged(backend: Backend) -> (Server, FakeGenesys) {
    start_bridged_with(backend, &[]).await
}

async fn start_bridged_with(backend: Backend, extra: &[(&str, &str)]) -> (Server, FakeGenesys) {
    let (onewaycab, acme) = tenants();
    let genesys = FakeGenesys::start(vec![onewaycab.clone(), acme.clone()]).await;
    let yaml = format!(
        "integrations:\n{}{}",
        genesys.yaml(
            "onewaycab",
            &onewaycab,
            &[ONEWAYCAB_CHANNEL],
            "GENESYS_ONEWAYCAB"
        ),
        genesys.yaml("acme", &acme, &[ACME_CHANNEL], "GENESYS_ACME")
    );
    let mut env = vec![
        (
            "GENESYS_ONEWAYCAB_CLIENT_SECRET",
            onewaycab.client_secret.as_str(),
        ),
        ("GENESYS_ONEWAYCAB_WEBHOOK_SECRET", ONEWAYCAB_SECRET),
        ("GENESYS_ACME_CLIENT_SECRET", acme.client_secret.as_str()),
        ("GENESYS_ACME_WEBHOOK_SECRET", ACME_SECRET),
        ("GENESYS_FIRST_BACKOFF_MS", "20"),
        ("PUBLIC_BASE_URL", "https://chatledger.example"),
    ];
    env.extend_from_slice(extra);
    let server = start_full(backend, &env, Some(&yaml)).await;
    (server, genesys)
}

/// A customer's text to channel `key`, now.
async fn customer_writes(server: &Server, key: &str, from: &str, id: &str, text: &str) {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "Ravi"}, "wa_id": from}],
          "messages": [{"from": from, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(),
                        "type": "text", "text": {"body": text}}]}}]}]});
    assert_eq!(
        server
            .post_meta(key, serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
}

fn count(events: &[chatledger_core::RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// Waits until the log holds `n` events of `event_type`.
async fn events_of(
    server: &Server,
    event_type: &str,
    n: usize,
) -> Vec<chatledger_core::RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = server.events().await;
        if count(&events, event_type) >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} {event_type} expected: {:#?}",
            events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// An agent's reply, as Genesys posts it (the shape of fixture 01).
fn agent_reply(integration: &str, to: &str, id: &str, text: &str) -> Vec<u8> {
    let mut body: Value =
        serde_json::from_slice(&genesys_fixture("01-webhook-outbound-text.json")).unwrap();
    body["id"] = json!(id);
    body["channel"]["id"] = json!(integration);
    body["channel"]["messageId"] = json!(id);
    body["channel"]["to"] = json!({"id": to, "idType": "Opaque"});
    body["channel"]["from"]["id"] = json!(integration);
    body["channel"]["from"]["nickname"] = json!("Asha");
    body["channel"]["time"] = json!(chrono::Utc::now().to_rfc3339());
    body["text"] = json!(text);
    serde_json::to_vec(&body).unwrap()
}

fn genesys_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/fixtures/genesys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn post_webhook(
    server: &Server,
    tenant: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> (u16, Value) {
    let mut request = server
        .client
        .post(format!("{}/api/genesys/{tenant}/webhook", server.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn customers_text_reaches_the_agent_once_and_the_conversation_is_mapped(backend: Backend) {
    let (server, genesys) = start_bridged(backend).await;
    customer_writes(
        &server,
        ONEWAYCAB_CHANNEL,
        "919638120888",
        "wamid.g.1",
        "Where is my driver?",
    )
    .await;
    let events = events_of(&server, "ForwardedToAgent", 1).await;
    assert_eq!(count(&events, "GenesysConversationMapped"), 1);
    let received = genesys.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let sent = &received[0];
    assert_eq!(sent.integration_id, tenants().0.integration_id);
    assert_eq!(sent.body["text"], "Where is my driver?");
    assert_eq!(
        sent.body["channel"]["from"]["id"],
        "9586924247|+919638120888"
    );
    assert_eq!(sent.body["channel"]["from"]["idType"], "Opaque");
    assert_eq!(sent.body["channel"]["messageId"], "wamid.g.1");

    customer_writes(
        &server,
        ONEWAYCAB_CHANNEL,
        "919638120888",
        "wamid.g.2",
        "Hello?",
    )
    .await;
    let events = events_of(&server, "ForwardedToAgent", 2).await;
    assert_eq!(count(&events, "GenesysConversationMapped"), 1, "known once");
    // A channel that does not route to Genesys stays with the desk.
    customer_writes(&server, PARTNER, "919638120777", "wamid.p.1", "hi").await;
    server.caught_up().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(genesys.received().len(), 2);
    let mapped = events
        .iter()
        .find(|e| e.event_type == "GenesysConversationMapped")
        .unwrap();
    assert_eq!(
        mapped.data["conversation_id"],
        "conv-9586924247--919638120888"
    );

    // The dashboard shows the mapping and each message's way through Genesys.
    let data = server
        .query(
            "query { chats(first: 5) { nodes { channelNumber genesysConversationId
                messages(first: 5) { providerMessageId genesys { messageId status } } } } }",
            json!({}),
        )
        .await;
    let chat = data["chats"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channelNumber"] == "919586924247")
        .unwrap()
        .clone();
    assert_eq!(
        chat["genesysConversationId"],
        "conv-9586924247--919638120888"
    );
    let first = &chat["messages"][0];
    assert_eq!(first["genesys"]["status"], "FORWARDED");
    assert_eq!(first["genesys"]["messageId"], "genesys-in-1");
}

async fn routed_chats_are_left_to_genesys_agents(backend: Backend) {
    let (server, _genesys) = start_bridged(backend).await;
    server
        .register(
            "lead@example.com",
            chatledger_core::executive::Role::Executive,
            &["srdp", "partner"],
        )
        .await;
    let token = server.login("lead@example.com").await;
    let online = server
        .graphql(
            Some(&token),
            "mutation { setMyStatus(online: true) { online } }",
            json!({}),
        )
        .await;
    assert_eq!(online["data"]["setMyStatus"]["online"], true, "{online}");
    customer_writes(
        &server,
        ONEWAYCAB_CHANNEL,
        "919638120888",
        "wamid.a.1",
        "routed",
    )
    .await;
    customer_writes(&server, PARTNER, "919638120777", "wamid.a.2", "desk").await;
    events_of(&server, "ChatAssigned", 1).await;
    events_of(&server, "ForwardedToAgent", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let assigned: Vec<String> = server
        .events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "ChatAssigned")
        .map(|e| e.stream)
        .collect();
    assert_eq!(
        assigned,
        ["conversation-9099039188-+919638120777"],
        "the desk takes only its own chats"
    );
}

async fn an_outage_then_recovery_delivers_every_message_once(backend: Backend) {
    let (server, genesys) = start_bridged(backend).await;
    genesys.outage(3);
    for n in 0..3 {
        customer_writes(
            &server,
            ONEWAYCAB_CHANNEL,
            "919638120888",
            &format!("wamid.o.{n}"),
            &format!("message {n}"),
        )
        .await;
    }
    let events = events_of(&server, "ForwardedToAgent", 3).await;
    let texts: Vec<Value> = genesys
        .received()
        .iter()
        .filter(|r| r.endpoint == "message")
        .map(|r| r.body["text"].clone())
        .collect();
    assert_eq!(
        texts,
        ["message 0", "message 1", "message 2"],
        "each once, in order"
    );
    assert_eq!(count(&events, "ForwardToAgentFailed"), 0);
}

async fn a_tenant_that_keeps_failing_is_left_alone_for_a_cool_down(backend: Backend) {
    let (server, genesys) = start_bridged_with(
        backend,
        &[("BREAKER_FAILURES", "3"), ("BREAKER_COOLDOWN_MS", "1500")],
    )
    .await;
    genesys.outage(3);
    for n in 0..3 {
        customer_writes(
            &server,
            ONEWAYCAB_CHANNEL,
            "919638120888",
            &format!("wamid.cb.{n}"),
            &format!("message {n}"),
        )
        .await;
    }
    // Three failures in a row open the tenant's circuit (the other tenant's stays closed).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let open = server.state.circuits.not_closed();
        if let Some((circuit, state)) = open.first() {
            assert_eq!(state, &"open");
            assert!(circuit.starts_with("genesys:"), "{circuit}");
            assert_eq!(open.len(), 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // After the cool-down a probe goes, the circuit closes, and everything is delivered in
    // order, once, none given up.
    let events = events_of(&server, "ForwardedToAgent", 3).await;
    assert_eq!(count(&events, "ForwardToAgentFailed"), 0);
    let texts: Vec<Value> = genesys
        .received()
        .iter()
        .filter(|r| r.endpoint == "message")
        .map(|r| r.body["text"].clone())
        .collect();
    assert_eq!(texts, ["message 0", "message 1", "message 2"]);
    assert!(server.state.circuits.not_closed().is_empty());
}

async fn an_agents_reply_reaches_the_customer_once(backend: Backend) {
    let (server, _genesys) = start_bridged(backend).await;
    customer_writes(
        &server,
        ONEWAYCAB_CHANNEL,
        "919638120888",
        "wamid.r.1",
        "Is my cab on time?",
    )
    .await;
    events_of(&server, "ForwardedToAgent", 1).await;
    let integration = tenants().0.integration_id;
    let body = agent_reply(
        &integration,
        "9586924247|+919638120888",
        "gen-out-1",
        "Yes, 5 minutes away",
    );
    let (status, answer) = post_webhook(
        &server,
        "onewaycab",
        body.clone(),
        Some(sign(ONEWAYCAB_SECRET, &body)),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("recorded")),
        "{answer}"
    );
    // Genesys retries: the same message again is a duplicate.
    let (status, answer) = post_webhook(
        &server,
        "onewaycab",
        body.clone(),
        Some(sign(ONEWAYCAB_SECRET, &body)),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("duplicate")),
        "{answer}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sent: Vec<ProviderRequest> = server
            .provider
            .requests()
            .into_iter()
            .filter(|r| r.body["text"]["body"] == "Yes, 5 minutes away")
            .collect();
        if !sent.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let again = server
                .provider
                .requests()
                .into_iter()
                .filter(|r| r.body["text"]["body"] == "Yes, 5 minutes away")
                .count();
            assert_eq!(again, 1, "sent once");
            assert_eq!(sent[0].body["to"], "919638120888");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reply was not sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = server.events().await;
    let queued = events
        .iter()
        .find(|e| e.event_type == "ReplyQueued")
        .unwrap();
    assert_eq!(queued.data["by"], "genesys:Asha");
    assert_eq!(queued.metadata.extra["genesys_message_id"], "gen-out-1");
}

async fn bad_webhooks_are_refused_and_recorded_where_they_should_be(backend: Backend) {
    let (server, _genesys) = start_bridged(backend).await;
    let before = server.events().await.len();
    let integration = tenants().0.integration_id;
    // The fixture and its published signature vector; then forged and re-serialised bodies.
    let fixture = genesys_fixture("01-webhook-outbound-text.json");
    let vector = "sha256=sYfdWQCzNlOtDx6kgW6RF27yp2E95hVV9GYcW/8W+hk=";
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<Value>(&fixture).unwrap()).unwrap();
    for (body, signature) in [
        (fixture.clone(), None),
        (
            fixture.clone(),
            Some(sign("forged-secret-of-some-length", &fixture)),
        ),
        (fixture.clone(), Some(vector.to_owned())),
        (reserialised.clone(), Some(sign(ONEWAYCAB_SECRET, &fixture))),
        (fixture.clone(), Some(sign(ACME_SECRET, &fixture))),
    ] {
        let (status, answer) = post_webhook(&server, "onewaycab", body, signature).await;
        assert_eq!(status, 403, "{answer}");
    }
    assert_eq!(server.events().await.len(), before, "nothing recorded");

    let (status, _) = post_webhook(
        &server,
        "nobody",
        fixture.clone(),
        Some(sign(ONEWAYCAB_SECRET, &fixture)),
    )
    .await;
    assert_eq!(status, 404);
    let broken = b"{\"id\": ".to_vec();
    let (status, answer) = post_webhook(
        &server,
        "onewaycab",
        broken.clone(),
        Some(sign(ONEWAYCAB_SECRET, &broken)),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("JSON"),
        "{answer}"
    );
    // The fixture's integration is onewaycab's; acme's webhook refuses it.
    let (status, _) = post_webhook(
        &server,
        "acme",
        fixture.clone(),
        Some(sign(ACME_SECRET, &fixture)),
    )
    .await;
    assert_eq!(status, 404, "another integration's message");

    // A customer of no routed channel: kept as a notice with why, answered 200.
    let (status, answer) = post_webhook(
        &server,
        "onewaycab",
        fixture.clone(),
        Some(sign(ONEWAYCAB_SECRET, &fixture)),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("not_sent")),
        "{answer}"
    );
    // acme's customer addressed through onewaycab: refused the same way.
    let body = agent_reply(&integration, "acme-wa|+919638120888", "gen-x", "hello");
    let (status, answer) = post_webhook(
        &server,
        "onewaycab",
        body.clone(),
        Some(sign(ONEWAYCAB_SECRET, &body)),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("not_sent")),
        "{answer}"
    );
    // Typing and receipts are kept.
    let mut typing: Value = serde_json::from_slice(&fixture).unwrap();
    typing["type"] = json!("Event");
    typing["events"] = json!([{"eventType": "Typing", "typing": {"type": "On", "duration": 5000}}]);
    let typing = serde_json::to_vec(&typing).unwrap();
    let (status, _) = post_webhook(
        &server,
        "onewaycab",
        typing.clone(),
        Some(sign(ONEWAYCAB_SECRET, &typing)),
    )
    .await;
    assert_eq!(status, 200);
    let events = server.events().await;
    let notices: Vec<&str> = events
        .iter()
        .filter(|e| e.stream == "channel-genesys-onewaycab")
        .map(|e| e.data["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        notices,
        ["unknown_customer", "unknown_customer", "type:Event"]
    );
}

async fn two_tenants_stay_apart(backend: Backend) {
    let (server, genesys) = start_bridged(backend).await;
    customer_writes(
        &server,
        ONEWAYCAB_CHANNEL,
        "919638120888",
        "wamid.t.1",
        "onewaycab's customer",
    )
    .await;
    customer_writes(
        &server,
        ACME_CHANNEL,
        "919638120888",
        "wamid.t.2",
        "acme's customer",
    )
    .await;
    events_of(&server, "ForwardedToAgent", 2).await;
    let (onewaycab, acme) = tenants();
    for received in genesys.received() {
        let (integration, client, text) = if received.body["text"] == "acme's customer" {
            (
                &acme.integration_id,
                &acme.client_id,
                "acme-wa|+919638120888",
            )
        } else {
            (
                &onewaycab.integration_id,
                &onewaycab.client_id,
                "9586924247|+919638120888",
            )
        };
        assert_eq!(&received.integration_id, integration);
        assert!(
            received.token.starts_with(&format!("token-{client}-")),
            "{received:?}"
        );
        assert_eq!(received.body["channel"]["from"]["id"], text);
    }
}

/// A WhatsApp status for `wamid`, as Meta (via the BSP) posts it.
async fn whatsapp_status(
    server: &Server,
    key: &str,
    wamid: &str,
    status: &str,
    error: Option<i64>,
) {
    let mut item = json!({"id": wamid, "status": status, "timestamp": chrono::Utc::now().timestamp().to_string(), "recipient_id": "919638120888"});
    if let Some(code) = error {
        item["errors"] = json!([{"code": code, "title": "Re-engagement message"}]);
    }
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"}, "statuses": [item]}}]}]});
    assert_eq!(
        server
            .post_meta(key, serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
}

async fn media_goes_both_ways(backend: Backend) {
    let (server, genesys) = start_bridged(backend).await;
    // Customer → agent: the image is kept first, then handed over as a link Genesys fetches.
    let photo = {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
        jpeg.extend((0..30_000).map(|i| (i % 253) as u8));
        jpeg
    };
    server
        .provider
        .serve_file("65463453", "image/jpeg", photo.clone(), false);
    let mut image: Value = serde_json::from_slice(&fixture("meta-image.json")).unwrap();
    image["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] =
        json!(chrono::Utc::now().timestamp().to_string());
    assert_eq!(
        server
            .post_meta(ONEWAYCAB_CHANNEL, serde_json::to_vec(&image).unwrap())
            .await
            .status(),
        200
    );
    events_of(&server, "ForwardedToAgent", 1).await;
    let sent = genesys
        .received()
        .into_iter()
        .find(|r| r.endpoint == "message")
        .unwrap();
    let attachment = &sent.body["content"][0]["attachment"];
    assert_eq!(sent.body["content"][0]["contentType"], "Attachment");
    assert_eq!(attachment["mediaType"], "Image");
    assert_eq!(attachment["mime"], "image/jpeg");
    assert_eq!(sent.body["text"], "[image]", "never an empty body");
    let link = attachment["url"].as_str().unwrap();
    let path = link
        .strip_prefix("https://chatledger.example")
        .expect("under PUBLIC_BASE_URL");
    let served = reqwest::get(format!("{}{path}", server.base))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.bytes().await.unwrap().to_vec(),
        photo,
        "the exact bytes"
    );

    // Agent → customer: a document from Genesys's download host reaches the provider.
    let pdf = b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n".to_vec();
    genesys.serve_download("pce1234456", "application/pdf", pdf.clone());
    let mut body: Value = serde_json::from_slice(&genesys_fixture(
        "03-webhook-outbound-attachment-file-pdf.json",
    ))
    .unwrap();
    body["channel"]["to"] = json!({"id": "9586924247|+972987654321", "idType": "Opaque"});
    body["channel"]["time"] = json!(chrono::Utc::now().to_rfc3339());
    body["content"][0]["attachment"]["url"] =
        json!(format!("{}/api/v2/downloads/pce1234456", genesys.url));
    let body = serde_json::to_vec(&body).unwrap();
    let (status, answer) = post_webhook(
        &server,
        "onewaycab",
        body.clone(),
        Some(sign(ONEWAYCAB_SECRET, &body)),
    )
    .await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("recorded")),
        "{answer}"
    );
    let upload = server.provider_got(|r| r.path.ends_with("/media")).await;
    assert!(
        upload.raw.contains("%PDF-1.4"),
        "the document's bytes were uploaded"
    );
    let message = server.provider_got(|r| r.body["type"] == "document").await;
    assert_eq!(message.body["document"]["filename"], "file.pdf");
    assert_eq!(message.body["to"], "972987654321");
}

async fn receipts_go_back_to_genesys(backend: Backend) {
    let (server, genesys) = start_bridged_with(backend, &[("GENESYS_MAX_ATTEMPTS", "3")]).await;
    customer_writes(
        &server,
        ONEWAYCAB_CHANNEL,
        "919638120888",
        "wamid.rc.1",
        "Where is my cab?",
    )
    .await;
    events_of(&server, "ForwardedToAgent", 1).await;
    let integration = tenants().0.integration_id;
    for (id, text) in [("gen-1", "On its way"), ("gen-2", "Two minutes")] {
        let body = agent_reply(&integration, "9586924247|+919638120888", id, text);
        let (status, _) = post_webhook(
            &server,
            "onewaycab",
            body.clone(),
            Some(sign(ONEWAYCAB_SECRET, &body)),
        )
        .await;
        assert_eq!(status, 200);
    }
    let events = events_of(&server, "MessageDispatched", 2).await;
    let wamids: Vec<String> = events
        .iter()
        .filter(|e| e.event_type == "MessageDispatched")
        .map(|e| e.data["provider_message_id"].as_str().unwrap().to_owned())
        .collect();
    whatsapp_status(&server, ONEWAYCAB_CHANNEL, &wamids[0], "delivered", None).await;
    let events = events_of(&server, "ReceiptForwardedToAgent", 1).await;
    let forwarded = events
        .iter()
        .find(|e| e.event_type == "ReceiptForwardedToAgent")
        .unwrap();
    assert_eq!(forwarded.data["status"], "Delivered");
    assert_eq!(forwarded.data["accepted"], true);
    let receipt = genesys
        .received()
        .into_iter()
        .find(|r| r.endpoint == "receipt")
        .unwrap();
    assert_eq!(receipt.body["status"], "Delivered");
    assert_eq!(receipt.body["direction"], "Outbound");
    assert_eq!(
        receipt.body["channel"]["to"]["id"],
        "9586924247|+919638120888"
    );
    let genesys_ids: Vec<Value> = genesys
        .received()
        .iter()
        .filter(|r| r.endpoint == "receipt")
        .map(|r| r.body["id"].clone())
        .collect();
    assert!(
        genesys_ids.contains(&json!("gen-1")) || genesys_ids.contains(&json!("gen-2")),
        "{genesys_ids:?}"
    );

    // A failure on WhatsApp goes back as Failed with Genesys's reason code; a 200 that says
    // Failed is a failure, kept in our log with the reason.
    whatsapp_status(
        &server,
        ONEWAYCAB_CHANNEL,
        &wamids[1],
        "failed",
        Some(131047),
    )
    .await;
    events_of(&server, "ReceiptForwardedToAgent", 2).await;
    let failed = genesys
        .received()
        .into_iter()
        .find(|r| r.endpoint == "receipt" && r.body["status"] == "Failed")
        .unwrap();
    assert_eq!(failed.body["reasons"][0]["code"], "MessageExpired");
    genesys.fail_next_receipts(10);
    whatsapp_status(&server, ONEWAYCAB_CHANNEL, &wamids[0], "read", None).await;
    let events = events_of(&server, "ReceiptForwardedToAgent", 3).await;
    let read = events
        .iter()
        .find(|e| e.event_type == "ReceiptForwardedToAgent" && e.data["status"] == "Read")
        .unwrap();
    assert_eq!(read.data["accepted"], false);
    assert!(
        read.data["reason"]
            .as_str()
            .unwrap()
            .contains("RateLimited"),
        "{}",
        read.data
    );
    server.caught_up().await;
    let data = server
        .query(
            "query { chats(first: 5) { nodes { messages(first: 10) { direction genesys { messageId status reason } } } } }",
            json!({}),
        )
        .await;
    let agent: Vec<Value> = data["chats"]["nodes"][0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "OUTBOUND")
        .map(|m| m["genesys"].clone())
        .collect();
    assert_eq!(agent[0]["messageId"], "gen-1");
    assert_eq!(
        agent[0]["status"], "DELIVERED",
        "Read was not heard: {agent:?}"
    );
    assert!(agent[0]["reason"].as_str().unwrap().contains("RateLimited"));
    assert_eq!(agent[1]["status"], "FAILED", "{agent:?}");
    assert!(
        agent[1]["reason"].is_null(),
        "a Failed we sent, echoed, was heard"
    );

    // A replay rebuilds the same Genesys read model.
    let db = server.db.read_db().await;
    let genesys_model: Vec<_> = chatledger_projections::read_models::all()
        .into_iter()
        .filter(|p| p.name() == "genesys")
        .collect();
    let mut live = Vec::new();
    for table in genesys_model[0].tables() {
        live.push(db.dump_table(table).await.unwrap());
    }
    assert!(!live[1].is_empty());
    chatledger_projections::runner::rebuild(server.store.clone(), &db, &genesys_model, |_, _| {})
        .await
        .unwrap();
    let mut replayed = Vec::new();
    for table in genesys_model[0].tables() {
        replayed.push(db.dump_table(table).await.unwrap());
    }
    assert_eq!(replayed, live);
}

chatledger_tests::on_both_backends!(
    customers_text_reaches_the_agent_once_and_the_conversation_is_mapped,
    an_outage_then_recovery_delivers_every_message_once,
    a_tenant_that_keeps_failing_is_left_alone_for_a_cool_down,
    an_agents_reply_reaches_the_customer_once,
    bad_webhooks_are_refused_and_recorded_where_they_should_be,
    two_tenants_stay_apart,
    media_goes_both_ways,
    receipts_go_back_to_genesys,
    routed_chats_are_left_to_genesys_agents,
);

/// 50 sends at once need one token; once it is due for renewal, 50 more need one more.
#[tokio::test]
async fn a_token_is_renewed_once_under_50_concurrent_sends() {
    use chatledger_adapters::genesys::{GenesysClient, Tenant};
    use chatledger_core::genesys::{GenesysIntegration, OpenMessaging, ToAgent};
    let (onewaycab, _) = tenants();
    let genesys = FakeGenesys::start(vec![onewaycab.clone()]).await;
    genesys
        .expires_in
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let client = std::sync::Arc::new(GenesysClient::new(
        vec![Tenant {
            integration: GenesysIntegration {
                tenant: "onewaycab".into(),
                region: "mypurecloud.com".into(),
                client_id: onewaycab.client_id.clone(),
                client_secret_env: "unused".into(),
                integration_id: onewaycab.integration_id.clone(),
                webhook_secret_env: "unused".into(),
                channels: vec![],
                api_url: Some(genesys.url.clone()),
                login_url: Some(genesys.url.clone()),
            },
            client_secret: onewaycab.client_secret.clone(),
        }],
        Duration::from_secs(5),
    ));
    let send = |n: usize| {
        let client = client.clone();
        async move {
            client
                .send_to_agent(&ToAgent {
                    tenant: "onewaycab".into(),
                    from: "9586924247|+919638120888".into(),
                    nickname: None,
                    message_id: format!("wamid.c.{n}"),
                    time: chrono::Utc::now(),
                    text: format!("message {n}"),
                    attachments: vec![],
                })
                .await
        }
    };
    let first = futures_util::future::join_all((0..50).map(send)).await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    assert_eq!(
        genesys
            .tokens_issued
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(client.tokens_asked(), 1);
    // A 2-second token is renewed after half its life.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let second = futures_util::future::join_all((50..100).map(send)).await;
    assert!(second.iter().all(Result::is_ok), "{second:?}");
    assert_eq!(
        genesys
            .tokens_issued
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    assert_eq!(genesys.received().len(), 100);
}
