//! A server started here, fed signed webhooks over loopback HTTP: ingest at saturation and
//! at a fixed rate, projection lag, SLA precision, the dashboard's chat list.

use crate::*;

/// A server on `db`, started here as `serve` starts it, with the example configuration and an
/// SLA policy of `alert_after` seconds.
pub(crate) struct Running {
    pub(crate) base: String,
    pub(crate) state: AppState,
    pub(crate) _stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) _config: tempfile::TempDir,
}

pub(crate) async fn start_server(db: &Db, alert_after: u64) -> Result<Running, String> {
    let config = tempfile::tempdir().map_err(|e| e.to_string())?;
    let source = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config"));
    for file in ["channels.yaml", "tags.yaml"] {
        std::fs::copy(source.join(file), config.path().join(file)).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(config.path().join("context")).map_err(|e| e.to_string())?;
    std::fs::copy(
        source.join("context/partner.yaml"),
        config.path().join("context/partner.yaml"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        config.path().join("sla.yaml"),
        format!(
            "alert_after_seconds: {alert_after}\nescalate_after_seconds: {}\n",
            alert_after * 10
        ),
    )
    .map_err(|e| e.to_string())?;
    // The projection-lag poller asks GraphQL up to a thousand times a second with one token:
    // its quota is lifted, so that what is measured is the engine, not the rate limit.
    let env = |name: &str| match name {
        "META_APP_SECRET" => Some(APP_SECRET.to_owned()),
        "ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        "GRAPHQL_RATE_PER_MINUTE" | "GRAPHQL_RATE_BURST" => Some("100000000".to_owned()),
        _ => None,
    };
    let settings = Settings::load(config.path(), &env, config.path())?;
    let (store, read) = db.open().await?;
    let state = AppState::new(
        store,
        db.kind(),
        Readiness::ready(),
        Arc::new(ReadSide::new(read)),
        settings,
    );
    state
        .record_configuration()
        .await
        .map_err(|e| e.to_string())?;
    let (stop_background, background_stopped) = tokio::sync::watch::channel(false);
    state
        .start_background(background_stopped)
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(listener, state.clone(), async move {
        let _ = stopped.await;
        stop_background.send_replace(true);
    }));
    Ok(Running {
        base,
        state,
        _stop: stop,
        _config: config,
    })
}

/// A signed Cloud API webhook with one text message from `customer`.
pub(crate) fn webhook(customer: u64, id: &str) -> (Vec<u8>, String) {
    let from = format!("9180{:08}", customer);
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "919099039188", "phone_number_id": "1"},
          "contacts": [{"profile": {"name": format!("Partner {customer}")}, "wa_id": from}],
          "messages": [{"from": from, "id": id, "timestamp": Utc::now().timestamp().to_string(), "type": "text",
                        "text": {"body": "hello, is my payout on its way?"}}]}}]}]});
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key length");
    mac.update(&body);
    (
        body,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
    )
}

pub(crate) async fn post(client: &reqwest::Client, url: &str, customer: u64, id: &str) -> bool {
    let (body, signature) = webhook(customer, id);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// 64 clients posting as fast as the server answers, for `seconds`: messages/s acknowledged.
/// Client `c` writes as customers `c`, `c + 64`, `c + 128`, … of 20,000, so that no two clients
/// wait on one conversation at once.
pub(crate) async fn ingest_saturated(db: &Db, seconds: u64) -> Result<f64, String> {
    let server = start_server(db, 180).await?;
    let url = format!("{}/api/chats/whatsapp_chat/{CHANNEL}", server.base);
    let acknowledged = on_load_thread(move || async move {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut clients = Vec::new();
        for c in 0..64u64 {
            let (client, url) = (client.clone(), url.clone());
            clients.push(tokio::spawn(async move {
                let mut ok = 0u64;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let customer = (n * 64 + c) % 20_000;
                    if post(&client, &url, customer, &format!("wamid.sat.{c}.{n}")).await {
                        ok += 1;
                    }
                    n += 1;
                }
                ok
            }));
        }
        let mut total = 0;
        for c in clients {
            total += c.await.unwrap_or(0);
        }
        total
    })
    .await;
    Ok(acknowledged as f64 / seconds as f64)
}

pub(crate) struct FixedRate {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) lag_p50: f64,
    pub(crate) lag_p99: f64,
    pub(crate) sla_p50: f64,
    pub(crate) sla_p99: f64,
    pub(crate) alerts: usize,
}

