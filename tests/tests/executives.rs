//! Managing executives, end to end on SQLite and PostgreSQL: a deactivated executive is shut
//! out on every transport at once and her chats go to someone else; a new role or password
//! ends her tokens; `logout` ends the one token it came with; every login starts offline.

mod common;

use std::time::Duration;

use chatledger_core::executive::{executive_id, Role};
use chatledger_tests::db::Backend;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ME: &str = "{ me { name online } }";

impl Server {
    async fn admin(&self, mutation: &str, variables: Value) -> Value {
        let answer = self.graphql(Some(ADMIN_TOKEN), mutation, variables).await;
        assert!(answer["errors"].is_null(), "{mutation}: {answer}");
        answer["data"].clone()
    }

    async fn go_online(&self, token: &str) {
        let answer = self
            .graphql(
                Some(token),
                "mutation { setMyStatus(online: true) { online } }",
                json!({}),
            )
            .await;
        assert_eq!(answer["data"]["setMyStatus"]["online"], true, "{answer}");
    }

    /// Who each partner chat is assigned to (by customer), once `done` holds.
    async fn assignees_when(&self, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let data = self
                .query(
                    r#"{ chats(filter: {stakeholder: "partner"}) { nodes { customerNumber assignedTo { name } } } }"#,
                    json!({}),
                )
                .await;
            let by_customer: serde_json::Map<String, Value> = data["chats"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["customerNumber"].as_str().unwrap().to_owned(),
                        c["assignedTo"]["name"].clone(),
                    )
                })
                .collect();
            last = Value::Object(by_customer);
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the assignments never reached the expected state: {last}");
    }
}

fn id_of(email: &str) -> String {
    executive_id(email).to_string()
}

/// Waits for a WebSocket to be closed by the server (a close frame, an error or its end).
async fn closed_within_a_second<S>(socket: &mut S)
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the server closed the connection within a second");
}

