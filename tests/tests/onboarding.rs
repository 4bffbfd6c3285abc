//! Official onboarding end to end, against a local Graph API: the integration choice, the
//! signup `state`, the callback's steps and their failures, routing of inbound webhooks and
//! official sends, token refusal (190), renewal, key rotation, and that no token is ever in
//! the clear — in the database, an answer or a log line.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chatledger_adapters::secrets::Keyring;
use chatledger_adapters::whatsapp::signature::meta_signature;
use chatledger_core::credential::credential_stream;
use chatledger_core::RecordedEvent;
use chatledger_tests::db::Backend;
use common::graph::meta_error;
use common::*;
use serde_json::{json, Value};

const BUSINESS: &str = "acme";
const WABA: &str = "102290129340398";
const PNI: &str = "106540352242922";
/// `DISPLAY_NUMBER` as chatledger keeps it.
const NUMBER: &str = "15550104242";
const CUSTOMER: &str = "919812345678";

/// Every log line of this test binary, at debug level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("one subscriber per test binary");
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn signup_result(state: &str, code: &str) -> Value {
    json!({"business_id": BUSINESS, "code": code, "waba_id": WABA, "phone_number_id": PNI, "state": state})
}

impl Server {
    async fn admin(&self, query: &str, variables: Value) -> Value {
        self.client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn choose(&self, business: &str, kind: &str) {
        let answer = self
            .admin(
                "mutation($b: ID!, $k: String!) { chooseIntegration(businessId: $b, kind: $k) }",
                json!({"b": business, "k": kind}),
            )
            .await;
        assert_eq!(answer["data"]["chooseIntegration"], true, "{answer}");
    }

    async fn start_signup(&self, business: &str) -> String {
        let answer = self
            .admin(
                "mutation($b: ID!) { startOfficialSignup(businessId: $b) { state expiresAt appId } }",
                json!({"b": business}),
            )
            .await;
        let started = &answer["data"]["startOfficialSignup"];
        assert_eq!(started["appId"], META_APP_ID, "{answer}");
        started["state"].as_str().unwrap().to_owned()
    }

    async fn callback(&self, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!(
                "{}/api/onboarding/whatsapp/official/callback",
                self.base
            ))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Starts a signup and completes it with `code`.
    async fn onboard(&self, code: &str) -> Value {
        let state = self.start_signup(BUSINESS).await;
        let (status, body) = self.callback(&signup_result(&state, code)).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn credential(&self) -> Value {
        let data = self
            .query(
                "query($b: ID) { credentials(businessId: $b) { businessId wabaId phoneNumberId displayPhoneNumber channel
                    apiProvider status tokenExpiresAt connectedAt lastRefreshedAt refreshFailures lastError
                    needsReauthorisation integration } }",
                json!({"b": BUSINESS}),
            )
            .await;
        data["credentials"][0].clone()
    }

    async fn stream(&self, stream: &str) -> Vec<RecordedEvent> {
        self.store.read_stream(stream, 0, 1000).await.unwrap()
    }

    async fn credential_events(&self) -> Vec<String> {
        self.stream(&credential_stream(BUSINESS))
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// A customer's text to the onboarded number, through Meta's app-level webhook.
    async fn customer_writes(&self, id: &str, text: &str) -> reqwest::Response {
        let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": NUMBER, "phone_number_id": PNI},
              "contacts": [{"profile": {"name": "Meera"}, "wa_id": CUSTOMER}],
              "messages": [{"from": CUSTOMER, "id": id, "timestamp": self.clock.now_seconds().to_string(), "type": "text", "text": {"body": text}}]}}]}]}))
            .unwrap();
        self.client
            .post(format!("{}/api/webhooks/whatsapp", self.base))
            .header("content-type", "application/json")
            .header(
                "x-hub-signature-256",
                meta_signature(META_APP_SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn customer_chat(&self) -> Value {
        let data = self
            .query(
                "query($n: String) { chats(filter: {customerNumber: $n}) { nodes { chatId stakeholder channelNumber status
                    messages { direction text deliveryStatus error } } } }",
                json!({"n": CUSTOMER}),
            )
            .await;
        data["chats"]["nodes"][0].clone()
    }

    async fn reply(&self, chat_id: &str, text: &str) {
        self.query(
            "mutation($c: ID!, $t: String!) { sendReply(chatId: $c, text: $t) { deliveryStatus } }",
            json!({"c": chat_id, "t": text}),
        )
        .await;
    }

    /// Waits until `check` holds of the credential as the dashboard reads it.
    async fn credential_until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..300 {
            let credential = self.credential().await;
            if check(&credential) {
                return credential;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the credential never became {what}: {}",
            self.credential().await
        );
    }
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("a time"))
        .unwrap()
        .to_utc()
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..300 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

