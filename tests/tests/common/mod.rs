//! The server every end-to-end test starts: the real router on port 0, a real database,
//! the example channels plus a Twilio and a Meta-direct number, secrets for every check.

#![allow(dead_code)]

use std::sync::Arc;

use chatledger_adapters::whatsapp::signature::twilio_signature;
use chatledger_adapters::whatsapp::twilio::parse_form;
use chatledger_api::auth::{hash_password, AuthSettings};
use std::path::Path;

use chatledger_api::config::{parse_channels, TagCatalog, TransactionSettings, WhatsAppSettings};
use chatledger_api::readiness::Readiness;
use chatledger_api::{run, AppState, Settings};
use chatledger_core::executive::{executive_id, executive_stream, ExecutiveRegistered, Role};
use chatledger_core::{EventStore, ExpectedVersion, Metadata, RecordedEvent};
use chatledger_tests::db::{Backend, TestDb};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "admin-test-token";
pub const TRANSACTION_TOKEN: &str = "transaction-test-token";
pub const PROVIDER_API_KEY: &str = "provider-test-key";
pub const ALERT_GROUP: &str = "+919000000777";
pub const SHIFT_LEAD: &str = "+919000000888";
pub const JWT_SECRET: &str = "jwt-test-secret-of-some-length";
pub const PINBOT_SECRET: &str = "pinbot-test-secret";
/// The app secret of signature vector A1 (fixtures/whatsapp/SOURCES.md).
pub const META_APP_SECRET: &str = "1222e786b144d0e85b9f365372d93676";
pub const A1_SIGNATURE: &str =
    "sha256=54edfa1d7259e0eb13c677cc7d73d1b5c86cfa12433d19156e058ab9251bc441";
pub const TWILIO_TOKEN: &str = "12345";
pub const VERIFY_TOKEN: &str = "verify-me";
pub const PARTNER: &str = "9099039188";
pub const META_APP_ID: &str = "1234567890";
/// `CHATLEDGER_SECRETS_KEY` of the test servers (32 bytes of 0x2a, base64).
pub const SECRETS_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

pub mod browser;
pub mod genesys;
pub mod graph;

pub struct Server {
    pub base: String,
    pub store: Arc<dyn EventStore>,
    pub client: reqwest::Client,
    pub state: AppState,
    pub db: TestDb,
    /// The fake WhatsApp provider every channel sends through.
    pub provider: FakeProvider,
    /// The clock the SLA timers keep: it moves only when a test moves it.
    pub clock: Arc<chatledger_projections::clock::ManualClock>,
    /// The fake Graph API official onboarding and official sends talk to.
    pub graph: graph::FakeGraph,
    /// The filesystem object store's folder (unless the test chose S3).
    pub media_dir: tempfile::TempDir,
    _genesys_dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

/// The example channels plus a Twilio number and a Meta-direct number with a phone number id.
pub fn channels_yaml() -> String {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/channels.yaml"
    ))
    .unwrap();
    example
        + r#"
  - key: twilio-us
    number: "12028831111"
    stakeholder: customer
    provider: twilio
  - key: meta-direct
    number: "15550953877"
    stakeholder: customer
    provider: meta
    phone_number_id: "277321005464405"
  - key: acme-wa
    number: "15550953879"
    stakeholder: customer
    business: acme
    provider: pinbot
    phone_number_id: "277321005464407"
    auth:
      secret_header: { name: X-Webhook-Secret, env: PINBOT_WEBHOOK_SECRET }
  - key: meta-links
    number: "15550953878"
    stakeholder: customer
    provider: meta
    phone_number_id: "277321005464406"
    auth:
      secret_header: { name: X-Webhook-Secret, env: PINBOT_WEBHOOK_SECRET }
    send:
      media: link
"#
}

pub async fn start(backend: Backend) -> Server {
    start_with(backend, &[]).await
}

/// A server whose environment has `overrides` (an empty value unsets the variable).
pub async fn start_with(backend: Backend, overrides: &[(&str, &str)]) -> Server {
    start_full(backend, overrides, None).await
}

