//! The guard rails of a production service, end to end: failed logins lock an account until
//! an admin unlocks it, a provider that fails trips its circuit breaker (and the queue drains
//! in order when it recovers), tokens are held to their request rate, and `/metrics` reads as
//! Prometheus text whose counters move as the service works.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chatledger_core::executive::Role;
use chatledger_tests::db::Backend;
use common::*;
use serde_json::{json, Value};

const METRICS_TOKEN: &str = "metrics-scraper-token";

/// A scrape's samples, by metric name and sorted labels.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

async fn login_answer(server: &Server, email: &str, password: &str) -> (u16, Value) {
    let response = server
        .client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn twenty_wrong_passwords_lock_until_an_admin_unlocks(backend: Backend) {
    // No growing delays in the way of twenty quick tries: the lock is what is tested.
    let server = start_with(backend, &[("LOGIN_FREE_FAILURES", "100")]).await;
    server
        .register("asha@example.com", Role::Executive, &["partner"])
        .await;
    for n in 0..20 {
        let (status, answer) = login_answer(&server, "asha@example.com", "not her password").await;
        assert_eq!(status, 401, "try {n}: {answer}");
    }
    // The right password is now refused, saying why; so is any other (no guess is checked).
    let (status, answer) = login_answer(&server, "asha@example.com", "a good long password").await;
    assert_eq!(status, 423, "{answer}");
    assert_eq!(answer["error"], "account_locked");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("an admin can unlock"),
        "{answer}"
    );
    let (status, _) = login_answer(&server, "asha@example.com", "still wrong").await;
    assert_eq!(status, 423);
    let events = server.events().await;
    let of = |t: &str| events.iter().filter(|e| e.event_type == t).count();
    assert_eq!(
        of("LoginFailed"),
        20,
        "every failure is recorded; guesses while locked are not checked"
    );
    assert_eq!(of("AccountLocked"), 1, "locked once");
    let locked = events
        .iter()
        .find(|e| e.event_type == "AccountLocked")
        .unwrap();
    assert_eq!(locked.data["failures_in_a_row"], 20);
    let failed = events
        .iter()
        .find(|e| e.event_type == "LoginFailed")
        .unwrap();
    assert_eq!(failed.data["client"], "127.0.0.1", "{failed:?}");

    // An admin sees the lock and lifts it, with a reason; then the right password works.
    let executives = server
        .graphql(
            Some(ADMIN_TOKEN),
            "query { executives { id lockedUntil } }",
            json!({}),
        )
        .await;
    let asha = &executives["data"]["executives"][0];
    assert!(asha["lockedUntil"].is_string(), "{executives}");
    let unlock =
        "mutation($id: ID!, $r: String!) { unlockExecutive(id: $id, reason: $r) { lockedUntil } }";
    let unlocked = server
        .graphql(
            Some(ADMIN_TOKEN),
            unlock,
            json!({"id": asha["id"], "r": "she called from her desk phone"}),
        )
        .await;
    assert_eq!(
        unlocked["data"]["unlockExecutive"]["lockedUntil"],
        Value::Null,
        "{unlocked}"
    );
    let again = server
        .graphql(
            Some(ADMIN_TOKEN),
            unlock,
            json!({"id": asha["id"], "r": "again"}),
        )
        .await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "not locked any more: {again}"
    );
    let (status, answer) = login_answer(&server, "asha@example.com", "a good long password").await;
    assert_eq!(status, 200, "{answer}");
    let events = server.events().await;
    assert!(events.iter().any(|e| e.event_type == "AccountUnlocked"
        && e.data["reason"] == "she called from her desk phone"));
    assert!(events.iter().any(|e| e.event_type == "ExecutiveLoggedIn"));
}

async fn a_lock_ends_by_itself(backend: Backend) {
    // The lock counts from when the third failed login began, before its password check (a
    // second or more of a slow machine's core in a debug build): it lasts long enough that the
    // next login still meets it.
    let server = start_with(
        backend,
        &[
            ("LOGIN_FREE_FAILURES", "100"),
            ("LOGIN_LOCK_AFTER", "3"),
            ("LOGIN_LOCK_SECONDS", "5"),
        ],
    )
    .await;
    server
        .register("ravi@example.com", Role::Lead, &["partner"])
        .await;
    for _ in 0..3 {
        login_answer(&server, "ravi@example.com", "wrong wrong wrong").await;
    }
    let (status, _) = login_answer(&server, "ravi@example.com", "a good long password").await;
    assert_eq!(status, 423);
    tokio::time::sleep(Duration::from_millis(5100)).await;
    let (status, answer) = login_answer(&server, "ravi@example.com", "a good long password").await;
    assert_eq!(status, 200, "the lock lasted its setting: {answer}");
}