async fn onboarding_connects_routes_inbound_and_sends_with_the_business_token(backend: Backend) {
    let server = start(backend).await;
    server.choose(BUSINESS, "official").await;
    let expires_at = chrono::Utc::now().timestamp() + 60 * 24 * 3600;
    server.graph.tokens_expire_at(expires_at);
    let answer = server.onboard("code-1").await;
    let expiry = chrono::DateTime::from_timestamp(expires_at, 0).unwrap();
    assert_eq!(answer["status"], "connected");
    assert_eq!(answer["display_phone_number"], NUMBER);
    assert_eq!(answer["channel"], NUMBER);
    assert_eq!(time(&answer["token_expires_at"]), expiry);

    // The Graph API was called as Meta documents, with the issued token.
    let token = server.graph.issued_tokens()[0].clone();
    let exchange = &server.graph.calls("exchange")[0];
    assert_eq!(exchange.path, "/v21.0/oauth/access_token");
    assert_eq!(exchange.query["client_id"], META_APP_ID);
    assert_eq!(exchange.query["client_secret"], META_APP_SECRET);
    assert_eq!(exchange.query["code"], "code-1");
    let inspect = &server.graph.calls("debug_token")[0];
    assert_eq!(inspect.query["input_token"], token);
    assert_eq!(
        inspect.query["access_token"],
        format!("{META_APP_ID}|{META_APP_SECRET}")
    );
    let subscribe = &server.graph.calls("subscribed_apps")[0];
    assert_eq!(subscribe.path, format!("/v21.0/{WABA}/subscribed_apps"));
    assert_eq!(
        subscribe.headers["authorization"],
        format!("Bearer {token}")
    );
    let register = &server.graph.calls("register")[0];
    assert_eq!(register.path, format!("/v21.0/{PNI}/register"));
    assert_eq!(register.body["messaging_product"], "whatsapp");
    assert_eq!(register.headers["authorization"], format!("Bearer {token}"));

    let credential = server.credential().await;
    assert_eq!(credential["status"], "connected");
    assert_eq!(credential["wabaId"], WABA);
    assert_eq!(credential["phoneNumberId"], PNI);
    assert_eq!(credential["displayPhoneNumber"], NUMBER);
    assert_eq!(credential["apiProvider"], "meta");
    assert_eq!(credential["integration"], "official");
    assert_eq!(time(&credential["tokenExpiresAt"]), expiry);
    assert_eq!(credential["lastError"], Value::Null);
    assert_eq!(credential["needsReauthorisation"], false);
    assert_eq!(
        server.credential_events().await,
        [
            "OfficialSignupStarted",
            "OnboardingAttempted",
            "TokenIssued",
            "AppSubscribed",
            "NumberRegistered",
            "CredentialConnected"
        ]
    );
    let business: Vec<String> = server
        .stream(&format!("business-{BUSINESS}"))
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(business, ["IntegrationChosen", "ChannelRegistered"]);

    // Meta's app-level webhook for the number now reaches the business's chat.
    let response = server
        .customer_writes("wamid.onboarded.1", "is my cab on time?")
        .await;
    assert_eq!(response.status(), 200);
    let chat = server.customer_chat().await;
    assert_eq!(chat["channelNumber"], NUMBER);
    assert_eq!(chat["stakeholder"], "customer");
    assert_eq!(chat["messages"][0]["text"], "is my cab on time?");

    // A reply goes out through the Cloud API with the business's own token.
    let chat_id = chat["chatId"].as_str().unwrap().to_owned();
    server.reply(&chat_id, "yes, at nine").await;
    until("the reply reaches the Graph API", || {
        !server.graph.calls("messages").is_empty()
    })
    .await;
    let sent = &server.graph.calls("messages")[0];
    assert_eq!(sent.path, format!("/v21.0/{PNI}/messages"));
    assert_eq!(sent.headers["authorization"], format!("Bearer {token}"));
    assert_eq!(sent.body["to"], CUSTOMER);
    assert_eq!(sent.body["text"]["body"], "yes, at nine");
    assert!(
        server.provider.requests().is_empty(),
        "nothing went through the gateway"
    );
    let message = dispatched(&server, &chat_id, 1).await;
    assert_eq!(message["deliveryStatus"], "accepted", "{message}");
}

