//! Media figures: inbound 100 KB images fetched from a provider and kept per second (on the
//! filesystem store and on S3), and the server's memory while it streams a 100 MB document
//! (it must not hold the file).
//!
//! The server runs as its own process (`serve`), so that its memory is its own; the provider
//! it fetches from is a local fake speaking Meta's media API shape.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes_stream::{chunk, PART};
use serde_json::json;

use crate::Db;

const IMAGE_BYTES: usize = 100 * 1024;

mod bytes_stream {
    /// Bytes sent per chunk of the large document.
    pub const PART: usize = 1024 * 1024;

    /// Chunk `n` of a document: a PDF header first, then filler.
    pub fn chunk(n: usize) -> Vec<u8> {
        let mut part = vec![b'x'; PART];
        if n == 0 {
            part[..9].copy_from_slice(b"%PDF-1.7\n");
        }
        part
    }
}

/// The fake provider: `GET /{id}` answers the link, `GET /files/{id}` the file (`doc`: a
/// document of `document_mb` MB, streamed; anything else: a 100 KB JPEG).
async fn fake_provider(document_mb: usize) -> Result<String, String> {
    let document_bytes = document_mb * PART;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let url = base.clone();
    let image: &'static [u8] = {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
        jpeg.resize(IMAGE_BYTES, 7);
        Box::leak(jpeg.into_boxed_slice())
    };
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let base = base.clone();
        async move {
            use axum::response::IntoResponse;
            let path = request.uri().path().trim_start_matches('/').to_owned();
            match path.strip_prefix("files/") {
                Some("doc") => {
                    let parts = futures_util::stream::iter(
                        (0..document_bytes / PART).map(|n| Ok::<_, std::io::Error>(chunk(n))),
                    );
                    (
                        [("content-type", "application/pdf")],
                        axum::body::Body::from_stream(parts),
                    )
                        .into_response()
                }
                Some(_) => ([("content-type", "image/jpeg")], image).into_response(),
                None => {
                    let (mime, size) = if path == "doc" {
                        ("application/pdf", document_bytes)
                    } else {
                        ("image/jpeg", IMAGE_BYTES)
                    };
                    axum::Json(json!({"messaging_product": "whatsapp", "url": format!("{base}/files/{path}"),
                        "mime_type": mime, "file_size": size.to_string(), "id": path}))
                    .into_response()
                }
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// A `serve` process on `db` with the example configuration, fetching from `provider`, with
/// `env` added.
struct Server {
    child: std::process::Child,
    base: String,
    _media: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(db: &Db, provider: &str, env: &[(&str, String)]) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let media = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"));
    let mut command = std::process::Command::new(exe);
    command
        .args(["__chatledger", "--database-url", &db.url(), "serve"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("CHATLEDGER_CONFIG_DIR", config)
        .env("RUST_LOG", "warn")
        .env("PINBOT_API_BASE_URL", provider)
        .env("PINBOT_WEBHOOK_SECRET", "bench-secret")
        .env("WA_API_KEY_1", "bench-key")
        .env(
            "MEDIA_STORE_URL",
            format!("file://{}", media.path().display()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().map_err(|e| e.to_string())?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _media: media,
    };
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(answer) = client
            .get(format!("{}/api/health/ready", server.base))
            .send()
            .await
        {
            if answer.status().is_success() {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the server did not become ready".into())
}

fn webhook(n: usize, kind: &str, id: &str) -> String {
    let from = format!("9181{n:08}");
    let mut message = json!({"from": from, "id": format!("wamid.media.{n}"), "timestamp": chrono::Utc::now().timestamp().to_string(),
        "type": kind});
    message[kind] = json!({"id": id});
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"metadata": {"phone_number_id": "1"}, "contacts": [{"profile": {"name": "c"}, "wa_id": from}],
          "messages": [message]}}]}]})
    .to_string()
}

async fn post(client: &reqwest::Client, base: &str, body: String) -> Result<(), String> {
    let answer = client
        .post(format!("{base}/api/chats/whatsapp_chat/9099039188"))
        .header("content-type", "application/json")
        .header("x-webhook-secret", "bench-secret")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("the webhook was answered {}", answer.status()))
    }
}

/// Waits until the log holds `count` `MediaStored` events; fails on a `MediaFetchFailed`.
async fn stored(db: &Db, count: usize, limit: Duration) -> Result<(), String> {
    let (store, _) = db.open().await?;
    let started = Instant::now();
    let (mut after, mut seen) = (0, 0);
    while seen < count {
        let batch = store
            .read_all(after, 5_000)
            .await
            .map_err(|e| e.to_string())?;
        for event in &batch {
            match event.event_type.as_str() {
                "MediaStored" => seen += 1,
                "MediaFetchFailed" => {
                    return Err(format!("a fetch failed: {}", event.data["reason"]));
                }
                _ => {}
            }
        }
        match batch.last() {
            Some(last) => after = last.position,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        if started.elapsed() > limit {
            return Err(format!("only {seen} of {count} files stored in {limit:?}"));
        }
    }
    Ok(())
}

/// Inbound 100 KB images fetched and kept per second (`images` of them), posted by 16
/// clients at once.
pub async fn throughput(db: &Db, env: &[(&str, String)], images: usize) -> Result<f64, String> {
    let provider = fake_provider(1).await?;
    let server = serve(db, &provider, env).await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let posts = futures_util::future::join_all((0..16).map(|c| {
        let (client, base) = (client.clone(), server.base.clone());
        async move {
            for n in (c..images).step_by(16) {
                post(&client, &base, webhook(n, "image", &format!("img{n}"))).await?;
            }
            Ok::<_, String>(())
        }
    }))
    .await;
    posts.into_iter().collect::<Result<Vec<_>, _>>()?;
    stored(db, images, Duration::from_secs(600)).await?;
    Ok(images as f64 / started.elapsed().as_secs_f64())
}

/// The server's resident memory (MB) when ready, its peak before the document, and its peak
/// after it fetched and kept a document of `document_mb` MB; and how long that took (s).
pub async fn large_document(db: &Db, document_mb: usize) -> Result<(f64, f64, f64, f64), String> {
    let provider = fake_provider(document_mb).await?;
    let server = serve(db, &provider, &[]).await?;
    let pid = server.child.id();
    let memory = |field: &str| -> Result<f64, String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("cannot read the server's memory: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .ok_or_else(|| format!("{field} is not in /proc/{pid}/status"))
    };
    let ready = memory("VmRSS:")?;
    let peak_before = memory("VmHWM:")?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    post(&client, &server.base, webhook(0, "document", "doc")).await?;
    stored(db, 1, Duration::from_secs(600)).await?;
    let took = started.elapsed().as_secs_f64();
    let peak = memory("VmHWM:")?;
    Ok((ready, peak_before, peak, took))
}
