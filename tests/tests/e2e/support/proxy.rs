//! The proxy under test: the real binary in a child process, with its config
//! in a temporary directory and its log captured.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use http::Method;

use super::client::{get, request};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard-under-test");

pub struct Proxy {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The HTTPS listener, with `[tls]`.
    pub tls: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    pub dir: TempDir,
    pub config_path: PathBuf,
}

impl Proxy {
    /// Writes `config` and starts the proxy on it; waits until both
    /// listeners are up.
    pub fn start(config: &str) -> Proxy {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, extra_args: &[&str]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("switchyard.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .args(extra_args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn proxy");
        let stderr = child.stderr.take().expect("stderr");
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut admin, mut tls) = (None, None, None);
        // Loading a large plugin (an 18 MB Python component, say) on a
        // loaded machine takes a while, even from the compile cache.
        let deadline = Instant::now() + Duration::from_secs(60);
        while addr.is_none() || admin.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "proxy did not start; log:\n{}",
                        logs.lock().unwrap().join("\n")
                    );
                }
            };
            if let Some(a) = line.split("proxy listening on ").nth(1) {
                addr = a.trim().parse().ok();
            }
            if let Some(a) = line.split("admin listening on ").nth(1) {
                admin = a.trim().parse().ok();
            }
            // Logged before the admin listener's line.
            if let Some(a) = line.split("HTTPS listening on ").nth(1) {
                tls = a.trim().parse().ok();
            }
        }
        Proxy {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            tls,
            logs,
            dir,
            config_path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = get(&self.admin_url(path)).await.expect("admin request");
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body))
    }

    /// `/admin/backends` entry of one backend of upstream `app`.
    pub async fn backend_view(&self, addr: SocketAddr) -> serde_json::Value {
        let v = self.admin_json("/admin/backends").await;
        v["app"]["backends"]
            .as_array()
            .and_then(|bs| {
                bs.iter()
                    .find(|b| b["address"] == addr.to_string())
                    .cloned()
            })
            .unwrap_or_else(|| panic!("backend {addr} not in {v}"))
    }

    pub async fn metrics(&self) -> String {
        get(&self.admin_url("/metrics"))
            .await
            .expect("metrics")
            .body
    }

    /// Sum of a metric's samples whose labels contain every `label=value`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// `POST /admin/config/reload`: the status and the JSON answer.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let r = request(
            Method::POST,
            &self.admin_url("/admin/config/reload"),
            &[],
            "",
        )
        .await
        .expect("reload request");
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body)),
        )
    }

    /// The version of the config in force.
    pub async fn version(&self) -> String {
        self.admin_json("/admin/config").await["version"]
            .as_str()
            .expect("a version")
            .to_string()
    }

    /// Replaces the config file atomically, as a deploy tool would.
    pub fn write_config(&self, cfg: &str) {
        let tmp = self.config_path.with_extension("new");
        std::fs::write(&tmp, cfg).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("rename config");
    }

    /// Writes a new config and reloads it through the admin API. The file
    /// watch may get there first, so "unchanged" is fine as long as the
    /// version moved.
    pub async fn apply(&self, cfg: &str) {
        let before = self.version().await;
        self.write_config(cfg);
        let (status, body) = self.reload().await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(
            self.version().await,
            before,
            "the new config is in force: {body}"
        );
    }

    /// Waits until the log shows `text`: lines are read from the proxy's
    /// stderr as they come, a little after they are written.
    pub async fn wait_log(&self, text: &str) {
        super::eventually(
            Duration::from_secs(30),
            &format!("{text:?} in the log"),
            || std::future::ready(self.logs().contains(text).then_some(())),
        )
        .await;
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal proxy");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `switchyard ARGS...` to completion; returns exit code, stdout, stderr.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
