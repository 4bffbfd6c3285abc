//! The transaction system drives chat identity and rides: scenarios over real HTTP, on SQLite
//! and PostgreSQL.

mod common;

use std::time::Duration;

use chatledger_tests::db::Backend;
use common::*;
use serde_json::{json, Value};

const GUARD: Duration = Duration::from_secs(30);

impl Server {
    async fn transaction(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}/api/webhook/{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn query(&self, query: &str, variables: Value) -> Value {
        let head = self.store.head_position().await.unwrap();
        tokio::time::timeout(GUARD, self.state.read_side.wait_for(head))
            .await
            .expect("read models catch up");
        let response: Value = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(response["errors"].is_null(), "{response}");
        response["data"].clone()
    }

    async fn partner_writes(&self, from: &str, id: &str) {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "Partner"}, "wa_id": from}],
              "messages": [{"from": from, "id": id, "timestamp": "1763800000", "type": "text", "text": {"body": "hi"}}]}}]}]});
        assert_eq!(
            self.post_meta(PARTNER, serde_json::to_vec(&body).unwrap())
                .await
                .status(),
            200
        );
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

    // A configured field changes: a new chat takes over, linked to the old one.
    let (status, answer) = server
        .transaction(
            "context_change",
            Some(TRANSACTION_TOKEN),
            json!({"customer": "9638120888", "customer_type": "partner", "context": {"documents_status": "Approved"}}),
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
            json!({"customer": "+91 96381 20888", "customer_type": "partner", "context": {"city": "Surat"}}),
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
            "created",
            "B-3",
            "2099-02-01T08:00:00Z",
            "confirmed"
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
}

chatledger_tests::on_both_backends!(
    context_changes_decide_chat_identity,
    a_context_before_the_first_chat_becomes_its_context,
    bad_transaction_posts_are_refused_naming_the_field,
    bookings_become_rides,
);