/// An executive of the partner's chats, signed in, and the chat a customer just opened with
/// `text`: the executive's token and the chat's id.
async fn executive_with_a_chat(server: &Server, wamid: &str, text: &str) -> (String, Value) {
    server
        .register("asha@example.com", Role::Executive, &["partner"])
        .await;
    let token = server.login("asha@example.com").await;
    server
        .partner_says("919638120888", wamid, chrono::Utc::now().timestamp(), text)
        .await;
    let chats = server
        .query("query { chats(first: 5) { nodes { chatId } } }", json!({}))
        .await;
    (token, chats["chats"]["nodes"][0]["chatId"].clone())
}

/// The message requests the fake provider got, in order.
fn message_requests(server: &Server) -> Vec<ProviderRequest> {
    server
        .provider
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/messages"))
        .collect()
}

async fn a_failing_provider_trips_the_breaker_and_the_queue_drains_in_order(backend: Backend) {
    let cooldown = Duration::from_millis(1500);
    let server = start_with(
        backend,
        &[
            ("BREAKER_FAILURES", "3"),
            ("BREAKER_COOLDOWN_MS", "1500"),
            ("METRICS_TOKEN", METRICS_TOKEN),
        ],
    )
    .await;
    let (token, chat) = executive_with_a_chat(&server, "wamid.b.1", "Where is my payout?").await;
    // The provider is down: its next answers are 500s.
    for _ in 0..3 {
        server.provider.answer_next(
            500,
            json!({"error": {"message": "An unknown error occurred", "type": "OAuthException", "code": 1, "fbtrace_id": "AfakeTrace"}}),
        );
    }
    for n in 1..=5 {
        let sent = server
            .graphql(
                Some(&token),
                "mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { messageId } }",
                json!({"c": chat, "t": format!("update {n}")}),
            )
            .await;
        assert!(sent["errors"].is_null(), "{sent}");
    }
    // Recovery: every message goes, in the order it was queued, none given up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while message_requests(&server).len() < 3 + 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:#?}",
            message_requests(&server)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let requests = message_requests(&server);
    let texts: Vec<&str> = requests
        .iter()
        .map(|r| r.body["text"]["body"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        texts,
        [
            "update 1", "update 1", "update 1", // the three 500s
            "update 1", // the probe, after the cool-down
            "update 2", "update 3", "update 4", "update 5"
        ],
        "the first waits, the others wait behind it"
    );
    // The provider saw the calls stop for the cool-down after the third failure.
    let quiet = requests[3].at.duration_since(requests[2].at);
    assert!(quiet >= cooldown, "the probe came after {quiet:?}");
    server.caught_up().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = server.events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == "MessageDispatched")
            .count(),
        5
    );
    assert!(!events
        .iter()
        .any(|e| e.event_type == "MessageDispatchFailed"));
    // The state changes are exposed.
    let metrics = scrape(&server).await;
    let transitions = |to: &str| {
        metrics
            .get(&(
                "chatledger_circuit_transitions_total".to_owned(),
                vec![
                    ("circuit".into(), "channel:9099039188".into()),
                    ("to".into(), to.into()),
                ],
            ))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(transitions("open") >= 1.0, "{metrics:?}");
    assert!(transitions("half-open") >= 1.0);
    assert!(transitions("closed") >= 1.0);
}