async fn a_deactivated_executive_is_shut_out_everywhere_at_once(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .register("ravi@oneway.cab", Role::Executive, &["partner"])
        .await;
    let asha = server.login("asha@oneway.cab").await;
    let ravi = server.login("ravi@oneway.cab").await;
    server.go_online(&asha).await;
    server.go_online(&ravi).await;
    // Two chats: the round robin gives one to each.
    server
        .partner_says("919811100001", "wamid.d1", 1_764_570_000, "one")
        .await;
    server
        .partner_says("919811100002", "wamid.d2", 1_764_570_001, "two")
        .await;
    let before = server
        .assignees_when(|a| {
            a.as_object()
                .unwrap()
                .values()
                .filter(|n| n.is_string())
                .count()
                == 2
        })
        .await;
    assert!(
        before.as_object().unwrap().values().any(|n| n == "asha"),
        "{before}"
    );

    // Asha is signed in on all three transports.
    let ws_base = server.base.replace("http://", "ws://");
    let (mut feed, _) = tokio_tungstenite::connect_async(format!("{ws_base}/ws?token={asha}"))
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
    subscription
        .send(WsMessage::Text(
            json!({"type": "connection_init", "payload": {"token": asha}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    let ack = subscription.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");
    assert_eq!(
        server.graphql(Some(&asha), ME, json!({})).await["data"]["me"]["name"],
        "asha"
    );

    let data = server
        .admin(
            r#"mutation($id: ID!) { deactivateExecutive(id: $id, reason: "left the team") { name active online } }"#,
            json!({"id": id_of("asha@oneway.cab")}),
        )
        .await;
    assert_eq!(
        data["deactivateExecutive"],
        json!({"name": "asha", "active": false, "online": false})
    );

    // Refused at once over HTTP; both live connections closed within a second.
    let refused = server.graphql(Some(&asha), ME, json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{refused}"
    );
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("deactivated"),
        "{refused}"
    );
    closed_within_a_second(&mut feed).await;
    closed_within_a_second(&mut subscription).await;
    let login = server
        .client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({"email": "asha@oneway.cab", "password": "a good long password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 403);
    assert!(
        tokio_tungstenite::connect_async(format!("{ws_base}/ws?token={asha}"))
            .await
            .is_err()
    );

    // Her chat went to Ravi, the one online executive left, and the history says why.
    server
        .assignees_when(|a| a.as_object().unwrap().values().all(|n| n == "ravi"))
        .await;
    let reassigned: Vec<_> = server
        .store
        .read_all(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "ChatReassigned")
        .collect();
    assert_eq!(reassigned.len(), 1);
    assert_eq!(reassigned[0].data["rule"], "AssigneeLeft");
    assert_eq!(reassigned[0].data["previous"]["name"], "asha");
    // Ravi is not touched.
    assert_eq!(
        server.graphql(Some(&ravi), ME, json!({})).await["data"]["me"]["name"],
        "ravi"
    );

    // Reactivated, she logs in again, offline.
    server
        .admin(
            "mutation($id: ID!) { reactivateExecutive(id: $id) { active } }",
            json!({"id": id_of("asha@oneway.cab")}),
        )
        .await;
    let again = server.login("asha@oneway.cab").await;
    assert_eq!(
        server.graphql(Some(&again), ME, json!({})).await["data"]["me"],
        json!({"name": "asha", "online": false})
    );
    // Executives cannot manage executives.
    let forbidden = server
        .graphql(
            Some(&ravi),
            "mutation($id: ID!) { deactivateExecutive(id: $id, reason: \"x\") { active } }",
            json!({"id": id_of("asha@oneway.cab")}),
        )
        .await;
    assert_eq!(
        forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{forbidden}"
    );
}

async fn logout_ends_only_the_token_it_came_with(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let laptop = server.login("asha@oneway.cab").await;
    let phone = server.login("asha@oneway.cab").await;
    let out = server
        .graphql(Some(&laptop), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out["data"]["logout"], true, "{out}");
    let refused = server.graphql(Some(&laptop), ME, json!({})).await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("logged out"),
        "{refused}"
    );
    assert_eq!(
        server.graphql(Some(&phone), ME, json!({})).await["data"]["me"]["name"],
        "asha"
    );
    // The admin token has nothing to log out.
    let admin = server
        .graphql(Some(ADMIN_TOKEN), "mutation { logout }", json!({}))
        .await;
    assert_eq!(
        admin["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{admin}"
    );
}

async fn every_login_starts_offline(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    server
        .register("ravi@oneway.cab", Role::Executive, &["partner"])
        .await;
    let first = server.login("asha@oneway.cab").await;
    server.go_online(&first).await;
    let ravi = server.login("ravi@oneway.cab").await;
    server.go_online(&ravi).await;
    server
        .partner_says("919811100003", "wamid.o1", 1_764_570_000, "hello")
        .await;
    server
        .assignees_when(|a| a.as_object().unwrap().values().any(|n| n.is_string()))
        .await;
    // Asha logs in again (another shift, another browser): she is offline until she says so.
    let second = server.login("asha@oneway.cab").await;
    assert_eq!(
        server.graphql(Some(&second), ME, json!({})).await["data"]["me"]["online"],
        false
    );
    let listed = server
        .query(r#"{ executives { name online } }"#, json!({}))
        .await;
    assert!(
        listed["executives"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "asha", "online": false})),
        "{listed}"
    );
    // Whatever she held went to Ravi.
    server
        .assignees_when(|a| a.as_object().unwrap().values().all(|n| n == "ravi"))
        .await;
}

async fn a_new_role_or_password_ends_her_tokens(backend: Backend) {
    let server = start(backend).await;
    server
        .register("asha@oneway.cab", Role::Executive, &["partner"])
        .await;
    let asha = server.login("asha@oneway.cab").await;
    server.go_online(&asha).await;
    server
        .partner_says("919811100004", "wamid.r1", 1_764_570_000, "hello")
        .await;
    server
        .assignees_when(|a| a["+919811100004"] == "asha")
        .await;

    // Moved to the customer desk: her partner chat goes back to waiting, her token ends.
    // A role and stakeholders in any case; kept in their one form.
    let moved = server
        .admin(
            r#"mutation($id: ID!) { changeExecutiveRole(id: $id, role: "Lead", stakeholders: [" Customer "]) { role stakeholders } }"#,
            json!({"id": id_of("asha@oneway.cab")}),
        )
        .await;
    assert_eq!(
        moved["changeExecutiveRole"],
        json!({"role": "lead", "stakeholders": ["customer"]})
    );
    let refused = server.graphql(Some(&asha), ME, json!({})).await;
    assert!(refused["errors"].is_array(), "{refused}");
    server
        .assignees_when(|a| a["+919811100004"].is_null())
        .await;
    let relogged = server.login("asha@oneway.cab").await;
    let me = server
        .graphql(Some(&relogged), "{ me { role stakeholders } }", json!({}))
        .await;
    assert_eq!(
        me["data"]["me"],
        json!({"role": "lead", "stakeholders": ["customer"]})
    );

    // A new password: the old token ends, the old password fails, the new one works.
    server
        .admin(
            r#"mutation($id: ID!) { resetExecutivePassword(id: $id, password: "a brand new password") { name } }"#,
            json!({"id": id_of("asha@oneway.cab")}),
        )
        .await;
    assert!(server.graphql(Some(&relogged), ME, json!({})).await["errors"].is_array());
    let login = |password: &'static str| {
        server
            .client
            .post(format!("{}/api/auth/login", server.base))
            .json(&json!({"email": "asha@oneway.cab", "password": password}))
            .send()
    };
    assert_eq!(login("a good long password").await.unwrap().status(), 401);
    assert_eq!(login("a brand new password").await.unwrap().status(), 200);
    // Too short a password, an unknown role: refused with the reason.
    let short = server
        .graphql(
            Some(ADMIN_TOKEN),
            r#"mutation($id: ID!) { resetExecutivePassword(id: $id, password: "short") { name } }"#,
            json!({"id": id_of("asha@oneway.cab")}),
        )
        .await;
    assert!(
        short["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at least"),
        "{short}"
    );
    let boss = server
        .graphql(
            Some(ADMIN_TOKEN),
            r#"mutation($id: ID!) { changeExecutiveRole(id: $id, role: "boss", stakeholders: []) { name } }"#,
            json!({"id": id_of("asha@oneway.cab")}),
        )
        .await;
    assert_eq!(
        boss["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{boss}"
    );
}

async fn admins_register_and_rename_executives(backend: Backend) {
    let server = start(backend).await;
    let data = server
        .admin(
            r#"mutation { registerExecutive(email: "Meera@OneWay.cab", name: "Meera", role: "executive", stakeholders: ["Vendor"], password: "a good long password") { id name stakeholders active online } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        data["registerExecutive"],
        json!({"id": id_of("meera@oneway.cab"), "name": "Meera", "stakeholders": ["vendor"], "active": true, "online": false})
    );
    let token = server.login("meera@oneway.cab").await;
    server
        .admin(
            r#"mutation($id: ID!) { renameExecutive(id: $id, name: "Meera S") { name } }"#,
            json!({"id": id_of("meera@oneway.cab")}),
        )
        .await;
    assert_eq!(
        server
            .graphql(Some(&token), "{ me { name } }", json!({}))
            .await["data"]["me"]["name"],
        "Meera S",
        "a new name ends no token"
    );
    let twice = server
        .graphql(
            Some(ADMIN_TOKEN),
            r#"mutation { registerExecutive(email: "meera@oneway.cab", name: "M", role: "executive", stakeholders: ["vendor"], password: "a good long password") { id } }"#,
            json!({}),
        )
        .await;
    assert!(
        twice["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already registered"),
        "{twice}"
    );
}

chatledger_tests::on_both_backends!(
    a_deactivated_executive_is_shut_out_everywhere_at_once,
    logout_ends_only_the_token_it_came_with,
    every_login_starts_offline,
    a_new_role_or_password_ends_her_tokens,
    admins_register_and_rename_executives,
);
