//! What the dashboard and auditors see: GraphQL over real HTTP and WebSocket, on SQLite and
//! PostgreSQL, fed by real webhook fixtures.

mod common;

use std::time::Duration;

use chatledger_api::auth::{AuthSettings, Viewer};
use chatledger_core::executive::Role;
use chatledger_projections::read_models;
use chatledger_projections::runner::rebuild;
use chatledger_tests::db::Backend;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const GUARD: Duration = Duration::from_secs(30);

fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

const CHATS: &str = "query($filter: ChatFilter) { chats(filter: $filter, first: 10) {
    nodes { chatId stakeholder channelNumber customerNumber customerName status openedReason
            messages { kind text deliveryStatus direction providerMessageId media { id mimeType } } }
    pageInfo { hasNextPage endCursor } } }";

async fn webhook_fixtures_show_in_graphql(backend: Backend) {
    let server = start(backend).await;
    for name in [
        "meta-text.json",
        "meta-status-read.json",
        "meta-location.json",
        "meta-audio-voice.json",
        "meta-text-signed-raw.json",
    ] {
        // The fixtures reuse one wamid; give each message its own, as WhatsApp would.
        let mut payload: Value = serde_json::from_slice(&fixture(name)).unwrap();
        if let Some(message) = payload["entry"][0]["changes"][0]["value"]["messages"].get_mut(0) {
            if name != "meta-text.json" {
                message["id"] = json!(format!("wamid.{name}"));
            }
        }
        let response = server
            .post_meta(PARTNER, serde_json::to_vec(&payload).unwrap())
            .await;
        assert_eq!(response.status(), 200, "{name}");
    }
    server.caught_up().await;
    let response = server.graphql(Some(ADMIN_TOKEN), CHATS, json!({})).await;
    let chats = response["data"]["chats"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"));
    let chat = chats
        .iter()
        .find(|c| c["customerNumber"] == "+972987654321")
        .expect("the text fixture's chat");
    assert_eq!(chat["stakeholder"], "partner");
    assert_eq!(chat["channelNumber"], "919099039188");
    assert_eq!(chat["customerName"], "Test Name");
    assert_eq!(chat["status"], "OPEN");
    let messages = chat["messages"].as_array().unwrap();
    let text = messages.iter().find(|m| m["kind"] == "text").unwrap();
    assert_eq!(text["text"], "Body Text");
    assert_eq!(
        text["deliveryStatus"], "read",
        "the read receipt shows on the message"
    );
    assert_eq!(text["direction"], "INBOUND");
    let kinds: Vec<&str> = chats
        .iter()
        .flat_map(|c| c["messages"].as_array().unwrap())
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"location") && kinds.contains(&"audio"),
        "{kinds:?}"
    );
    let audio = chats
        .iter()
        .flat_map(|c| c["messages"].as_array().unwrap())
        .find(|m| m["kind"] == "audio")
        .unwrap();
    assert!(audio["media"]["id"].is_string());

    // One chat per page, then the next page from the cursor.
    let page = server
        .graphql(
            Some(ADMIN_TOKEN),
            "{ chats(first: 1) { nodes { chatId } pageInfo { hasNextPage endCursor } } }",
            json!({}),
        )
        .await;
    let first_id = page["data"]["chats"]["nodes"][0]["chatId"].clone();
    assert_eq!(
        page["data"]["chats"]["pageInfo"]["hasNextPage"], true,
        "{page}"
    );
    let cursor = page["data"]["chats"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let next = server
        .graphql(
            Some(ADMIN_TOKEN),
            "query($after: String) { chats(first: 1, after: $after) { nodes { chatId } } }",
            json!({"after": cursor}),
        )
        .await;
    assert_ne!(next["data"]["chats"]["nodes"][0]["chatId"], first_id);

    // chat, customer (by any shape of the number) and the filter by customer.
    let chat_id = chat["chatId"].as_str().unwrap();
    let one = server
        .graphql(
            Some(ADMIN_TOKEN),
            "query($id: ID!) { chat(chatId: $id) { customerNumber } }",
            json!({"id": chat_id}),
        )
        .await;
    assert_eq!(one["data"]["chat"]["customerNumber"], "+972987654321");
    let customer = server
        .graphql(
            Some(ADMIN_TOKEN),
            r#"{ customer(stakeholder: "partner", number: "972987654321") { number name chats { chatId } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(customer["data"]["customer"]["chats"][0]["chatId"], chat_id);
    let filtered = server
        .graphql(
            Some(ADMIN_TOKEN),
            CHATS,
            json!({"filter": {"customerNumber": "+972 98765 4321"}}),
        )
        .await;
    assert_eq!(
        filtered["data"]["chats"]["nodes"].as_array().unwrap().len(),
        1
    );

    // The log, for auditors, with paging.
    let events = server
        .graphql(Some(ADMIN_TOKEN), "{ events(first: 2) { nodes { position type stream hash metadata } endCursor hasNextPage } }", json!({}))
        .await;
    assert_eq!(
        events["data"]["events"]["nodes"][0]["type"],
        "ChannelsConfigured"
    );
    assert_eq!(events["data"]["events"]["hasNextPage"], true);
    let stream = format!("conversation-{PARTNER}-+972987654321");
    let in_stream = server
        .graphql(
            Some(ADMIN_TOKEN),
            "query($s: String) { events(stream: $s) { nodes { type metadata } } }",
            json!({"s": stream}),
        )
        .await;
    // The media reactor's outcome for the voice note comes in its own time (tests/media.rs).
    let types: Vec<&str> = in_stream["data"]["events"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .filter(|t| !t.starts_with("Media"))
        .collect();
    assert_eq!(
        types,
        vec![
            "ChatOpened",
            "MessageReceived",
            "SlaClockStarted",
            "ReceiptRecorded",
            "MessageReceived",
            "MessageReceived"
        ]
    );
    assert_eq!(
        in_stream["data"]["events"]["nodes"][1]["metadata"]["actor"],
        "provider:pinbot"
    );
}

async fn message_received_subscription_over_graphql_transport_ws(backend: Backend) {
    let server = start(backend).await;
    let url = format!("{}/graphql/ws", server.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the WebSocket opens");
    let send = |v: Value| WsMessage::Text(v.to_string().into());
    socket
        .send(send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {ADMIN_TOKEN}")}})))
        .await
        .unwrap();
    let ack = next_json(&mut socket).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
        .send(send(json!({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { messageReceived(stakeholder: \"partner\") { kind text direction } }"}})))
        .await
        .unwrap();
    // Subscribed: a message posted now arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-text.json"))
            .await
            .status(),
        200
    );
    let next = next_json(&mut socket).await;
    assert_eq!(next["type"], "next", "{next}");
    assert_eq!(
        next["payload"]["data"]["messageReceived"],
        json!({"kind": "text", "text": "Body Text", "direction": "INBOUND"})
    );

    // A bad token is refused at connection_init.
    let url = format!("{}/graphql/ws", server.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut refused, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    refused
        .send(send(
            json!({"type": "connection_init", "payload": {"Authorization": "Bearer forged"}}),
        ))
        .await
        .unwrap();
    let closed = tokio::time::timeout(GUARD, refused.next())
        .await
        .expect("an answer");
    assert!(
        !matches!(closed, Some(Ok(WsMessage::Text(ref t))) if t.contains("connection_ack")),
        "{closed:?}"
    );
}

async fn the_json_feed_pushes_messages(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let token = server.login("asha@oneway.cab").await;
    let url = format!(
        "{}/ws?token={token}",
        server.base.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the feed opens");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-text.json"))
            .await
            .status(),
        200
    );
    let frame = next_json(&mut socket).await;
    assert_eq!(frame["type"], "message_received");
    assert_eq!(frame["data"]["text"], "Body Text");
    assert_eq!(frame["data"]["stakeholder"], "partner");
    let refused = tokio_tungstenite::connect_async(format!(
        "{}/ws?token=forged",
        server.base.replace("http://", "ws://")
    ))
    .await;
    assert!(refused.is_err(), "a forged token gets no feed");
}

async fn tokens_and_roles_are_enforced(backend: Backend) {
    let server = start(backend).await;
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-text.json"))
            .await
            .status(),
        200
    );
    server
        .register("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .register("vikram@oneway.cab", Role::Executive, &["vendor"])
        .await;
    server
        .register("audit@oneway.cab", Role::Auditor, &[])
        .await;
    server.caught_up().await;

    // Executives see their stakeholders' chats, and only those.
    let asha = server.login("asha@oneway.cab").await;
    let mine = server.graphql(Some(&asha), CHATS, json!({})).await;
    assert_eq!(
        mine["data"]["chats"]["nodes"].as_array().unwrap().len(),
        1,
        "{mine}"
    );
    let vikram = server.login("vikram@oneway.cab").await;
    let theirs = server.graphql(Some(&vikram), CHATS, json!({})).await;
    assert_eq!(
        theirs["data"]["chats"]["nodes"].as_array().unwrap().len(),
        0
    );
    let forbidden = server
        .graphql(
            Some(&vikram),
            CHATS,
            json!({"filter": {"stakeholder": "partner"}}),
        )
        .await;
    assert_eq!(error_code(&forbidden), "FORBIDDEN");
    assert_eq!(
        error_code(
            &server
                .graphql(
                    Some(&vikram),
                    "{ events { nodes { position } } }",
                    json!({})
                )
                .await
        ),
        "FORBIDDEN"
    );

    // No token, a forged one, an expired one.
    assert_eq!(
        error_code(&server.graphql(None, CHATS, json!({})).await),
        "UNAUTHENTICATED"
    );
    let forger =
        AuthSettings::from_env(&|n| (n == "JWT_SECRET_KEY").then(|| "not our secret".to_owned()))
            .unwrap();
    let admin = Viewer {
        role: Role::Admin,
        executive_id: Some("x".into()),
        name: "mallory".into(),
        stakeholders: vec![],
    };
    let (forged, _) = forger.issue(&admin, chrono::Utc::now()).unwrap();
    assert_eq!(
        error_code(&server.graphql(Some(&forged), CHATS, json!({})).await),
        "UNAUTHENTICATED"
    );
    let ours = AuthSettings::from_env(&|n| (n == "JWT_SECRET_KEY").then(|| JWT_SECRET.to_owned()))
        .unwrap();
    let (expired, _) = ours
        .issue(&admin, chrono::Utc::now() - chrono::Duration::days(2))
        .unwrap();
    let response = server.graphql(Some(&expired), CHATS, json!({})).await;
    assert_eq!(error_code(&response), "UNAUTHENTICATED");
    assert!(response["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
    let wrong = server
        .client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({"email": "asha@oneway.cab", "password": "guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // An auditor reads everything and changes nothing.
    let auditor = server.login("audit@oneway.cab").await;
    assert_eq!(
        server.graphql(Some(&auditor), CHATS, json!({})).await["data"]["chats"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let head = server.store.head_position().await.unwrap();
    let refused = server
        .graphql(
            Some(&auditor),
            "mutation { setMyStatus(online: true) { online } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    assert_eq!(
        server.store.head_position().await.unwrap(),
        head,
        "nothing was recorded"
    );

    // An executive may change their own status.
    let online = server
        .graphql(
            Some(&asha),
            "mutation { setMyStatus(online: true) { name online openChats } }",
            json!({}),
        )
        .await;
    assert_eq!(online["data"]["setMyStatus"]["online"], true, "{online}");
    // The partner chat that was waiting goes to her now that she is online.
    let mut open_chats = Value::Null;
    for _ in 0..100 {
        open_chats = server
            .graphql(Some(&asha), "{ me { openChats } }", json!({}))
            .await["data"]["me"]["openChats"]
            .clone();
        if open_chats == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open_chats, 1);
    let login = server
        .graphql(None, "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token executive { name role } } }",
            json!({"e": "asha@oneway.cab", "p": "a good long password"}))
        .await;
    assert_eq!(
        login["data"]["login"]["executive"],
        json!({"name": "asha", "role": "executive"})
    );
}

async fn oversized_queries_are_refused(backend: Backend) {
    let server = start(backend).await;
    let too_many = server
        .graphql(
            Some(ADMIN_TOKEN),
            "{ chats(first: 1000) { nodes { chatId } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&too_many), "BAD_USER_INPUT");
    let deep = "{ chats { nodes { assignedTo { name } messages { media { id } } } } } ";
    let normal = server.graphql(Some(ADMIN_TOKEN), deep, json!({})).await;
    assert!(
        normal["errors"].is_null(),
        "a normal query passes: {normal}"
    );
    let costly = "{ chats(first: 200) { nodes { messages(first: 200) { text kind at media { id url } } } } }";
    let refused = server.graphql(Some(ADMIN_TOKEN), costly, json!({})).await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("complex"),
        "{refused}"
    );
}

async fn replay_gives_the_read_models_live_projection_gave(backend: Backend) {
    let server = start(backend).await;
    let dir =
        std::fs::read_dir(format!("{}/fixtures/whatsapp", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for entry in dir {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") {
            assert_eq!(
                server.post_meta(PARTNER, fixture(&name)).await.status(),
                200,
                "{name}"
            );
        }
    }
    server.caught_up().await;
    let db = server.db.read_db().await;
    let mut live = Vec::new();
    for projector in read_models::all() {
        for table in projector.tables() {
            live.push(db.dump_table(table).await.unwrap());
        }
    }
    assert!(!live[0].is_empty());
    rebuild(server.store.clone(), &db, &read_models::all(), |_, _| {})
        .await
        .unwrap();
    let mut replayed = Vec::new();
    for projector in read_models::all() {
        for table in projector.tables() {
            replayed.push(db.dump_table(table).await.unwrap());
        }
    }
    assert_eq!(replayed, live);
}

chatledger_tests::on_both_backends!(
    webhook_fixtures_show_in_graphql,
    message_received_subscription_over_graphql_transport_ws,
    the_json_feed_pushes_messages,
    tokens_and_roles_are_enforced,
    oversized_queries_are_refused,
    replay_gives_the_read_models_live_projection_gave,
);