async fn a_long_outage_fails_no_message(backend: Backend) {
    // Three tries a message, a circuit that opens after two failures: the outage outlasts
    // every message's tries, and still nothing is given up, because the probes made while
    // the provider is down are not the message's fault.
    let server = start_with(
        backend,
        &[
            ("BREAKER_FAILURES", "2"),
            ("BREAKER_COOLDOWN_MS", "200"),
            ("DISPATCH_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;
    let (token, chat) = executive_with_a_chat(&server, "wamid.o.1", "hello?").await;
    for _ in 0..7 {
        server.provider.answer_next(
            503,
            json!({"error": {"message": "Service temporarily unavailable", "code": 2}}),
        );
    }
    let sent = server
        .graphql(
            Some(&token),
            "mutation($c: ID!) { sendReply(chatId: $c, text: \"after the outage\") { messageId } }",
            json!({"c": chat}),
        )
        .await;
    assert!(sent["errors"].is_null(), "{sent}");
    let delivered = server
        .provider_got(|r| {
            r.path.ends_with("/messages") && r.body["text"]["body"] == "after the outage"
        })
        .await;
    assert_eq!(delivered.body["text"]["body"], "after the outage");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = server.events().await;
        assert!(
            !events
                .iter()
                .any(|e| e.event_type == "MessageDispatchFailed"),
            "given up"
        );
        if events.iter().any(|e| e.event_type == "MessageDispatched") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recorded as sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        message_requests(&server).len(),
        8,
        "seven failures, then the one that went"
    );
}

async fn a_token_is_held_to_its_rate(backend: Backend) {
    let server = start_with(
        backend,
        &[
            ("GRAPHQL_RATE_PER_MINUTE", "60"),
            ("GRAPHQL_RATE_BURST", "3"),
        ],
    )
    .await;
    server
        .register("asha@example.com", Role::Executive, &["partner"])
        .await;
    server
        .register("ravi@example.com", Role::Executive, &["partner"])
        .await;
    let asha = server.login("asha@example.com").await;
    let ravi = server.login("ravi@example.com").await;
    let ask = |token: String| {
        let server = &server;
        async move {
            server
                .client
                .post(format!("{}/graphql", server.base))
                .bearer_auth(token)
                .json(&json!({"query": "{ me { name } }"}))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(ask(asha.clone()).await.status(), 200);
    }
    let refused = ask(asha.clone()).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(
        ask(ravi).await.status(),
        200,
        "each executive has their own"
    );
}

/// `/metrics`, read with a Prometheus text-format parser: each sample by name and sorted
/// labels.
async fn scrape(server: &Server) -> Samples {
    let response = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics parses as Prometheus text");
    scrape
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            Some(((sample.metric, labels), value))
        })
        .collect()
}

fn sum(metrics: &Samples, name: &str, with: &[(&str, &str)]) -> f64 {
    metrics
        .iter()
        .filter(|((metric, labels), _)| {
            metric == name
                && with
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, value)| value)
        .sum()
}

async fn metrics_read_as_prometheus_text_and_move_as_the_service_works(backend: Backend) {
    let server = start_with(backend, &[("METRICS_TOKEN", METRICS_TOKEN)]).await;
    // Never public by accident.
    let anonymous = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    server
        .register("asha@example.com", Role::Executive, &["partner"])
        .await;
    let executive = server.login("asha@example.com").await;
    let forbidden = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(&executive)
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403, "an executive is not a scraper");

    let before = scrape(&server).await;
    let recorded = |m: &Samples| {
        sum(
            m,
            "chatledger_webhooks_total",
            &[("channel", "9099039188"), ("outcome", "recorded")],
        )
    };
    let appended = |m: &Samples| sum(m, "chatledger_events_appended_total", &[]);
    let now = chrono::Utc::now().timestamp();
    server
        .partner_says("919638120888", "wamid.m.1", now, "hello")
        .await;
    server
        .partner_says("919638120888", "wamid.m.2", now, "anyone there?")
        .await;
    // A bad signature: refused, and counted as such.
    let refused = server
        .client
        .post(format!(
            "{}/api/chats/whatsapp_chat/9099039188",
            server.base
        ))
        .header("content-type", "application/json")
        .header("x-webhook-secret", "wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let wrong_login = server
        .client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({"email": "asha@example.com", "password": "not it at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_login.status(), 401);
    server.caught_up().await;
    let after = scrape(&server).await;
    assert!(
        recorded(&after) >= recorded(&before) + 2.0,
        "webhooks: {} → {}",
        recorded(&before),
        recorded(&after)
    );
    assert!(
        sum(
            &after,
            "chatledger_webhooks_total",
            &[("channel", "9099039188"), ("outcome", "refused")]
        ) >= 1.0
    );
    assert!(appended(&after) > appended(&before), "events appended");
    assert!(
        sum(
            &after,
            "chatledger_login_failures_total",
            &[("reason", "wrong_password")]
        ) >= 1.0
    );
    assert!(
        sum(
            &after,
            "chatledger_http_requests_total",
            &[
                ("route", "/api/chats/whatsapp_chat/:number"),
                ("status", "200")
            ]
        ) >= 2.0
    );
    // Every read model's lag is there, and none is behind once caught up.
    for read_model in ["chats", "messages", "executives"] {
        let lag = after.get(&(
            "chatledger_projection_lag_events".to_owned(),
            vec![("read_model".to_owned(), read_model.to_owned())],
        ));
        assert!(lag.is_some(), "{read_model}: {after:?}");
    }
    // Histograms of append and commit latency, per backend.
    let text = server
        .client
        .get(format!("{}/metrics", server.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for histogram in [
        "chatledger_append_duration_seconds_bucket",
        "chatledger_commit_duration_seconds_bucket",
        "chatledger_http_request_duration_seconds_bucket",
    ] {
        assert!(
            text.contains(histogram),
            "{histogram} (an admin may scrape too)"
        );
    }
}

chatledger_tests::on_both_backends!(
    twenty_wrong_passwords_lock_until_an_admin_unlocks,
    a_lock_ends_by_itself,
    a_failing_provider_trips_the_breaker_and_the_queue_drains_in_order,
    a_long_outage_fails_no_message,
    a_token_is_held_to_its_rate,
    metrics_read_as_prometheus_text_and_move_as_the_service_works,
);