/// A server with `overrides`, and `genesys_yaml` as its `genesys.yaml` when given.
pub async fn start_full(
    backend: Backend,
    overrides: &[(&str, &str)],
    genesys_yaml: Option<&str>,
) -> Server {
    let (db, store) = backend.open().await;
    let graph = graph::FakeGraph::start().await;
    let configured = parse_channels(&channels_yaml(), "test channels").unwrap();
    let env: Vec<(String, String)> = vec![
        ("PINBOT_WEBHOOK_SECRET".into(), PINBOT_SECRET.into()),
        ("META_APP_SECRET".into(), META_APP_SECRET.into()),
        ("TWILIO_AUTH_TOKEN".into(), TWILIO_TOKEN.into()),
        ("WEBHOOK_VERIFY_TOKEN".into(), VERIFY_TOKEN.into()),
        ("ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("JWT_SECRET_KEY".into(), JWT_SECRET.into()),
        ("TRANSACTION_API_TOKEN".into(), TRANSACTION_TOKEN.into()),
        ("WA_API_KEY_1".into(), PROVIDER_API_KEY.into()),
        ("DISPATCH_RECIPIENT_INTERVAL_MS".into(), "10".into()),
        ("DISPATCH_FIRST_BACKOFF_MS".into(), "20".into()),
        ("SLA_ALERT_GROUP_NUMBER".into(), ALERT_GROUP.into()),
        ("SLA_SHIFT_LEAD_NUMBER".into(), SHIFT_LEAD.into()),
        // Seal often, so that every scenario runs with the sealer at work.
        ("SEAL_EVERY_EVENTS".into(), "20".into()),
        ("META_APP_ID".into(), META_APP_ID.into()),
        ("CHATLEDGER_SECRETS_KEY".into(), SECRETS_KEY.into()),
        ("GRAPH_API_BASE_URL".into(), format!("{}/v21.0", graph.url)),
        (
            "TOKEN_REFRESH_MARGIN_SECONDS".into(),
            (7 * 24 * 3600).to_string(),
        ),
        ("TOKEN_REFRESH_RETRY_SECONDS".into(), "600".into()),
        ("TOKEN_REFRESH_MAX_ATTEMPTS".into(), "3".into()),
        // Scenarios ask more of the API than a person at a dashboard; the rate test sets its own.
        ("GRAPHQL_RATE_BURST".into(), "100000".into()),
        ("MEDIA_RATE_BURST".into(), "100000".into()),
    ];
    let mut env = env;
    for (name, value) in overrides {
        env.retain(|(k, _)| k != name);
        if !value.is_empty() {
            env.push((name.to_string(), value.to_string()));
        }
    }
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let provider = FakeProvider::start().await;
    let mut configured = configured;
    for channel in &mut configured.channels {
        channel.send.base_url = Some(provider.url.clone());
    }
    let config_dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"));
    let media_dir = tempfile::tempdir().unwrap();
    let media = chatledger_api::config::MediaSettings::load(&configured, &lookup, media_dir.path())
        .unwrap();
    let phones = chatledger_adapters::whatsapp::phone::PhoneNormalizer::new("IN").unwrap();
    let genesys_dir = tempfile::tempdir().unwrap();
    if let Some(yaml) = genesys_yaml {
        std::fs::write(genesys_dir.path().join("genesys.yaml"), yaml).unwrap();
    }
    let genesys =
        chatledger_api::config::GenesysSettings::load(genesys_dir.path(), &configured, &lookup)
            .unwrap();
    let settings = Settings {
        consent: chatledger_api::settings::consent_settings(&lookup),
        media,
        genesys,
        sla: chatledger_api::config::SlaSettings::load(config_dir, &lookup, &phones).unwrap(),
        rating_template: chatledger_api::server::rating_template(&lookup),
        seal: chatledger_api::server::seal_policy(&lookup).unwrap(),
        limits: chatledger_api::limits::Limits::from_env(&lookup).unwrap(),
        onboarding: chatledger_api::onboarding::OnboardingSettings::from_env(&lookup).unwrap(),
        dispatch: chatledger_api::config::DispatchSettings::new(&configured, &lookup).unwrap(),
        whatsapp: WhatsAppSettings::new(configured, &lookup).unwrap(),
        auth: AuthSettings::from_env(&lookup).unwrap(),
        tags: TagCatalog::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config")))
            .unwrap(),
        transaction: TransactionSettings::load(
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config")),
            &lookup,
        )
        .unwrap(),
    };
    let read_side = Arc::new(chatledger_projections::read_side::ReadSide::new(
        db.read_db().await,
    ));
    let mut state = AppState::new(
        store.clone(),
        backend.name(),
        Readiness::ready(),
        read_side,
        settings,
    );
    let clock = Arc::new(chatledger_projections::clock::ManualClock::new(
        chrono::Utc::now(),
    ));
    state.make_mut().clock = clock.clone();
    state.record_configuration().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let (stop_projectors, projectors_stopped) = tokio::sync::watch::channel(false);
    state.start_background(projectors_stopped).await.unwrap();
    tokio::spawn(run(listener, state.clone(), async move {
        let _ = stopped.await;
        stop_projectors.send_replace(true);
    }));
    Server {
        base,
        // The log as the server reads it: personal data opened.
        store: state.store.clone(),
        client: reqwest::Client::new(),
        state,
        db,
        provider,
        clock,
        graph,
        media_dir,
        _genesys_dir: genesys_dir,
        _stop: stop,
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/fixtures/whatsapp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

impl Server {
    pub async fn post_meta(&self, number: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("{}/api/chats/whatsapp_chat/{number}", self.base))
            .header("content-type", "application/json")
            .header("x-webhook-secret", PINBOT_SECRET)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_twilio(&self, key: &str, body: Vec<u8>) -> reqwest::Response {
        let url = format!("{}/api/webhooks/twilio/{key}", self.base);
        let signature = twilio_signature(TWILIO_TOKEN.as_bytes(), &url, &parse_form(&body));
        self.client
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Runs a GraphQL query as admin once the read models have applied the whole log, and
    /// returns its data (failing the test on errors).
    pub async fn query(&self, query: &str, variables: serde_json::Value) -> serde_json::Value {
        let head = self.store.head_position().await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.state.read_side.wait_for(head),
        )
        .await
        .expect("read models catch up");
        let response: serde_json::Value = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(response["errors"].is_null(), "{response}");
        response["data"].clone()
    }

    /// A partner's text message `text`, sent at `timestamp` (unix seconds), posted as a
    /// Cloud API webhook to the partner number.
    pub async fn partner_says(&self, from: &str, id: &str, timestamp: i64, text: &str) {
        let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "Partner"}, "wa_id": from}],
              "messages": [{"from": from, "id": id, "timestamp": timestamp.to_string(), "type": "text", "text": {"body": text}}]}}]}]});
        assert_eq!(
            self.post_meta(PARTNER, serde_json::to_vec(&body).unwrap())
                .await
                .status(),
            200
        );
    }

    /// Every table of the database (log, keys, read models; beside SQLite, both files), every
    /// row, as one text.
    pub async fn whole_database(&self) -> String {
        let mut all = String::new();
        let mut tables = Vec::new();
        let databases = match &self.db {
            chatledger_tests::db::TestDb::Sqlite(_) => {
                vec![self.db.log_db().await, self.db.read_db().await]
            }
            chatledger_tests::db::TestDb::Postgres(_) => vec![self.db.read_db().await],
        };
        for db in databases {
            let list = match db.kind() {
                "sqlite" => "SELECT name FROM sqlite_master WHERE type = 'table'",
                _ => "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            };
            for table in db.fetch_all(list, &[]).await.unwrap() {
                let table = table.text(0).unwrap();
                for row in db.dump_table(&table).await.unwrap() {
                    all.push_str(&format!("{table}: {row:?}\n"));
                }
                tables.push(table);
            }
        }
        assert!(all.contains("events:"), "the scan reads the log too");
        assert!(
            tables.iter().any(|t| t.starts_with("chats_g")),
            "the scan reads the read models too: {tables:?}"
        );
        all
    }

    /// Every event in the log, except the recorded configuration and the seals.
    pub async fn events(&self) -> Vec<RecordedEvent> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let batch = self.store.read_all(after, 1000).await.unwrap();
            let Some(last) = batch.last() else { break };
            after = last.position;
            all.extend(batch.into_iter().filter(|e| {
                !e.stream.starts_with("config-") && e.stream != chatledger_core::audit::SEAL_STREAM
            }));
        }
        all
    }
}

