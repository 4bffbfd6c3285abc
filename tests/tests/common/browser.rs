//! Headless Chromium (Debian's package) driven over the DevTools protocol: a page to load,
//! scripts to run in it, conditions to wait for, and a screenshot whenever a wait fails.
//!
//! Chromium starts with the flags that keep it off the network (this machine has none) and a
//! fresh profile that is removed afterwards; it is never downloaded.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a wait lasts before the test fails (with a screenshot).
const WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    child: Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
    /// Names the screenshots this browser takes.
    name: String,
}

fn chromium() -> String {
    std::env::var("CHATLEDGER_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

impl Browser {
    /// Starts Chromium with a blank page; `name` names its screenshots.
    pub async fn start(name: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let binary = chromium();
        let child = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{binary} does not start ({e}): install Debian's chromium (apt-get install chromium), as .ci/run does")
            });
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + WAIT;
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Chromium never opened its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page" && t["url"] == "about:blank")
            .expect("a blank page");
        let (socket, _) =
            tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap())
                .await
                .unwrap();
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
            name: name.to_owned(),
        };
        browser.call("Page.enable", json!({})).await;
        browser.call("Runtime.enable", json!({})).await;
        browser
    }

    /// Sends one DevTools command and waits for its answer (events in between are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket
            .send(Message::Text(
                json!({"id": id, "method": method, "params": params})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("Chromium did not answer {method}"))
                .expect("the DevTools connection is open")
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
        }
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete'", "the page loads")
            .await;
    }

    /// The value of a script run in the page (awaited when it is a promise). A script that
    /// throws fails the test.
    pub async fn eval(&mut self, script: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": script, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            self.screenshot().await;
            panic!("{script}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `condition` (a script) is true in the page; fails with a screenshot, the
    /// page's text and `what` when it never is.
    pub async fn wait_for(&mut self, condition: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let script = format!(
            "(() => {{ try {{ return Boolean({condition}); }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&script).await == json!(true) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let shot = self.screenshot().await;
                let text = self.eval("document.body.innerText").await;
                panic!(
                    "{what}: never true ({condition}); screenshot {}; the page says:\n{}",
                    shot.display(),
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails the test, with a screenshot, unless `condition` (a script) is true now.
    pub async fn expect(&mut self, condition: &str, what: &str) {
        let script = format!(
            "(() => {{ try {{ return Boolean({condition}); }} catch (e) {{ return false; }} }})()"
        );
        if self.eval(&script).await != json!(true) {
            let shot = self.screenshot().await;
            let text = self.eval("document.body.innerText").await;
            panic!(
                "{what}: not true ({condition}); screenshot {}; the page says:\n{}",
                shot.display(),
                text.as_str().unwrap_or_default()
            );
        }
    }

    /// Types `value` into the field `selector` as a person would leave it (input and change
    /// events).
    pub async fn fill(&mut self, selector: &str, value: &str) {
        let script = format!(
            "(() => {{ const el = document.querySelector({s}); el.focus(); el.value = {v}; \
             el.dispatchEvent(new Event('input', {{bubbles: true}})); \
             el.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
            s = json!(selector),
            v = json!(value)
        );
        self.wait_for(
            &format!("document.querySelector({})", json!(selector)),
            selector,
        )
        .await;
        self.eval(&script).await;
    }

    /// Clicks the element `selector` once it is there.
    pub async fn click(&mut self, selector: &str) {
        self.wait_for(
            &format!("document.querySelector({})", json!(selector)),
            selector,
        )
        .await;
        self.eval(&format!(
            "document.querySelector({}).click()",
            json!(selector)
        ))
        .await;
    }

    /// The page's visible text.
    pub async fn text(&mut self, selector: &str) -> String {
        self.eval(&format!(
            "(document.querySelector({}) || {{}}).innerText || ''",
            json!(selector)
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Saves what the page shows as `target/console-screenshots/NAME.png` (or `path`).
    pub async fn screenshot(&mut self) -> PathBuf {
        let dir = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/console-screenshots"
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.png", self.name));
        self.screenshot_to(&path).await;
        path
    }

    pub async fn screenshot_to(&mut self, path: &std::path::Path) {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        if let Some(data) = shot["data"].as_str() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