#[tokio::test]
async fn onboarding_connects_routes_inbound_and_sends_with_the_business_token_sqlite() {
    onboarding_connects_routes_inbound_and_sends_with_the_business_token(Backend::Sqlite).await;
}

#[tokio::test]
async fn onboarding_connects_routes_inbound_and_sends_with_the_business_token_postgres() {
    onboarding_connects_routes_inbound_and_sends_with_the_business_token(Backend::Postgres).await;
}

#[tokio::test]
async fn a_bad_state_is_refused_and_nothing_is_recorded() {
    let server = start(Backend::Sqlite).await;
    let refused = |expected_status: u16, expected_code: &'static str| {
        move |(status, body): (u16, Value)| {
            assert_eq!(status, expected_status, "{body}");
            assert_eq!(body["error"], expected_code, "{body}");
            body["message"].as_str().unwrap().to_owned()
        }
    };
    let state = server.start_signup(BUSINESS).await;
    let recorded = server.credential_events().await.len();

    let message =
        refused(400, "unknown_state")(server.callback(&signup_result("acme.forged", "c")).await);
    assert!(message.contains("not issued"), "{message}");
    let globex = server.start_signup("globex").await;
    refused(403, "state_for_another_business")(server.callback(&signup_result(&globex, "c")).await);
    refused(400, "invalid_payload")(
        server
            .callback(&json!({"business_id": BUSINESS, "state": state}))
            .await,
    );
    refused(400, "invalid_request")(
        server.callback(&json!({"business_id": BUSINESS, "code": "c", "waba_id": "w!", "phone_number_id": PNI, "state": state})).await,
    );
    assert_eq!(
        server.credential_events().await.len(),
        recorded,
        "nothing recorded"
    );
    assert!(
        server.graph.calls("exchange").is_empty(),
        "no code was exchanged"
    );

    // Expired: the clock moves past the state's 30 minutes.
    server.clock.advance(chrono::Duration::minutes(31));
    let message = refused(400, "state_expired")(server.callback(&signup_result(&state, "c")).await);
    assert!(message.contains("start a new signup"), "{message}");
    assert_eq!(server.credential_events().await.len(), recorded);

    // Reused: a state that completed a signup does not complete another.
    let fresh = server.start_signup(BUSINESS).await;
    let (status, _) = server.callback(&signup_result(&fresh, "code-a")).await;
    assert_eq!(status, 200);
    let recorded = server.credential_events().await.len();
    refused(400, "state_used")(server.callback(&signup_result(&fresh, "code-b")).await);
    assert_eq!(server.credential_events().await.len(), recorded);
    assert_eq!(server.graph.calls("exchange").len(), 1);
}

