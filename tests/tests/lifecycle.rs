//! The transaction system drives chat identity and rides: scenarios over real HTTP, on SQLite
//! and PostgreSQL.

mod common;

use std::time::Duration;

use chatledger_tests::db::Backend;
use common::*;
use serde_json::{json, Value};

const GUARD: Duration = Duration::from_secs(30);

impl Server {
    async fn partner_writes(&self, from: &str, id: &str) {
        self.partner_writes_at(from, id, 1763800000).await;
    }

    /// A partner's text message sent at `timestamp` (unix seconds).
    async fn partner_writes_at(&self, from: &str, id: &str, timestamp: i64) {
        self.partner_says(from, id, timestamp, "hi").await;
    }
}

const PARTNER_CHATS: &str = r#"{ customer(stakeholder: "partner", number: "9638120888") {
    context chats { chatId status openedReason previousChatId supersededBy context } } }"#;

async fn context_changes_decide_chat_identity(backend: Backend) {
    let server = start(backend).await;
    server.partner_writes("919638120888", "wamid.p1").await;
    let before = server.query(PARTNER_CHATS, json!({})).await;
    let first_chat = before["customer"]["chats"][0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();

    // A configured field changes: a new chat takes over, linked to the old one. The payload is
    // the one agreed with the transaction system's team, stakeholder capitalised.
    let (status, answer) = server
        .transaction(
            "context_change",
            Some(TRANSACTION_TOKEN),
            json!({"customer": "9638120888", "customer_type": "Partner", "context": {"documents_status": "Approved"}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "recorded");
    let new_chat = answer["new_chats"][0]["chat_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(answer["new_chats"][0]["supersedes"], first_chat.as_str());
    let after = server.query(PARTNER_CHATS, json!({})).await;
    let chats = after["customer"]["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 2);
    assert_eq!(chats[0]["chatId"], first_chat.as_str());
    assert_eq!(chats[0]["status"], "CLOSED");
    assert_eq!(chats[0]["supersededBy"], new_chat.as_str());
    assert_eq!(chats[1]["chatId"], new_chat.as_str());
    assert_eq!(chats[1]["openedReason"], "ContextChanged");
    assert_eq!(chats[1]["previousChatId"], first_chat.as_str());
    assert_eq!(chats[1]["context"]["documents_status"], "Approved");

    // An unconfigured field is recorded and keeps the chat.
    let (_, answer) = server
        .transaction(
            "context_change",
            Some(TRANSACTION_TOKEN),
            json!({"customer": "+91 96381 20888", "customer_type": " PARTNER ", "context": {"city": "Surat"}}),
        )
        .await;
    assert_eq!(answer["status"], "recorded");
    assert_eq!(answer["new_chats"], json!([]));
    let kept = server.query(PARTNER_CHATS, json!({})).await;
    assert_eq!(kept["customer"]["chats"].as_array().unwrap().len(), 2);
    assert_eq!(kept["customer"]["chats"][1]["context"]["city"], "Surat");
    assert_eq!(kept["customer"]["context"]["documents_status"], "Approved");

    // The next message joins the new chat; the same post again changes nothing.
    server.partner_writes("919638120888", "wamid.p2").await;
    let latest = server.query(PARTNER_CHATS, json!({})).await;
    assert_eq!(latest["customer"]["chats"].as_array().unwrap().len(), 2);
    let head = server.store.head_position().await.unwrap();
    let (_, again) = server
        .transaction(
            "context_change",
            Some(TRANSACTION_TOKEN),
            json!({"customer": "9638120888", "customer_type": "partner", "context": {"documents_status": "Approved"}}),
        )
        .await;
    assert_eq!(again["status"], "unchanged");
    assert_eq!(server.store.head_position().await.unwrap(), head);
    server.the_fold_agrees_with_the_read_models().await;
}

async fn a_context_before_the_first_chat_becomes_its_context(backend: Backend) {
    let server = start(backend).await;
    let (status, answer) = server
        .transaction(
            "context_change",
            Some(TRANSACTION_TOKEN),
            json!({"customer": "9000000001", "customer_type": "partner", "context": {"dco_status": "Pending"}}),
        )
        .await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("recorded")));
    server.partner_writes("919000000001", "wamid.first").await;
    let data = server
        .query(r#"{ customer(stakeholder: "partner", number: "9000000001") { chats { openedReason context } } }"#, json!({}))
        .await;
    assert_eq!(data["customer"]["chats"][0]["openedReason"], "FirstMessage");
    assert_eq!(
        data["customer"]["chats"][0]["context"]["dco_status"],
        "Pending"
    );
    server.the_fold_agrees_with_the_read_models().await;
}

async fn bad_transaction_posts_are_refused_naming_the_field(backend: Backend) {
    let server = start(backend).await;
    let head = server.store.head_position().await.unwrap();
    let ok_change = json!({"customer": "9638120888", "customer_type": "partner", "context": {"documents_status": "X"}});
    assert_eq!(
        server
            .transaction("context_change", None, ok_change.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        server
            .transaction("context_change", Some("wrong"), ok_change)
            .await
            .0,
        401
    );
    let cases = [
        (
            "context_change",
            json!({"customer": "9638120888", "context": {"a": 1}}),
            "customer_type",
        ),
        (
            "context_change",
            json!({"customer": "9638120888", "customer_type": "partner", "context": "x"}),
            "context",
        ),
        (
            "context_change",
            json!({"customer": "9638120888", "customer_type": "partner", "context": {}}),
            "context",
        ),
        (
            "context_change",
            json!({"customer": "not a number", "customer_type": "partner", "context": {"a": 1}}),
            "customer",
        ),
        (
            "context_change",
            json!({"customer": "9638120888", "customer_type": "martians", "context": {"a": 1}}),
            "customer_type",
        ),
        (
            "booking",
            json!({"event": "booked", "customer_number": "9638120888", "booking_id": "B1",
            "ride_datetime": "2030-01-01T10:00:00+05:30", "ride_status": "confirmed"}),
            "event",
        ),
        (
            "booking",
            json!({"event": "created", "customer_number": "9638120888", "booking_id": "B1",
            "ride_datetime": "next tuesday", "ride_status": "confirmed"}),
            "ride_datetime",
        ),
        (
            "booking",
            json!({"event": "created", "booking_id": "B1",
            "ride_datetime": "2030-01-01T10:00:00+05:30", "ride_status": "confirmed"}),
            "customer_number",
        ),
    ];
    for (path, body, field) in cases {
        let (status, error) = server
            .transaction(path, Some(TRANSACTION_TOKEN), body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "{body}: {error} should name {field}"
        );
    }
    // An enumerated value outside its list is refused with the accepted values named.
    let (_, error) = server
        .transaction(
            "context_change",
            Some(TRANSACTION_TOKEN),
            json!({"customer": "9638120888", "customer_type": "Martians", "context": {"a": 1}}),
        )
        .await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("partner") && message.contains("customer"),
        "{message}"
    );
    for (field, value, accepted) in [
        ("event", "Booked", "cancelled"),
        ("ride_status", "Flying", "completed"),
    ] {
        let mut body = json!({"event": "created", "customer_number": "9638120888", "booking_id": "B1",
            "ride_datetime": "2030-01-01T10:00:00+05:30", "ride_status": "confirmed"});
        body[field] = json!(value);
        let (status, error) = server
            .transaction("booking", Some(TRANSACTION_TOKEN), body)
            .await;
        assert_eq!(status, 400, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(field) && message.contains(accepted),
            "{message} should name {field} and its accepted values"
        );
    }
    assert_eq!(
        server.store.head_position().await.unwrap(),
        head,
        "nothing was recorded"
    );
}

async fn bookings_become_rides(backend: Backend) {
    let server = start(backend).await;
    let booking = |event: &str, id: &str, at: &str, status: &str| json!({"event": event, "customer_number": "9638120888", "booking_id": id, "ride_datetime": at, "ride_status": status});
    let post = |body: Value| server.transaction("booking", Some(TRANSACTION_TOKEN), body);
    assert_eq!(
        post(booking(
            "created",
            "B-1",
            "2099-01-05 09:30:00",
            "confirmed"
        ))
        .await
        .1["status"],
        "recorded"
    );
    assert_eq!(
        post(booking(
            "created",
            "B-1",
            "2099-01-05 09:30:00",
            "confirmed"
        ))
        .await
        .1["status"],
        "duplicate"
    );
    assert_eq!(
        post(booking(
            "modified",
            "B-1",
            "2099-01-05 11:00:00",
            "confirmed"
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        post(booking(
            "created",
            "B-2",
            "2020-01-01T08:00:00+05:30",
            "completed"
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        post(booking(
            " Created",
            "B-3",
            "2099-02-01T08:00:00Z",
            "CONFIRMED "
        ))
        .await
        .0,
        200
    );
    assert_eq!(
        post(booking(
            "cancelled",
            "B-3",
            "2099-02-01T08:00:00Z",
            "cancelled"
        ))
        .await
        .0,
        200
    );

    let rides = server
        .query(r#"{ customer(stakeholder: "partner", number: "9638120888") { rides { bookingId rideAt status } } }"#, json!({}))
        .await;
    // No chat yet, so no customer row for the partner: rides belong to the number.
    assert!(rides["customer"].is_null());
    server.partner_writes("919638120888", "wamid.r1").await;
    let data = server
        .query(
            r#"{ customer(stakeholder: "partner", number: "9638120888") { rides { bookingId rideAt status }
                 chats { upcomingRides { bookingId rideAt status } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        data["customer"]["rides"],
        json!([
            {"bookingId": "B-2", "rideAt": "2020-01-01T02:30:00+00:00", "status": "completed"},
            {"bookingId": "B-1", "rideAt": "2099-01-05T05:30:00+00:00", "status": "confirmed"},
            {"bookingId": "B-3", "rideAt": "2099-02-01T08:00:00+00:00", "status": "cancelled"},
        ])
    );
    assert_eq!(
        data["customer"]["chats"][0]["upcomingRides"],
        json!([{"bookingId": "B-1", "rideAt": "2099-01-05T05:30:00+00:00", "status": "confirmed"}]),
        "past and cancelled rides are not upcoming; the modification moved the ride"
    );
    let stream = server
        .store
        .read_stream("booking-B-1", 0, 10)
        .await
        .unwrap();
    let types: Vec<&str> = stream.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, vec!["BookingCreated", "BookingModified"]);
    assert_eq!(
        stream[0].data["raw"]["ride_datetime"], "2099-01-05 09:30:00",
        "the post is kept as sent"
    );
    server.the_fold_agrees_with_the_read_models().await;
}

impl Server {
    /// Registers an executive and logs them in: their token.
    async fn executive(
        &self,
        email: &str,
        role: chatledger_core::executive::Role,
        stakeholders: &[&str],
    ) -> String {
        self.register(email, role, stakeholders).await;
        self.login(email).await
    }

    async fn gql_as(&self, token: &str, query: &str, variables: Value) -> Value {
        self.graphql(Some(token), query, variables).await
    }

    async fn set_online(&self, token: &str, online: bool) {
        let answer = self
            .gql_as(
                token,
                "mutation($o: Boolean!) { setMyStatus(online: $o) { online } }",
                json!({"o": online}),
            )
            .await;
        assert_eq!(answer["data"]["setMyStatus"]["online"], online, "{answer}");
    }

    /// The partner chats, oldest first, once `done` holds for them (the reactor works
    /// asynchronously).
    async fn chats_when(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let query = r#"{ chats(filter: {stakeholder: "partner"}, first: 50) {
            nodes { chatId customerNumber status assignedTo { name } } } }"#;
        let mut last = Vec::new();
        for _ in 0..200 {
            let data = self.query(query, json!({})).await;
            let mut chats = data["chats"]["nodes"].as_array().unwrap().clone();
            chats.reverse();
            if done(&chats) {
                return chats;
            }
            last = chats;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the chats never reached the expected state: {last:?}");
    }
}

fn assignees(chats: &[Value]) -> Vec<Option<String>> {
    chats
        .iter()
        .map(|c| c["assignedTo"]["name"].as_str().map(str::to_owned))
        .collect()
}

async fn two_online_executives_get_alternating_chats(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let ravi = server
        .executive("ravi@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .executive("vikram@oneway.cab", Role::Executive, &["vendor"])
        .await;
    server.set_online(&asha, true).await;
    server.set_online(&ravi, true).await;
    for n in 0..4 {
        server
            .partner_writes(&format!("9190000000{n}"), &format!("wamid.rr.{n}"))
            .await;
        server
            .chats_when(|c| c.len() == n + 1 && c.iter().all(|c| c["status"] == "ASSIGNED"))
            .await;
    }
    let chats = server.chats_when(|c| c.len() == 4).await;
    let names = assignees(&chats);
    assert!(
        names
            .iter()
            .all(|n| n.as_deref() == Some("asha") || n.as_deref() == Some("ravi")),
        "{names:?}"
    );
    assert_ne!(names[0], names[1], "round robin alternates: {names:?}");
    assert_eq!(names[0], names[2]);
    assert_eq!(names[1], names[3]);

    // The event explains itself: the rule and the candidates.
    let stream = format!("conversation-{PARTNER}-+91900000000");
    let events = server.store.read_stream(&stream, 0, 10).await.unwrap();
    let assigned = events
        .iter()
        .find(|e| e.event_type == "ChatAssigned")
        .expect("an assignment event");
    assert_eq!(assigned.data["rule"], "RoundRobin");
    assert_eq!(
        assigned.data["candidates"].as_array().unwrap().len(),
        2,
        "both online executives were candidates"
    );
    assert_eq!(assigned.metadata.actor, "reactor:assignment");

    // An executive going offline hands their chats to the other; the last one going offline
    // puts them back to waiting.
    server.set_online(&asha, false).await;
    let chats = server
        .chats_when(|c| assignees(c).iter().all(|n| n.as_deref() == Some("ravi")))
        .await;
    assert_eq!(chats.len(), 4);
    let handed: Vec<_> = server
        .store
        .read_all(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "ChatReassigned")
        .collect();
    assert_eq!(handed.len(), 2);
    assert!(handed
        .iter()
        .all(|e| e.data["rule"] == "AssigneeWentOffline" && e.data["previous"]["name"] == "asha"));
    server.set_online(&ravi, false).await;
    server
        .chats_when(|c| {
            c.iter()
                .all(|c| c["status"] == "OPEN" && c["assignedTo"].is_null())
        })
        .await;

    // Replaying the log reproduces every assignment exactly: no reactor runs in a replay.
    let db = server.db.read_db().await;
    let live = db.dump_table("chats").await.unwrap();
    chatledger_projections::runner::rebuild(
        server.store.clone(),
        &db,
        &chatledger_projections::read_models::all(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!(db.dump_table("chats").await.unwrap(), live);
    server.the_fold_agrees_with_the_read_models().await;
}

async fn waiting_chats_go_oldest_first_to_whoever_comes_online(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    for n in 0..3 {
        server
            .partner_writes(&format!("9191000000{n}"), &format!("wamid.wait.{n}"))
            .await;
    }
    let waiting = server.chats_when(|c| c.len() == 3).await;
    assert!(
        waiting
            .iter()
            .all(|c| c["status"] == "OPEN" && c["assignedTo"].is_null()),
        "nobody online: they wait"
    );
    server.set_online(&asha, true).await;
    server
        .chats_when(|c| assignees(c).iter().all(|n| n.as_deref() == Some("asha")))
        .await;
    let mut order = Vec::new();
    for event in server.store.read_all(0, 10_000).await.unwrap() {
        if event.event_type == "ChatAssigned" {
            order.push(event.stream.clone());
        }
    }
    let expected: Vec<String> = (0..3)
        .map(|n| format!("conversation-{PARTNER}-+9191000000{n}"))
        .collect();
    assert_eq!(order, expected, "oldest first");
    server.the_fold_agrees_with_the_read_models().await;
}

async fn leads_assign_by_hand(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let ravi = server
        .executive("ravi@oneway.cab", Role::Executive, &["partner"])
        .await;
    let lead = server
        .executive("lead@oneway.cab", Role::Lead, &["partner"])
        .await;
    server.set_online(&asha, true).await;
    server.partner_writes("919200000001", "wamid.lead.1").await;
    let chats = server
        .chats_when(|c| assignees(c) == vec![Some("asha".to_owned())])
        .await;
    let chat_id = chats[0]["chatId"].as_str().unwrap().to_owned();
    let ravi_id = chatledger_core::executive::executive_id("ravi@oneway.cab").to_string();
    let assign = "mutation($c: ID!, $e: ID!) { assignChat(chatId: $c, executiveId: $e) { status assignedTo { name } } }";

    let offline = server
        .gql_as(&lead, assign, json!({"c": chat_id, "e": ravi_id}))
        .await;
    assert_eq!(
        offline["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{offline}"
    );
    assert!(offline["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("offline"));
    let not_a_lead = server
        .gql_as(&asha, assign, json!({"c": chat_id, "e": ravi_id}))
        .await;
    assert_eq!(not_a_lead["errors"][0]["extensions"]["code"], "FORBIDDEN");

    server.set_online(&ravi, true).await;
    let moved = server
        .gql_as(&lead, assign, json!({"c": chat_id, "e": ravi_id}))
        .await;
    assert_eq!(
        moved["data"]["assignChat"],
        json!({"status": "ASSIGNED", "assignedTo": {"name": "ravi"}}),
        "{moved}"
    );
    let stream = format!("conversation-{PARTNER}-+919200000001");
    let events = server.store.read_stream(&stream, 0, 20).await.unwrap();
    let manual = events
        .iter()
        .rev()
        .find(|e| e.event_type == "ChatReassigned")
        .unwrap();
    assert_eq!(manual.data["rule"], "Manual");
    assert_eq!(manual.data["by"], "lead");
    assert_eq!(manual.data["previous"]["name"], "asha");
    let executives = server
        .gql_as(
            &lead,
            r#"{ executives(stakeholder: "partner") { name online openChats } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        executives["data"]["executives"],
        json!([
            {"name": "asha", "online": true, "openChats": 0},
            {"name": "lead", "online": false, "openChats": 0},
            {"name": "ravi", "online": true, "openChats": 1},
        ])
    );
    server.the_fold_agrees_with_the_read_models().await;
}

async fn executives_tag_chats_from_the_catalog(backend: Backend) {
    use chatledger_core::executive::Role;
    use futures_util::StreamExt;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server.partner_writes("919300000001", "wamid.tag.1").await;
    server.partner_writes("919300000002", "wamid.tag.2").await;
    let chat_id = server.chats_when(|c| c.len() == 2).await[0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    let catalog = server
        .gql_as(
            &asha,
            r#"{ tagCatalog(stakeholder: "partner") }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        catalog["data"]["tagCatalog"],
        json!([
            "Documents",
            "Payment",
            "Ride issue",
            "Onboarding",
            "Escalated"
        ])
    );

    let url = format!(
        "{}/ws?token={asha}",
        server.base.replace("http://", "ws://")
    );
    let (mut feed, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let apply = "mutation($c: ID!, $t: String!) { applyTag(chatId: $c, tag: $t) { tags } }";
    let remove = "mutation($c: ID!, $t: String!) { removeTag(chatId: $c, tag: $t) { tags } }";
    let tagged = server
        .gql_as(&asha, apply, json!({"c": chat_id, "t": "Payment"}))
        .await;
    assert_eq!(
        tagged["data"]["applyTag"]["tags"],
        json!(["Payment"]),
        "{tagged}"
    );
    let frame = loop {
        let message = tokio::time::timeout(GUARD, feed.next())
            .await
            .expect("a frame")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "tag_updated" {
                break frame;
            }
        }
    };
    assert_eq!(frame["data"]["tag"], "Payment");
    assert_eq!(frame["data"]["chat_id"], chat_id.as_str());

    let unknown = server
        .gql_as(&asha, apply, json!({"c": chat_id, "t": "VIP"}))
        .await;
    assert_eq!(unknown["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(unknown["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("not in the tag catalog"));
    let system = server
        .gql_as(
            &asha,
            apply,
            json!({"c": chat_id, "t": "Awaiting Customer Response"}),
        )
        .await;
    assert!(
        system["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("system tag"),
        "{system}"
    );

    let filtered = server
        .query(
            r#"{ chats(filter: {tag: "Payment"}) { nodes { chatId } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(filtered["chats"]["nodes"].as_array().unwrap().len(), 1);
    // A page of chats reads its tags at once; each chat still shows its own.
    let listed = server
        .query(
            r#"{ chats(filter: {stakeholder: "partner"}) { nodes { customerNumber tags } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        listed["chats"]["nodes"],
        json!([
            {"customerNumber": "+919300000002", "tags": []},
            {"customerNumber": "+919300000001", "tags": ["Payment"]},
        ])
    );
    let untagged = server
        .gql_as(&asha, remove, json!({"c": chat_id, "t": "Payment"}))
        .await;
    assert_eq!(untagged["data"]["removeTag"]["tags"], json!([]));
    let types: Vec<String> = server
        .store
        .read_stream(&format!("conversation-{PARTNER}-+919300000001"), 0, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .filter(|t| t.starts_with("Tag"))
        .collect();
    assert_eq!(
        types,
        vec!["TagApplied", "TagRemoved"],
        "refused tags record nothing"
    );
    server.the_fold_agrees_with_the_read_models().await;
}

/// Polls `query` until `done` holds for its data.
async fn eventually(
    server: &Server,
    query: &str,
    variables: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        last = server.query(query, variables.clone()).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reached the expected state: {last}");
}

const CHAT_MESSAGES: &str = "query($c: ID!) { chat(chatId: $c) { status tags messages { direction kind text deliveryStatus providerMessageId error } } }";

fn status_webhook(wamid: &str, status: &str, to: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "statuses": [{"id": wamid, "status": status, "timestamp": "1763800100", "recipient_id": to}]}}]}]}))
    .unwrap()
}

async fn a_reply_is_sent_and_its_receipts_show(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .partner_writes_at("919638120888", "wamid.in.1", chrono::Utc::now().timestamp())
        .await;
    let chat_id = server.chats_when(|c| c.len() == 1).await[0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();

    let queued = server
        .gql_as(&asha, "mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { direction kind text deliveryStatus } }",
            json!({"c": chat_id, "t": "Your documents are approved"}))
        .await;
    let answer = &queued["data"]["sendReply"];
    assert_eq!(
        (answer["direction"].as_str(), answer["kind"].as_str()),
        (Some("OUTBOUND"), Some("text")),
        "{queued}"
    );
    assert_eq!(answer["text"], "Your documents are approved");
    // The dispatcher may already have sent it by the time the answer is read.
    assert!(
        ["queued", "accepted"].contains(&answer["deliveryStatus"].as_str().unwrap()),
        "{queued}"
    );
    let accepted = eventually(&server, CHAT_MESSAGES, json!({"c": chat_id}), |d| {
        d["chat"]["messages"][1]["deliveryStatus"] == "accepted"
    })
    .await;
    assert_eq!(
        accepted["chat"]["messages"][1]["providerMessageId"],
        "wamid.fake.1"
    );
    let requests = server.provider.requests();
    assert_eq!(requests.len(), 1, "sent once");
    assert_eq!(
        requests[0].path, "/PLACEHOLDER-pinbot-id-of-9099039188/messages",
        "Pinbot's Cloud API path with the phone number id"
    );
    assert_eq!(
        requests[0].headers.get("apikey").map(String::as_str),
        Some(PROVIDER_API_KEY)
    );
    assert_eq!(requests[0].body["to"], "919638120888");
    assert_eq!(requests[0].body["type"], "text");
    assert_eq!(
        requests[0].body["text"]["body"],
        "Your documents are approved"
    );
    assert_eq!(accepted["chat"]["status"], "AWAITING_CUSTOMER");
    assert_eq!(
        accepted["chat"]["tags"],
        json!(["Awaiting Customer Response"])
    );

    // Receipts, out of order: the status ends at "read".
    for status in ["sent", "read", "delivered"] {
        let response = server
            .post_meta(
                PARTNER,
                status_webhook("wamid.fake.1", status, "919638120888"),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let read = server.query(CHAT_MESSAGES, json!({"c": chat_id})).await;
    assert_eq!(read["chat"]["messages"][1]["deliveryStatus"], "read");
    server.the_fold_agrees_with_the_read_models().await;
}

async fn outside_the_window_only_templates_go(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let two_days_ago = chrono::Utc::now().timestamp() - 2 * 24 * 3600;
    server
        .partner_writes_at("919638120888", "wamid.old", two_days_ago)
        .await;
    let chat_id = server.chats_when(|c| c.len() == 1).await[0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = server
        .gql_as(
            &asha,
            "mutation($c: ID!) { sendReply(chatId: $c, text: \"hello?\") { deliveryStatus } }",
            json!({"c": chat_id}),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "OUTSIDE_SERVICE_WINDOW",
        "{refused}"
    );
    assert!(refused["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("template"));
    let template = server
        .gql_as(
            &asha,
            r#"mutation($c: ID!) { sendTemplate(chatId: $c, name: "follow_up", language: "en", params: ["Ravi"]) { kind deliveryStatus } }"#,
            json!({"c": chat_id}),
        )
        .await;
    assert_eq!(
        template["data"]["sendTemplate"]["kind"], "template",
        "{template}"
    );
    eventually(&server, CHAT_MESSAGES, json!({"c": chat_id}), |d| {
        d["chat"]["messages"][1]["deliveryStatus"] == "accepted"
    })
    .await;
    let body = &server.provider.requests()[0].body;
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "follow_up");
    assert_eq!(
        body["template"]["components"][0]["parameters"][0]["text"],
        "Ravi"
    );
    server.the_fold_agrees_with_the_read_models().await;
}

async fn transient_failures_are_retried_and_permanent_ones_are_not(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .partner_writes_at("919638120888", "wamid.in.r", chrono::Utc::now().timestamp())
        .await;
    let chat_id = server.chats_when(|c| c.len() == 1).await[0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply =
        "mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { deliveryStatus } }";

    // 500, 500, then 200: sent once, recorded as dispatched after three attempts.
    let server_error = json!({"error": {"message": "Service temporarily unavailable", "code": 2}});
    server.provider.answer_next(500, server_error.clone());
    server.provider.answer_next(500, server_error);
    server
        .gql_as(&asha, reply, json!({"c": chat_id, "t": "first"}))
        .await;
    eventually(&server, CHAT_MESSAGES, json!({"c": chat_id}), |d| {
        d["chat"]["messages"][1]["deliveryStatus"] == "accepted"
    })
    .await;
    assert_eq!(server.provider.requests().len(), 3);
    let stream = format!("conversation-{PARTNER}-+919638120888");
    let events = server.store.read_stream(&stream, 0, 50).await.unwrap();
    let dispatched: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "MessageDispatched")
        .collect();
    assert_eq!(dispatched.len(), 1);
    assert_eq!(dispatched[0].data["attempts"], 3);

    // 131047 (re-engagement): recorded as failed with Meta's code and text, never retried.
    let reengagement: Value =
        serde_json::from_slice(&fixture("meta-error-obj-131047-reengagement.json")).unwrap();
    server
        .provider
        .answer_next(400, json!({"error": reengagement}));
    server
        .gql_as(&asha, reply, json!({"c": chat_id, "t": "second"}))
        .await;
    let failed = eventually(&server, CHAT_MESSAGES, json!({"c": chat_id}), |d| {
        d["chat"]["messages"][2]["deliveryStatus"] == "failed"
    })
    .await;
    let error = failed["chat"]["messages"][2]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.starts_with("131047"), "{error}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.provider.requests().len(),
        4,
        "a permanent failure is not retried"
    );
    let events = server.store.read_stream(&stream, 0, 50).await.unwrap();
    let failure = events
        .iter()
        .find(|e| e.event_type == "MessageDispatchFailed")
        .unwrap();
    assert_eq!(failure.data["code"], 131047);
    assert_eq!(failure.data["permanent"], true);
    server.the_fold_agrees_with_the_read_models().await;
}

async fn resolve_ask_for_a_rating_and_record_it(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let now = chrono::Utc::now().timestamp();
    server
        .partner_writes_at("919638120888", "wamid.q", now)
        .await;
    let chat_id = server.chats_when(|c| c.len() == 1).await[0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();

    let resolved = server
        .gql_as(
            &asha,
            "mutation($c: ID!) { resolveChat(chatId: $c) { status resolvedAt } }",
            json!({"c": chat_id}),
        )
        .await;
    assert_eq!(
        resolved["data"]["resolveChat"]["status"], "RESOLVED",
        "{resolved}"
    );
    assert!(resolved["data"]["resolveChat"]["resolvedAt"].is_string());
    // The rating request goes out as text: the customer wrote within 24 hours.
    eventually(&server, CHAT_MESSAGES, json!({"c": chat_id}), |d| {
        d["chat"]["messages"][1]["deliveryStatus"] == "accepted"
    })
    .await;
    let request = &server.provider.requests()[0].body;
    assert_eq!(
        request["text"]["body"],
        "Hope we resolved your query. Rate 1-5."
    );

    // "4" answers it: the chat's rating, recorded in the resolved chat.
    server
        .partner_says("919638120888", "wamid.four", now + 60, "4")
        .await;
    let rated = server
        .query(
            "query($c: ID!) { chat(chatId: $c) { status rating messages { text } } }",
            json!({"c": chat_id}),
        )
        .await;
    assert_eq!(rated["chat"]["rating"], 4, "{rated}");
    assert_eq!(rated["chat"]["status"], "RESOLVED");

    // "hello" afterwards opens a new chat that points back to the resolved one.
    server
        .partner_says("919638120888", "wamid.hello", now + 120, "hello")
        .await;
    let chats = server.chats_when(|c| c.len() == 2).await;
    let data = server
        .query(
            "query($c: ID!) { chat(chatId: $c) { openedReason previousChatId } }",
            json!({"c": chats[1]["chatId"]}),
        )
        .await;
    assert_eq!(
        data["chat"],
        json!({"openedReason": "AfterResolution", "previousChatId": chat_id})
    );
    server.the_fold_agrees_with_the_read_models().await;
}

async fn assignments_and_presence_are_pushed_live(backend: Backend) {
    use chatledger_core::executive::Role;
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let lead = server
        .executive("lead@oneway.cab", Role::Lead, &["partner"])
        .await;
    let ws_base = server.base.replace("http://", "ws://");

    let (mut feed, _) = tokio_tungstenite::connect_async(format!("{ws_base}/ws?token={lead}"))
        .await
        .unwrap();
    let mut request = format!("{ws_base}/graphql/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut subscription, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = |v: Value| WsMessage::Text(v.to_string().into());
    subscription
        .send(send(
            json!({"type": "connection_init", "payload": {"token": lead}}),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut subscription).await["type"], "connection_ack");
    subscription
        .send(send(json!({"id": "a", "type": "subscribe",
            "payload": {"query": "subscription { chatAssigned { customerNumber status assignedTo { name } } }"}})))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.set_online(&asha, true).await;
    let presence = next_json(&mut feed).await;
    assert_eq!(presence["type"], "executive_status", "{presence}");
    assert_eq!(
        (
            presence["data"]["name"].as_str(),
            presence["data"]["online"].as_bool()
        ),
        (Some("asha"), Some(true))
    );

    server.partner_writes("919400000001", "wamid.live.1").await;
    let assigned = loop {
        let frame = next_json(&mut feed).await;
        if frame["type"] == "chat_assigned" {
            break frame;
        }
    };
    assert_eq!(assigned["data"]["rule"], "RoundRobin");
    assert_eq!(assigned["data"]["executive"]["name"], "asha");
    assert_eq!(assigned["data"]["candidates"][0]["name"], "asha");
    assert_eq!(assigned["data"]["customer_number"], "+919400000001");
    let next = next_json(&mut subscription).await;
    assert_eq!(
        next["payload"]["data"]["chatAssigned"],
        json!({"customerNumber": "+919400000001", "status": "ASSIGNED", "assignedTo": {"name": "asha"}}),
        "{next}"
    );
    server.the_fold_agrees_with_the_read_models().await;
}

impl Server {
    /// Events of `stream` of one of `types`, once `count` of them exist (the reactors work
    /// asynchronously), failing the test when they do not come.
    async fn wait_for_events(
        &self,
        stream: &str,
        types: &[&str],
        count: usize,
    ) -> Vec<chatledger_core::RecordedEvent> {
        for _ in 0..300 {
            let found: Vec<_> = self
                .store
                .read_stream(stream, 0, 10_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| types.contains(&e.event_type.as_str()))
                .collect();
            if found.len() >= count {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{types:?} never reached {count} in {stream}");
    }

    /// Moves the SLA clock, then lets the timers act on it.
    async fn advance(&self, seconds: i64) {
        self.clock.advance(chrono::Duration::seconds(seconds));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    async fn sla_events(&self, stream: &str) -> Vec<String> {
        self.store
            .read_stream(stream, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .filter(|t| t.starts_with("Sla"))
            .collect()
    }
}

const SLA_STREAM: &str = "conversation-9099039188-+919638120888";

async fn an_unanswered_message_raises_one_alert_on_time_and_escalates(backend: Backend) {
    let server = start(backend).await;
    let ws = format!(
        "{}/ws?token={ADMIN_TOKEN}",
        server.base.replace("http://", "ws://")
    );
    let (mut feed, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    let received = chatledger_projections::clock::Clock::now(server.clock.as_ref());
    let sent = server.clock.now_seconds();
    server
        .partner_writes_at("919638120888", "wamid.sla.1", sent)
        .await;
    server
        .wait_for_events(SLA_STREAM, &["SlaClockStarted"], 1)
        .await;
    let board = "{ slaBoard(stakeholder: \"partner\") { customerNumber sla { dueAt alertedAt policyVersion waitingSince } } }";
    let waiting = server.query(board, json!({})).await;
    assert_eq!(
        waiting["slaBoard"][0]["customerNumber"], "+919638120888",
        "{waiting}"
    );
    let due: chrono::DateTime<chrono::Utc> = waiting["slaBoard"][0]["sla"]["dueAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        due,
        chatledger_core::canonical::truncate_to_micros(received + chrono::Duration::seconds(180)),
        "due three minutes after we received it"
    );

    server.advance(179).await;
    assert_eq!(
        server.sla_events(SLA_STREAM).await,
        vec!["SlaClockStarted"],
        "nothing before 3 minutes"
    );
    server.advance(1).await;
    let alert = server
        .wait_for_events(SLA_STREAM, &["SlaAlertRaised"], 1)
        .await
        .remove(0);
    let due: chrono::DateTime<chrono::Utc> =
        alert.data["due_at"].as_str().unwrap().parse().unwrap();
    let pushed = loop {
        let frame = next_json(&mut feed).await;
        if frame["type"] == "sla_alert" {
            break frame;
        }
    };
    assert_eq!(
        (
            pushed["data"]["level"].as_str(),
            pushed["data"]["stakeholder"].as_str()
        ),
        (Some("alert"), Some("partner"))
    );
    let alerted = server.query(board, json!({})).await;
    assert!(
        alerted["slaBoard"][0]["sla"]["alertedAt"].is_string(),
        "{alerted}"
    );
    assert_eq!(alerted["slaBoard"][0]["sla"]["policyVersion"], 0);
    let fired: chrono::DateTime<chrono::Utc> =
        alert.data["fired_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(due, received + chrono::Duration::seconds(180));
    assert!(
        fired >= due && fired - due < chrono::Duration::seconds(1),
        "fired {fired} for due {due}"
    );
    assert_eq!(
        alert.data["policy_version"], 0,
        "measured against the first recorded policy"
    );
    assert_eq!(alert.data["threshold_seconds"], 180);

    // One template to the alert group, exactly.
    let notified = async {
        loop {
            let sent: Vec<_> = server.provider.requests();
            if !sent.is_empty() {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let requests = tokio::time::timeout(GUARD, notified).await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["to"], ALERT_GROUP.trim_start_matches('+'));
    assert_eq!(requests[0].body["template"]["name"], "sla_alert");

    server.advance(60).await;
    assert_eq!(
        server.sla_events(SLA_STREAM).await,
        vec!["SlaClockStarted", "SlaAlertRaised"],
        "alerted once"
    );
    server.advance(360).await;
    let escalation = server
        .wait_for_events(SLA_STREAM, &["SlaEscalated"], 1)
        .await
        .remove(0);
    assert_eq!(escalation.data["threshold_seconds"], 600);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = server.provider.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].body["to"], SHIFT_LEAD.trim_start_matches('+'));
    assert_eq!(requests[1].body["template"]["name"], "sla_escalation");
    server.the_fold_agrees_with_the_read_models().await;
}

async fn an_answer_before_the_threshold_prevents_the_alert_and_after_it_the_escalation(
    backend: Backend,
) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .partner_writes_at("919638120888", "wamid.sla.2", server.clock.now_seconds())
        .await;
    let chat_id = server.chats_when(|c| c.len() == 1).await[0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply =
        "mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { deliveryStatus } }";

    server.advance(179).await;
    server
        .gql_as(&asha, reply, json!({"c": chat_id, "t": "on it"}))
        .await;
    server.advance(30).await;
    assert_eq!(
        server.sla_events(SLA_STREAM).await,
        vec!["SlaClockStarted", "SlaClockStopped"],
        "answered at 2:59: no alert"
    );

    // The next unanswered message starts the clock again; an answer after the alert stops
    // the escalation.
    server
        .partner_writes_at("919638120888", "wamid.sla.3", server.clock.now_seconds())
        .await;
    server.advance(181).await;
    server
        .wait_for_events(SLA_STREAM, &["SlaAlertRaised"], 1)
        .await;
    server
        .gql_as(
            &asha,
            reply,
            json!({"c": chat_id, "t": "sorry for the wait"}),
        )
        .await;
    server.advance(600).await;
    assert_eq!(
        server.sla_events(SLA_STREAM).await,
        vec![
            "SlaClockStarted",
            "SlaClockStopped",
            "SlaClockStarted",
            "SlaAlertRaised",
            "SlaClockStopped"
        ]
    );
    server.the_fold_agrees_with_the_read_models().await;
}

/// The SLA policy changes while a customer waits: the wait is judged by the policy in force
/// when its clock started, on the dashboard and by the alert alike (the due time shown is the
/// moment the alert is recorded); the next wait goes by the new one.
async fn a_policy_change_mid_wait_keeps_the_dashboard_and_the_alert_agreed(backend: Backend) {
    use chatledger_core::sla::{SlaPolicy, SLA_POLICY_EVENT, SLA_POLICY_STREAM};
    let server = start(backend).await;
    server
        .partner_writes_at("919638120888", "wamid.pol.1", server.clock.now_seconds())
        .await;
    server
        .wait_for_events(SLA_STREAM, &["SlaClockStarted"], 1)
        .await;
    let stricter = SlaPolicy {
        alert_after_seconds: 60,
        escalate_after_seconds: 120,
        stakeholders: Default::default(),
    };
    server
        .store
        .append(
            SLA_POLICY_STREAM,
            chatledger_core::ExpectedVersion::Any,
            vec![chatledger_core::NewEvent::new(
                uuid::Uuid::new_v4(),
                SLA_POLICY_EVENT,
                serde_json::to_value(&stricter).unwrap(),
                chatledger_core::Metadata::by("test"),
            )],
        )
        .await
        .unwrap();
    let board =
        "{ slaBoard(stakeholder: \"partner\") { sla { dueAt policyVersion waitingSince } } }";
    let shown = server.query(board, json!({})).await;
    let due_shown: chrono::DateTime<chrono::Utc> = shown["slaBoard"][0]["sla"]["dueAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let waiting: chrono::DateTime<chrono::Utc> = shown["slaBoard"][0]["sla"]["waitingSince"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        due_shown - waiting,
        chrono::Duration::seconds(180),
        "{shown}"
    );

    // Past the new policy's minute, before the old one's three: nothing yet.
    server.advance(90).await;
    assert_eq!(
        server.sla_events(SLA_STREAM).await,
        vec!["SlaClockStarted"],
        "the wait keeps the policy it started under"
    );
    server.advance(90).await;
    let alert = server
        .wait_for_events(SLA_STREAM, &["SlaAlertRaised"], 1)
        .await
        .remove(0);
    let due_alerted: chrono::DateTime<chrono::Utc> =
        alert.data["due_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        chatledger_core::canonical::truncate_to_micros(due_alerted),
        due_shown,
        "the dashboard showed the moment the alert is recorded for"
    );
    assert_eq!(alert.data["threshold_seconds"], 180);
    assert_eq!(
        alert.data["policy_version"],
        shown["slaBoard"][0]["sla"]["policyVersion"]
    );

    // Answered; the next wait starts under the stricter policy, on both sides.
    let chat_id = server
        .query(
            "{ chats(filter: {stakeholder: \"partner\"}) { nodes { chatId } } }",
            json!({}),
        )
        .await["chats"]["nodes"][0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .query(
            "mutation($c: ID!) { sendReply(chatId: $c, text: \"here\") { messageId } }",
            json!({"c": chat_id}),
        )
        .await;
    server
        .wait_for_events(SLA_STREAM, &["SlaClockStopped"], 1)
        .await;
    server
        .partner_writes_at("919638120888", "wamid.pol.2", server.clock.now_seconds())
        .await;
    server
        .wait_for_events(SLA_STREAM, &["SlaClockStarted"], 2)
        .await;
    let shown = server.query(board, json!({})).await;
    let due_shown: chrono::DateTime<chrono::Utc> = shown["slaBoard"][0]["sla"]["dueAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let waiting: chrono::DateTime<chrono::Utc> = shown["slaBoard"][0]["sla"]["waitingSince"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        due_shown - waiting,
        chrono::Duration::seconds(60),
        "{shown}"
    );
    server.advance(61).await;
    let alerts = server
        .wait_for_events(SLA_STREAM, &["SlaAlertRaised"], 2)
        .await;
    let due_alerted: chrono::DateTime<chrono::Utc> =
        alerts[1].data["due_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        chatledger_core::canonical::truncate_to_micros(due_alerted),
        due_shown
    );
    assert_eq!(alerts[1].data["threshold_seconds"], 60);
    server.the_fold_agrees_with_the_read_models().await;
}

impl Server {
    /// Every chat as the dashboard reads it once the read models caught up with the log, and
    /// as `chatAsOf` folds it from the log at that instant: the same answer.
    async fn the_fold_agrees_with_the_read_models(&self) {
        self.caught_up().await;
        let chats = self
            .query("{ chats(first: 200) { nodes { chatId } } }", json!({}))
            .await;
        let live = format!("query($c: ID!) {{ chat(chatId: $c) {{ {CHAT_AS_SEEN} }} }}");
        let folded = format!(
            "query($c: ID!, $at: DateTime!) {{ chatAsOf(chatId: $c, at: $at) {{ {CHAT_AS_SEEN} }} }}"
        );
        let nodes = chats["chats"]["nodes"].as_array().unwrap().clone();
        assert!(!nodes.is_empty());
        for chat in nodes {
            let id = chat["chatId"].clone();
            let seen = self.query(&live, json!({"c": id})).await;
            let at = chrono::Utc::now().to_rfc3339();
            let as_of = self.query(&folded, json!({"c": id, "at": at})).await;
            assert_eq!(as_of["chatAsOf"], seen["chat"], "chat {id}");
        }
    }
}

const CHAT_AS_SEEN: &str = "chatId stakeholder channelNumber customerNumber customerName status openedAt openedReason
    context previousChatId supersededBy assignedTo { name } tags lastIncomingMessageAt serviceWindowEndsAt resolvedAt
    rating lastMessageAt lastMessagePreview sla { dueAt alertedAt escalatedAt policyVersion waitingSince }
    messages { messageId providerMessageId direction kind text at deliveryStatus error }";

/// The chat as the live `chat` query shows it once nothing is moving, and an instant at
/// which it stood so: the same answer before and after the instant.
async fn settled_chat(
    server: &Server,
    chat_id: &str,
    done: impl Fn(&Value) -> bool,
) -> (String, Value) {
    let query = format!("query($c: ID!) {{ chat(chatId: $c) {{ {CHAT_AS_SEEN} }} }}");
    let vars = json!({"c": chat_id});
    for _ in 0..50 {
        let before = eventually(server, &query, vars.clone(), &done).await;
        let at = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let after = server.query(&query, vars.clone()).await;
        if before == after {
            return (at.to_rfc3339(), before["chat"].clone());
        }
    }
    panic!("the chat never settled");
}

/// `chatAsOf` at each instant of a scenario (message and assignment, tag, reply, resolution)
/// answers what the live `chat` query answered then; `history` says what happened and why.
async fn chat_as_of_matches_what_the_dashboard_saw(backend: Backend) {
    use chatledger_core::executive::Role;
    let server = start(backend).await;
    let asha = server
        .executive("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .gql_as(
            &asha,
            "mutation { setMyStatus(online: true) { online } }",
            json!({}),
        )
        .await;
    let before_anything = chrono::Utc::now().to_rfc3339();
    server
        .partner_says(
            "919638120888",
            "wamid.asof.1",
            chrono::Utc::now().timestamp(),
            "where is my payout?",
        )
        .await;
    let chat_id = server.chats_when(|c| c.len() == 1).await[0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut seen =
        vec![settled_chat(&server, &chat_id, |d| !d["chat"]["assignedTo"].is_null()).await];
    server
        .gql_as(
            &asha,
            "mutation($c: ID!) { applyTag(chatId: $c, tag: \"Payment\") { tags } }",
            json!({"c": chat_id}),
        )
        .await;
    seen.push(settled_chat(&server, &chat_id, |d| d["chat"]["tags"][0] == "Payment").await);
    server
        .gql_as(
            &asha,
            "mutation($c: ID!) { sendReply(chatId: $c, text: \"It goes out today\") { kind } }",
            json!({"c": chat_id}),
        )
        .await;
    seen.push(
        settled_chat(&server, &chat_id, |d| {
            d["chat"]["messages"][1]["deliveryStatus"] == "accepted"
        })
        .await,
    );
    server
        .gql_as(
            &asha,
            "mutation($c: ID!) { resolveChat(chatId: $c) { status } }",
            json!({"c": chat_id}),
        )
        .await;
    seen.push(
        settled_chat(&server, &chat_id, |d| {
            d["chat"]["messages"][2]["deliveryStatus"] == "accepted"
        })
        .await,
    );
    assert_eq!(seen[3].1["status"], "RESOLVED");

    let as_of = format!(
        "query($c: ID!, $at: DateTime!) {{ chatAsOf(chatId: $c, at: $at) {{ {CHAT_AS_SEEN} }} }}"
    );
    for (at, expected) in &seen {
        let folded = server.query(&as_of, json!({"c": chat_id, "at": at})).await;
        assert_eq!(&folded["chatAsOf"], expected, "as of {at}");
    }
    let none = server
        .query(&as_of, json!({"c": chat_id, "at": before_anything}))
        .await;
    assert!(
        none["chatAsOf"].is_null(),
        "the chat did not exist yet: {none}"
    );

    let history = "query($c: ID!, $at: DateTime!) {
        now: chat(chatId: $c) { history { type actor summary } }
        then: chatAsOf(chatId: $c, at: $at) { history { type summary } } }";
    let data = server
        .query(history, json!({"c": chat_id, "at": seen[0].0}))
        .await;
    let summaries: Vec<&str> = data["now"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    for expected in [
        "new chat: the customer's first message",
        "assigned to asha by round robin; candidates: asha",
        "tag \"Payment\" applied by asha",
        "resolved by asha; a rating request follows",
        "SLA clock stopped: an executive answered",
    ] {
        assert!(
            summaries.contains(&expected),
            "{expected:?} not in {summaries:#?}"
        );
    }
    let then = data["then"]["history"].as_array().unwrap();
    assert!(then.len() < summaries.len());
    assert!(!then.iter().any(|e| e["type"] == "ChatResolved"));
}

chatledger_tests::on_both_backends!(
    chat_as_of_matches_what_the_dashboard_saw,
    context_changes_decide_chat_identity,
    a_context_before_the_first_chat_becomes_its_context,
    bad_transaction_posts_are_refused_naming_the_field,
    bookings_become_rides,
    two_online_executives_get_alternating_chats,
    waiting_chats_go_oldest_first_to_whoever_comes_online,
    leads_assign_by_hand,
    executives_tag_chats_from_the_catalog,
    a_reply_is_sent_and_its_receipts_show,
    outside_the_window_only_templates_go,
    transient_failures_are_retried_and_permanent_ones_are_not,
    resolve_ask_for_a_rating_and_record_it,
    assignments_and_presence_are_pushed_live,
    an_unanswered_message_raises_one_alert_on_time_and_escalates,
    an_answer_before_the_threshold_prevents_the_alert_and_after_it_the_escalation,
    a_policy_change_mid_wait_keeps_the_dashboard_and_the_alert_agreed,
);
