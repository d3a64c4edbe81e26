//! A real headless Chromium driven over the Chrome DevTools Protocol: the
//! browser is started with `--remote-debugging-port=0`, its page target is
//! found through `/json/list`, and commands go over that target's
//! WebSocket (tokio-tungstenite). Enough of the protocol for page tests:
//! navigate, evaluate a script, take a screenshot.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{eventually, get};

/// The Chromium binaries tried, in order.
const BINARIES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

pub struct Browser {
    child: Child,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and a 1400×1000
    /// window, and connects to its page.
    pub async fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = BINARIES
            .iter()
            .find_map(|bin| {
                Command::new(bin)
                    .args([
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--hide-scrollbars",
                        "--window-size=1400,1000",
                        "--remote-debugging-address=127.0.0.1",
                        "--remote-debugging-port=0",
                    ])
                    .arg(format!("--user-data-dir={}", profile.path().display()))
                    .arg("about:blank")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "chromium is missing (tried {}): run `bash tests/install-deps.sh` \
                     (the README's test command does)",
                    BINARIES.join(", ")
                )
            });
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = eventually(
            Duration::from_secs(60),
            "chromium opens its DevTools port",
            || async {
                std::fs::read_to_string(&port_file)
                    .ok()?
                    .lines()
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            },
        )
        .await;
        let list = format!("http://127.0.0.1:{port}/json/list");
        let ws_url: String = eventually(
            Duration::from_secs(30),
            "chromium lists its page",
            || async {
                let r = get(&list).await.ok()?;
                let targets: Value = serde_json::from_str(&r.body).ok()?;
                targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                    .as_str()
                    .map(str::to_string)
            },
        )
        .await;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("connect to the page's DevTools socket");
        let mut browser = Browser {
            child,
            ws,
            next_id: 0,
            _profile: profile,
        };
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Sends one command and waits for its answer, skipping events.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::Text(message.into()))
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        let answer = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(message) = self.ws.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).unwrap_or_default();
                if v["id"] == id {
                    return v;
                }
            }
            panic!("{method}: the DevTools socket closed");
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within 60 s"));
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Loads `url` and waits until its document has loaded.
    pub async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r["errorText"].is_null(), "navigate to {url}: {r}");
        self.wait_for(
            Duration::from_secs(30),
            "the page loads",
            "document.readyState === 'complete'",
        )
        .await;
    }

    /// Polls `expression` until it is true, or fails the test with `what`
    /// after `limit`.
    pub async fn wait_for(&mut self, limit: Duration, what: &str, expression: &str) {
        let start = std::time::Instant::now();
        while self.eval(expression).await != true {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value; a thrown exception fails the test.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{expression} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// The text of the first element matching `selector`, or null.
    pub async fn text(&mut self, selector: &str) -> Option<String> {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.textContent : null; }})()",
            Value::from(selector)
        );
        self.eval(&expression).await.as_str().map(str::to_string)
    }

    /// Clicks the first element matching `selector`.
    pub async fn click(&mut self, selector: &str) {
        let expression = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            Value::from(selector)
        );
        assert_eq!(self.eval(&expression).await, true, "no {selector} to click");
    }

    /// A PNG of the whole page, written to `path`; its size in bytes.
    pub async fn screenshot(&mut self, path: &Path) -> usize {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .expect("screenshot is base64");
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        png.len()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's screenshot goes: `SWITCHYARD_SCREENSHOTS` (an absolute
/// directory) when set, so the README's images can be retaken, else a temporary file.
pub fn screenshot_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    match std::env::var_os("SWITCHYARD_SCREENSHOTS") {
        Some(d) => PathBuf::from(d).join(name),
        None => dir.path().join(name),
    }
}