async fn each_failed_step_is_recorded_and_a_retry_with_a_fresh_code_completes(backend: Backend) {
    let server = start(backend).await;
    let state = server.start_signup(BUSINESS).await;
    let failures = [
        (
            "exchange",
            "exchange_code",
            100,
            "Invalid verification code format.",
        ),
        (
            "subscribed_apps",
            "subscribe_app",
            200,
            "(#200) Permissions error",
        ),
        (
            "register",
            "register_number",
            133005,
            "Two step verification PIN mismatch.",
        ),
    ];
    for (n, (endpoint, step, code, message)) in failures.into_iter().enumerate() {
        server
            .graph
            .fail_next(endpoint, 400, meta_error(code, "OAuthException", message));
        let (status, body) = server
            .callback(&signup_result(&state, &format!("code-{n}")))
            .await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["error"], "graph_api_error");
        let text = body["message"].as_str().unwrap();
        assert!(
            text.contains(step) && text.contains(message) && text.contains("pending"),
            "{text}"
        );
        let last = server
            .stream(&credential_stream(BUSINESS))
            .await
            .pop()
            .unwrap();
        assert_eq!(last.event_type, "OnboardingStepFailed");
        assert_eq!(last.data["step"], step);
        assert_eq!(last.data["error"]["code"], code);
        assert_eq!(last.data["error"]["message"], message);
        let credential = server.credential().await;
        assert_eq!(credential["status"], "pending");
        assert!(
            credential["lastError"].as_str().unwrap().contains(message),
            "{credential}"
        );
    }
    assert_eq!(
        server.graph.calls("register").len(),
        1,
        "each attempt stops at its failed step"
    );
    // The same state with a fresh code completes the signup.
    let (status, body) = server.callback(&signup_result(&state, "code-final")).await;
    assert_eq!(status, 200, "{body}");
    let credential = server.credential().await;
    assert_eq!(credential["status"], "connected");
    assert_eq!(credential["lastError"], Value::Null);
}

#[tokio::test]
async fn each_failed_step_is_recorded_and_a_retry_with_a_fresh_code_completes_sqlite() {
    each_failed_step_is_recorded_and_a_retry_with_a_fresh_code_completes(Backend::Sqlite).await;
}

#[tokio::test]
async fn each_failed_step_is_recorded_and_a_retry_with_a_fresh_code_completes_postgres() {
    each_failed_step_is_recorded_and_a_retry_with_a_fresh_code_completes(Backend::Postgres).await;
}