/// `rate` messages/s for `seconds`, sent on schedule whatever the answers take (latency counts
/// from when a message was due to be sent). Every tenth message comes from a new customer, and
/// its chat is polled through GraphQL until it shows (every millisecond, and after 50 ms every
/// 2% of the time waited). Alerts fall due 2 s after each message.
pub(crate) async fn ingest_fixed_rate(
    db: &Db,
    seconds: u64,
    rate: u64,
) -> Result<FixedRate, String> {
    let server = start_server(db, 2).await?;
    let base = server.base.clone();
    let (mut latencies, mut lags) = on_load_thread(move || async move {
        let client = reqwest::Client::new();
        let url = format!("{base}/api/chats/whatsapp_chat/{CHANNEL}");
        let graphql = format!("{base}/graphql");
        let start = tokio::time::Instant::now();
        let mut sent = Vec::new();
        for n in 0..seconds * rate {
            let due = start + Duration::from_micros(n * 1_000_000 / rate);
            tokio::time::sleep_until(due).await;
            let (client, url, graphql) = (client.clone(), url.clone(), graphql.clone());
            sent.push(tokio::spawn(async move {
                let watched = n % 10 == 0;
                let customer = if watched { 1_000_000 + n } else { n % 5_000 };
                let ok = post(&client, &url, customer, &format!("wamid.fixed.{n}")).await;
                let latency = due.elapsed();
                if !ok || !watched {
                    return (ok.then_some(latency), None);
                }
                let acked = Instant::now();
                let query = json!({"query": "query($n: String!) { customer(stakeholder: \"partner\", number: $n) { chats { chatId } } }",
                    "variables": {"n": format!("+9180{:08}", customer)}});
                while acked.elapsed() < Duration::from_secs(60) {
                    let visible = client
                        .post(&graphql)
                        .bearer_auth(ADMIN_TOKEN)
                        .json(&query)
                        .send()
                        .await
                        .ok();
                    if let Some(response) = visible {
                        if let Ok(data) = response.json::<Value>().await {
                            if data["data"]["customer"]["chats"][0]["chatId"].is_string() {
                                return (Some(latency), Some(acked.elapsed()));
                            }
                        }
                    }
                    // Every millisecond at first, then every 2% of the time waited so far: the
                    // lag is known to within 1 ms or 2%, and a lagging server is not flooded
                    // with polls (a hundred chats watched per second).
                    tokio::time::sleep(acked.elapsed().div_f64(50.0).max(Duration::from_millis(1))).await;
                }
                (Some(latency), None)
            }));
        }
        let (mut latencies, mut lags) = (Vec::new(), Vec::new());
        for task in sent {
            if let Ok((latency, lag)) = task.await {
                latencies.extend(latency);
                lags.extend(lag);
            }
        }
        (latencies, lags)
    })
    .await;
    // Let the alerts of the last messages fall due and be recorded.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut delays = Vec::new();
    let mut after = 0;
    loop {
        let batch = server
            .state
            .store
            .read_all(after, 5_000)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in batch.iter().filter(|e| e.event_type == "SlaAlertRaised") {
            let at = |field: &str| {
                event.data[field]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            if let (Some(due), Some(fired)) = (at("due_at"), at("fired_at")) {
                delays.push((fired - due).to_std().unwrap_or_default());
            }
        }
    }
    Ok(FixedRate {
        p50: quantile(&mut latencies, 0.5),
        p99: quantile(&mut latencies, 0.99),
        lag_p50: quantile(&mut lags, 0.5),
        lag_p99: quantile(&mut lags, 0.99),
        alerts: delays.len(),
        sla_p50: quantile(&mut delays, 0.5),
        sla_p99: quantile(&mut delays, 0.99),
    })
}

/// The dashboard's chat list, 50 chats with tags and last message, 300 times in a row through
/// a server on the replayed read models.
pub(crate) async fn chat_list_latency(db: &Db, _chats: u64) -> Result<(f64, f64), String> {
    let server = start_server(db, 180).await?;
    let head = server
        .state
        .store
        .head_position()
        .await
        .map_err(|e| e.to_string())?;
    server.state.read_side.wait_for(head).await;
    let query = json!({"query": "{ chats(filter: {stakeholder: \"partner\"}, first: 50) { nodes { chatId customerNumber customerName status tags lastMessageAt lastMessagePreview assignedTo { name } } pageInfo { hasNextPage endCursor } } }"});
    let url = format!("{}/graphql", server.base);
    let mut samples = on_load_thread(move || async move {
        let client = reqwest::Client::new();
        let mut samples = Vec::new();
        for _ in 0..300 {
            let started = Instant::now();
            let response = client
                .post(&url)
                .bearer_auth(ADMIN_TOKEN)
                .json(&query)
                .send()
                .await;
            let ok = match response {
                Ok(r) => r.json::<Value>().await.is_ok_and(|v| {
                    v["data"]["chats"]["nodes"]
                        .as_array()
                        .is_some_and(|n| n.len() == 50)
                }),
                Err(_) => false,
            };
            if ok {
                samples.push(started.elapsed());
            }
        }
        samples
    })
    .await;
    if samples.is_empty() {
        return Err("the chat list query never answered 50 chats".into());
    }
    Ok((quantile(&mut samples, 0.5), quantile(&mut samples, 0.99)))
}