/// The dashboard's side: GraphQL, executives, and waiting for the read models.
impl Server {
    /// Posts to the transaction system's webhook `path`; the status and the JSON answer.
    pub async fn transaction(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
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

    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .client
            .post(format!("{}/graphql", self.base))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// Waits until every read model has applied the whole log.
    pub async fn caught_up(&self) {
        let head = self.store.head_position().await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.state.read_side.wait_for(head),
        )
        .await
        .expect("the read models catch up");
    }

    pub async fn register(&self, email: &str, role: Role, stakeholders: &[&str]) {
        let id = executive_id(email);
        let registered = ExecutiveRegistered {
            executive_id: id,
            email: email.into(),
            name: email.split('@').next().unwrap().into(),
            role,
            stakeholders: stakeholders.iter().map(|s| s.to_string()).collect(),
            password_hash: hash_password("a good long password").unwrap(),
        };
        self.store
            .append(
                &executive_stream(id),
                ExpectedVersion::NoStream,
                vec![registered.to_new_event(Metadata::by("test"))],
            )
            .await
            .unwrap();
        self.caught_up().await;
    }

    /// Waits (up to 30 s) for the fake provider to have received a request matching `found`.
    pub async fn provider_got(&self, found: impl Fn(&ProviderRequest) -> bool) -> ProviderRequest {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(request) = self.provider.requests().into_iter().find(|r| found(r)) {
                return request;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not sent: {:#?}",
                self.provider.requests()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn login(&self, email: &str) -> String {
        let response = self
            .client
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({"email": email, "password": "a good long password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// One request the fake provider received.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    pub path: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: serde_json::Value,
    /// The body as sent (a form, for Twilio).
    pub raw: String,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// A local HTTP server that speaks the Cloud API's `POST …/messages` wire format: it records
/// each request and answers from a script (status and JSON body), or with a success.
///
/// It also serves media as the providers document it: Meta's `GET /{media-id}` (Bearer)
/// answering `{url, mime_type, sha256, file_size}` (`file_size` a string) with a link on
/// another host (`localhost`) that works for 5 minutes and only with the same Bearer;
/// Twilio's media URLs (Basic auth) redirecting to a CDN on another host; and
/// `POST …/media` uploads answering `{id}`.
#[derive(Clone)]
pub struct FakeProvider {
    pub url: String,
    requests: Arc<std::sync::Mutex<Vec<ProviderRequest>>>,
    script: Arc<std::sync::Mutex<std::collections::VecDeque<(u16, serde_json::Value)>>>,
    files: Arc<std::sync::Mutex<std::collections::HashMap<String, FakeFile>>>,
    /// The next media requests that answer 503.
    outage: Arc<std::sync::atomic::AtomicUsize>,
    /// The next media links handed out that have already expired.
    expired_links: Arc<std::sync::atomic::AtomicUsize>,
    /// Media requests to hold for this many milliseconds before answering.
    media_delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

/// A file the fake provider serves.
#[derive(Clone)]
pub struct FakeFile {
    pub mime: String,
    pub bytes: Vec<u8>,
    /// Served the Twilio way (Basic auth, a redirect to the CDN) rather than Meta's.
    pub twilio: bool,
}

/// The Basic auth Twilio media URLs need in the tests: the fixture's account and token.
pub fn twilio_basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("acctid:{TWILIO_TOKEN}"))
    )
}

impl FakeProvider {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let provider = FakeProvider {
            url,
            requests: Default::default(),
            script: Default::default(),
            files: Default::default(),
            outage: Default::default(),
            expired_links: Default::default(),
            media_delay_ms: Default::default(),
        };
        let handler_state = provider.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let state = handler_state.clone();
            async move {
                use axum::response::IntoResponse;
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or_default().to_owned();
                let method = request.method().clone();
                let headers: std::collections::HashMap<String, String> = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                    .collect();
                let bytes = axum::body::to_bytes(request.into_body(), 1 << 28).await.unwrap_or_default();
                let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                let to = body["to"].clone();
                let n = {
                    let mut requests = state.requests.lock().unwrap();
                    let raw = String::from_utf8_lossy(&bytes).into_owned();
                    requests.push(ProviderRequest { path: path.clone(), headers: headers.clone(), body, raw, at: std::time::Instant::now() });
                    requests.len()
                };
                if method == axum::http::Method::GET {
                    return state.media(&path, &query, &headers).await;
                }
                if path.ends_with("/media") {
                    return axum::Json(serde_json::json!({"id": format!("fake-media-{n}")})).into_response();
                }
                let (status, answer) = state.script.lock().unwrap().pop_front().unwrap_or_else(|| {
                    (200, serde_json::json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                        "messages": [{"id": format!("wamid.fake.{n}")}]}))
                });
                (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        provider
    }

    /// Serves `bytes` as the media `id` (Meta's way) or at the path `id` (Twilio's way).
    pub fn serve_file(&self, id: &str, mime: &str, bytes: Vec<u8>, twilio: bool) {
        self.files.lock().unwrap().insert(
            id.to_owned(),
            FakeFile {
                mime: mime.to_owned(),
                bytes,
                twilio,
            },
        );
    }

    /// The next `n` media requests answer 503.
    pub fn media_outage(&self, n: usize) {
        self.outage.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next `n` media links handed out have expired already.
    pub fn expire_next_links(&self, n: usize) {
        self.expired_links
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds each media request this long before answering.
    pub fn delay_media(&self, delay: std::time::Duration) {
        self.media_delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::SeqCst,
        );
    }

    /// The same server under another host name (what Meta's lookaside and Twilio's CDN are).
    pub fn other_host(&self) -> String {
        self.url.replace("127.0.0.1", "localhost")
    }

    async fn media(
        &self,
        path: &str,
        query: &str,
        headers: &std::collections::HashMap<String, String>,
    ) -> axum::response::Response {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        use std::sync::atomic::Ordering;
        let delay = self.media_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let take = |counter: &std::sync::atomic::AtomicUsize| {
            counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if take(&self.outage) {
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": {"message": "Service temporarily unavailable", "code": 2}}))).into_response();
        }
        // Each provider's own header: Meta's Bearer, Pinbot's `apikey`, 360dialog's key.
        let bearer = format!("Bearer {PROVIDER_API_KEY}");
        let authorization = headers.get("authorization").cloned().unwrap_or_default();
        let authorization = if headers.get("apikey").map(String::as_str) == Some(PROVIDER_API_KEY)
            || headers.get("d360-api-key").map(String::as_str) == Some(PROVIDER_API_KEY)
        {
            bearer.clone()
        } else {
            authorization
        };
        let meta_error = |status: StatusCode, code: i64, message: &str| {
            (status, axum::Json(serde_json::json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AfakeTrace"}}))).into_response()
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let file = |name: &str| self.files.lock().unwrap().get(name).cloned();
        match segments.as_slice() {
            ["lookaside", id] => {
                if authorization != bearer {
                    return meta_error(
                        StatusCode::UNAUTHORIZED,
                        190,
                        "the media link needs the same access token",
                    );
                }
                let expires: i64 = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("expires="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if chrono::Utc::now().timestamp() > expires {
                    return meta_error(StatusCode::FORBIDDEN, 131052, "URL signature expired");
                }
                match file(id) {
                    Some(f) => ([("content-type", f.mime)], f.bytes).into_response(),
                    None => meta_error(StatusCode::NOT_FOUND, 131052, "Media download error"),
                }
            }
            ["cdn", name] => match file(name) {
                Some(f) => ([("content-type", f.mime)], f.bytes).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            },
            [.., last] => match file(last) {
                Some(f) if f.twilio => {
                    if authorization != twilio_basic() {
                        return (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(
                                serde_json::json!({"code": 20003, "message": "Authenticate"}),
                            ),
                        )
                            .into_response();
                    }
                    (
                        StatusCode::FOUND,
                        [("location", format!("{}/cdn/{last}", self.other_host()))],
                    )
                        .into_response()
                }
                Some(f) => {
                    if authorization != bearer {
                        return meta_error(
                            StatusCode::UNAUTHORIZED,
                            190,
                            "Invalid OAuth access token",
                        );
                    }
                    let expires = if take(&self.expired_links) {
                        chrono::Utc::now().timestamp() - 1
                    } else {
                        chrono::Utc::now().timestamp() + 300
                    };
                    use sha2::Digest;
                    axum::Json(serde_json::json!({
                        "messaging_product": "whatsapp",
                        "url": format!("{}/lookaside/{last}?expires={expires}", self.other_host()),
                        "mime_type": f.mime,
                        "sha256": hex::encode(sha2::Sha256::digest(&f.bytes)),
                        "file_size": f.bytes.len().to_string(),
                        "id": last,
                    }))
                    .into_response()
                }
                None => meta_error(
                    StatusCode::NOT_FOUND,
                    100,
                    "Unsupported get request. Object does not exist",
                ),
            },
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    /// The next answer (then the next, …); after the script, successes.
    pub fn answer_next(&self, status: u16, body: serde_json::Value) {
        self.script.lock().unwrap().push_back((status, body));
    }

    pub fn requests(&self) -> Vec<ProviderRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// The next text frame of a WebSocket, as JSON (failing the test if none comes).
pub async fn next_json<S>(socket: &mut S) -> serde_json::Value
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(30), socket.next())
            .await
            .expect("a frame arrives")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}