#[tokio::test]
async fn a_token_meta_refuses_at_send_disconnects_the_credential() {
    let server = start(Backend::Sqlite).await;
    server.onboard("code-1").await;
    assert_eq!(
        server.customer_writes("wamid.x.1", "hello").await.status(),
        200
    );
    let chat_id = server.customer_chat().await["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    server.graph.revoke_all();
    server.reply(&chat_id, "hi there").await;
    let credential = server
        .credential_until("disconnected", |c| c["status"] == "disconnected")
        .await;
    assert_eq!(credential["needsReauthorisation"], true);
    let error = credential["lastError"].as_str().unwrap();
    assert!(
        error.contains("190") && error.contains("Embedded Signup"),
        "{error}"
    );
    let last = server
        .stream(&credential_stream(BUSINESS))
        .await
        .pop()
        .unwrap();
    assert_eq!(last.event_type, "CredentialDisconnected");
    assert_eq!(last.data["error"]["code"], 190);
    // The message says why it did not go out, and no retry was made.
    let message = dispatched(&server, &chat_id, 1).await;
    assert_eq!(message["deliveryStatus"], "failed", "{message}");
    assert!(
        message["error"].as_str().unwrap().contains("190"),
        "{message}"
    );
    assert_eq!(server.graph.calls("messages").len(), 1);

    // The next message is refused before it reaches Meta, saying what to do.
    server.reply(&chat_id, "still there?").await;
    let message = dispatched(&server, &chat_id, 2).await;
    assert_eq!(message["deliveryStatus"], "failed", "{message}");
    assert!(
        message["error"].as_str().unwrap().contains("disconnected"),
        "{message}"
    );
    assert_eq!(server.graph.calls("messages").len(), 1);

    // Re-authorising: a failed signup leaves it disconnected; a completed one connects it
    // again on the same channel, and messages go out with the new token.
    let state = server.start_signup(BUSINESS).await;
    server.graph.fail_next(
        "exchange",
        400,
        meta_error(100, "OAuthException", "Invalid verification code format."),
    );
    let (status, body) = server.callback(&signup_result(&state, "code-bad")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("stays disconnected"),
        "{body}"
    );
    assert_eq!(server.credential().await["status"], "disconnected");
    let (status, body) = server.callback(&signup_result(&state, "code-2")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel"], NUMBER, "the same channel");
    let credential = server.credential().await;
    assert_eq!(credential["status"], "connected");
    assert_eq!(credential["needsReauthorisation"], false);
    server.reply(&chat_id, "back again").await;
    let message = dispatched(&server, &chat_id, 3).await;
    assert_eq!(message["deliveryStatus"], "accepted", "{message}");
    let new_token = server.graph.issued_tokens().pop().unwrap();
    assert_eq!(
        server.graph.calls("messages").pop().unwrap().headers["authorization"],
        format!("Bearer {new_token}")
    );
}

#[tokio::test]
async fn tokens_are_renewed_once_inside_the_margin() {
    let server = start(Backend::Sqlite).await;
    let now = server.clock.now_seconds();
    server.graph.tokens_expire_at(now + 10 * 24 * 3600);
    server.onboard("code-1").await;
    assert!(
        server.graph.calls("extend").is_empty(),
        "not yet inside the 7-day margin"
    );
    let renewed_expiry = now + 70 * 24 * 3600;
    server.graph.tokens_expire_at(renewed_expiry);
    server.clock.advance(chrono::Duration::days(4));
    let credential = server
        .credential_until("renewed", |c| !c["lastRefreshedAt"].is_null())
        .await;
    assert_eq!(
        time(&credential["tokenExpiresAt"]),
        chrono::DateTime::from_timestamp(renewed_expiry, 0).unwrap()
    );
    let tokens = server.graph.issued_tokens();
    let extend = server.graph.calls("extend");
    assert_eq!(extend.len(), 1);
    assert_eq!(extend[0].query["fb_exchange_token"], tokens[0]);
    assert_eq!(extend[0].query["client_secret"], META_APP_SECRET);
    // Moving on a day does not renew again: the new token is far from its margin.
    server.clock.advance(chrono::Duration::days(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.graph.calls("extend").len(), 1);
    assert_eq!(
        server
            .credential_events()
            .await
            .iter()
            .filter(|t| *t == "TokenRefreshed")
            .count(),
        1
    );
    // Sends use the renewed token.
    assert_eq!(
        server.customer_writes("wamid.r.1", "hello").await.status(),
        200
    );
    let chat_id = server.customer_chat().await["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    server.reply(&chat_id, "hi").await;
    until("the reply is sent", || {
        !server.graph.calls("messages").is_empty()
    })
    .await;
    assert_eq!(
        server.graph.calls("messages")[0].headers["authorization"],
        format!("Bearer {}", tokens[1])
    );
}

#[tokio::test]
async fn a_failing_renewal_disconnects_the_credential_after_the_configured_attempts() {
    let server = start(Backend::Sqlite).await;
    let now = server.clock.now_seconds();
    server.graph.tokens_expire_at(now + 10 * 24 * 3600);
    server.onboard("code-1").await;
    for _ in 0..5 {
        server.graph.fail_next(
            "extend",
            500,
            meta_error(2, "OAuthException", "An unexpected error has occurred."),
        );
    }
    server.clock.advance(chrono::Duration::days(4));
    for attempt in 1..=3 {
        let credential = server
            .credential_until(&format!("failed {attempt} times"), |c| {
                c["refreshFailures"] == attempt
            })
            .await;
        assert!(
            credential["lastError"]
                .as_str()
                .unwrap()
                .contains("unexpected error"),
            "{credential}"
        );
        // The next attempt waits the configured 10 minutes.
        server.clock.advance(chrono::Duration::minutes(10));
    }
    let credential = server
        .credential_until("disconnected", |c| c["status"] == "disconnected")
        .await;
    assert_eq!(credential["needsReauthorisation"], true);
    assert!(
        credential["lastError"]
            .as_str()
            .unwrap()
            .contains("3 attempts"),
        "{credential}"
    );
    server.clock.advance(chrono::Duration::days(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.graph.calls("extend").len(),
        3,
        "no attempt after disconnecting"
    );
    let events = server.credential_events().await;
    assert_eq!(
        events.iter().filter(|t| *t == "TokenRefreshFailed").count(),
        3
    );
    assert_eq!(events.last().unwrap(), "CredentialDisconnected");
}

#[tokio::test]
async fn no_token_is_in_the_clear_in_the_database_an_answer_or_a_log_line() {
    let logs = captured_logs();
    let server = start(Backend::Sqlite).await;
    let now = server.clock.now_seconds();
    server.graph.tokens_expire_at(now + 10 * 24 * 3600);
    let mut answers = server.onboard("code-1").await.to_string();
    assert_eq!(
        server.customer_writes("wamid.s.1", "hello").await.status(),
        200
    );
    let chat_id = server.customer_chat().await["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    server.reply(&chat_id, "hi").await;
    until("the reply is sent", || {
        !server.graph.calls("messages").is_empty()
    })
    .await;
    server.clock.advance(chrono::Duration::days(4));
    server
        .credential_until("renewed", |c| !c["lastRefreshedAt"].is_null())
        .await;
    answers.push_str(&server.credential().await.to_string());
    answers.push_str(
        &server
            .admin(
                "{ events(first: 200) { nodes { stream type data metadata } } }",
                json!({}),
            )
            .await
            .to_string(),
    );
    let tokens = server.graph.issued_tokens();
    assert_eq!(tokens.len(), 2, "one issued, one renewed");
    let pin = server.graph.calls("register")[0].body["pin"]
        .as_str()
        .unwrap()
        .to_owned();
    let database = server.whole_database().await;
    assert!(
        database.contains("TokenRefreshed"),
        "the scan covers the credential's events"
    );
    let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("official onboarding completed"),
        "the logs were captured"
    );
    for secret in
        tokens
            .iter()
            .map(String::as_str)
            .chain([META_APP_SECRET, SECRETS_KEY, pin.as_str()])
    {
        assert!(!database.contains(secret), "{secret} is in the database");
        assert!(!answers.contains(secret), "{secret} is in an answer");
        assert!(!logged.contains(secret), "{secret} is in the logs");
    }
}

#[tokio::test]
async fn without_a_secrets_key_official_onboarding_is_refused() {
    let server = start_with(Backend::Sqlite, &[("CHATLEDGER_SECRETS_KEY", "")]).await;
    let answer = server
        .admin(
            "mutation { startOfficialSignup(businessId: \"acme\") { state } }",
            json!({}),
        )
        .await;
    let error = &answer["errors"][0];
    assert_eq!(error["extensions"]["code"], "UNAVAILABLE", "{answer}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("CHATLEDGER_SECRETS_KEY"));
    let (status, body) = server.callback(&signup_result("acme.anything", "c")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "onboarding_unavailable");
    assert!(server.credential_events().await.is_empty());
    assert!(server.graph.requests().is_empty());
}

#[tokio::test]
async fn the_api_provider_is_a_base_url_and_an_auth_header() {
    // The server's fake Graph API stands in for the BSP here.
    let graph = common::graph::FakeGraph::start().await;
    let server = start_with(
        Backend::Sqlite,
        &[
            ("WHATSAPP_API_PROVIDER", "360dialog"),
            ("WHATSAPP_API_BASE_URL", &format!("{}/v21.0", graph.url)),
            ("WHATSAPP_API_AUTH_HEADER", "D360-API-KEY"),
            ("WHATSAPP_API_AUTH_VALUE", "bsp-partner-key"),
        ],
    )
    .await;
    server.onboard("code-1").await;
    assert!(
        server.graph.requests().is_empty(),
        "Meta was not called directly"
    );
    assert_eq!(server.credential().await["apiProvider"], "360dialog");
    assert_eq!(
        server.customer_writes("wamid.b.1", "hello").await.status(),
        200
    );
    let chat_id = server.customer_chat().await["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    server.reply(&chat_id, "hi").await;
    until("the reply reaches the BSP", || {
        !graph.calls("messages").is_empty()
    })
    .await;
    let requests = graph.requests();
    assert!(requests.len() >= 6);
    for request in &requests {
        assert_eq!(
            request.headers["d360-api-key"], "bsp-partner-key",
            "{request:?}"
        );
    }
}

/// Message `n` of a chat once its dispatch has an outcome.
async fn dispatched(server: &Server, chat_id: &str, n: usize) -> Value {
    for _ in 0..300 {
        let data = server
            .query(
                "query($c: ID!) { chat(chatId: $c) { messages { deliveryStatus error } } }",
                json!({"c": chat_id}),
            )
            .await;
        let message = &data["chat"]["messages"][n];
        if message["deliveryStatus"] == "failed" || message["deliveryStatus"] == "accepted" {
            return message.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("message {n} was never dispatched");
}

#[tokio::test]
async fn messages_route_by_the_business_choice() {
    let server = start(Backend::Sqlite).await;
    let now = server.clock.now_seconds();
    server
        .partner_says("919000000001", "wamid.p.1", now, "hello")
        .await;
    let chat = server
        .query(
            "{ chats(filter: {stakeholder: \"partner\"}) { nodes { chatId } } }",
            json!({}),
        )
        .await;
    let chat_id = chat["chats"]["nodes"][0]["chatId"]
        .as_str()
        .unwrap()
        .to_owned();
    // OneWay.Cab chose the official integration but never completed a signup: its messages
    // fail with the reason, and nothing reaches the gateway.
    server.choose("onewaycab", "official").await;
    server.reply(&chat_id, "first").await;
    let message = dispatched(&server, &chat_id, 1).await;
    assert_eq!(message["deliveryStatus"], "failed");
    assert!(
        message["error"]
            .as_str()
            .unwrap()
            .contains("Embedded Signup"),
        "{message}"
    );
    assert!(server.provider.requests().is_empty());
    // Back to the unofficial gateway: the next one goes through it.
    server.choose("onewaycab", "unofficial").await;
    server.reply(&chat_id, "second").await;
    let message = dispatched(&server, &chat_id, 2).await;
    assert_eq!(message["deliveryStatus"], "accepted", "{message}");
    assert_eq!(server.provider.requests().len(), 1);
    assert!(server.graph.requests().is_empty());
    // A kind that is neither is refused.
    let answer = server
        .admin(
            "mutation { chooseIntegration(businessId: \"onewaycab\", kind: \"grey\") }",
            json!({}),
        )
        .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{answer}"
    );
}

#[tokio::test]
async fn secrets_rotate_reseals_the_live_token_under_the_new_key() {
    let server = start(Backend::Sqlite).await;
    server.onboard("code-1").await;
    let token = server.graph.issued_tokens()[0].clone();
    let old = Keyring::new([42; 32]);
    let mut rotated = Keyring::new([7; 32]);
    rotated.add_old([42; 32]);
    let rotation = chatledger_api::onboarding::rotate_secrets(
        server.store.clone(),
        &rotated,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(rotation.resealed, 1);
    let last = server
        .stream(&credential_stream(BUSINESS))
        .await
        .pop()
        .unwrap();
    assert_eq!(last.event_type, "SecretsResealed");
    assert_eq!(last.data["from_key_id"], old.current_key_id());
    let sealed: chatledger_core::credential::SealedSecret =
        serde_json::from_value(last.data["token"].clone()).unwrap();
    assert_eq!(sealed.key_id, rotated.current_key_id());
    // The new key alone opens it.
    let new_only = Keyring::new([7; 32]);
    let context = format!("{}/access_token", credential_stream(BUSINESS));
    assert_eq!(new_only.open(&sealed, &context).unwrap().expose(), token);
    assert!(old.open(&sealed, &context).is_err());
    // A second rotation finds nothing to do.
    let again = chatledger_api::onboarding::rotate_secrets(
        server.store.clone(),
        &rotated,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!((again.resealed, again.already_current), (0, 1));
}

impl Server {
    /// Meta's app-level webhook with an `account_update` change about `WABA`.
    async fn account_update(&self, body: &Value) {
        let body = serde_json::to_vec(body).unwrap();
        let response = self
            .client
            .post(format!("{}/api/webhooks/whatsapp", self.base))
            .header("content-type", "application/json")
            .header(
                "x-hub-signature-256",
                meta_signature(META_APP_SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/whatsapp/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Meta's restriction and disabling of the business's account, as its webhooks report them:
/// the credential is suspended with Meta's reason, the messages it stops are refused with
/// that reason (and nothing reaches Meta), and the report of its end restores it.
async fn meta_suspends_and_reinstates_the_account(backend: Backend) {
    let server = start(backend).await;
    server.choose(BUSINESS, "official").await;
    server.onboard("code-1").await;
    assert_eq!(
        server.customer_writes("wamid.s.1", "hello").await.status(),
        200
    );
    let chat_id = server.customer_chat().await["chatId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Replies restricted for thirty days (Meta's restriction shape, a live expiration).
    let until = chrono::Utc::now().timestamp() + 30 * 24 * 3600;
    let mut restricted = fixture("meta-account-update-restriction.json");
    restricted["entry"][0]["changes"][0]["value"]["restriction_info"] = json!([
        {"restriction_type": "RESTRICTED_CUSTOMER_INITIATED_MESSAGING", "expiration": until},
        {"restriction_type": "RESTRICTED_ADD_PHONE_NUMBER_ACTION", "expiration": until}
    ]);
    server.account_update(&restricted).await;
    let credential = server
        .credential_until("suspended", |c| c["status"] == "suspended")
        .await;
    let reason = credential["lastError"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("RESTRICTED_CUSTOMER_INITIATED_MESSAGING") && !reason.contains("ADD_PHONE"),
        "{reason}"
    );
    server.reply(&chat_id, "are you there?").await;
    let message = dispatched(&server, &chat_id, 1).await;
    assert_eq!(message["deliveryStatus"], "failed", "{message}");
    assert!(
        message["error"]
            .as_str()
            .unwrap()
            .contains("Meta restricted the account"),
        "{message}"
    );
    assert!(
        server.graph.calls("messages").is_empty(),
        "nothing reached Meta"
    );
    // The same report again records nothing new.
    let events = server.credential_events().await.len();
    server.account_update(&restricted).await;
    assert_eq!(server.credential_events().await.len(), events);

    // Meta reports no restriction left: replies go out again.
    let mut cleared = restricted.clone();
    cleared["entry"][0]["changes"][0]["value"]["restriction_info"] = json!([]);
    server.account_update(&cleared).await;
    server
        .credential_until("connected", |c| c["status"] == "connected")
        .await;
    server.reply(&chat_id, "back").await;
    assert_eq!(
        dispatched(&server, &chat_id, 2).await["deliveryStatus"],
        "accepted"
    );

    // Disabled, as Meta publishes it, then reinstated.
    server
        .account_update(&fixture("meta-account-update-ban.json"))
        .await;
    let credential = server
        .credential_until("suspended", |c| c["status"] == "suspended")
        .await;
    assert!(
        credential["lastError"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{credential}"
    );
    server.reply(&chat_id, "hello?").await;
    let message = dispatched(&server, &chat_id, 3).await;
    assert_eq!(message["deliveryStatus"], "failed", "{message}");
    assert!(
        message["error"].as_str().unwrap().contains("disabled"),
        "{message}"
    );
    server
        .account_update(&fixture("meta-account-update-restriction-lifted.json"))
        .await;
    server
        .credential_until("connected", |c| c["status"] == "connected")
        .await;
    server.reply(&chat_id, "hello again").await;
    assert_eq!(
        dispatched(&server, &chat_id, 4).await["deliveryStatus"],
        "accepted"
    );
    assert_eq!(server.graph.calls("messages").len(), 2);

    // Meta's published restriction example expired in 2022: kept as a notice, nothing more.
    server
        .account_update(&fixture("meta-account-update-restriction.json"))
        .await;
    let types = server.credential_events().await;
    assert_eq!(
        types
            .iter()
            .filter(
                |t| t.starts_with("CredentialSuspended") || t.starts_with("CredentialReinstated")
            )
            .count(),
        4,
        "{types:?}"
    );
    assert_eq!(server.credential().await["status"], "connected");
    let suspended = server
        .stream(&credential_stream(BUSINESS))
        .await
        .into_iter()
        .find(|e| e.event_type == "CredentialSuspended")
        .unwrap();
    assert_eq!(suspended.data["waba_id"], WABA);
    assert_eq!(suspended.data["cause"], "restriction");
    assert_eq!(suspended.metadata.actor, "meta:account_update");
}

#[tokio::test]
async fn meta_suspends_and_reinstates_the_account_sqlite() {
    meta_suspends_and_reinstates_the_account(Backend::Sqlite).await;
}

#[tokio::test]
async fn meta_suspends_and_reinstates_the_account_postgres() {
    meta_suspends_and_reinstates_the_account(Backend::Postgres).await;
}
