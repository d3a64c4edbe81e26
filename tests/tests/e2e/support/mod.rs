#![allow(dead_code)]
//! Test harness: real backends (hyper, in the test process), the real proxy
//! binary (a child process), an HTTP client and polling helpers.

pub mod backend;
pub mod browser;
pub mod client;
pub mod load;
pub mod origin;
pub mod pebble;
pub mod proxy;
pub mod receiver;
pub mod redis;
pub mod rest;
pub mod tls;

pub use backend::TestBackend;
pub use client::{Http, get, request};
pub use load::{Load, plugin};
pub use proxy::Proxy;
pub use switchyard_tests::{grpc, ws};

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Runs `switchyard bench TARGET ARGS... --json - --quiet`; returns the exit
/// code, the JSON report (Null when none) and stderr.
pub async fn bench(target: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut argv: Vec<String> = vec!["bench".into(), target.into(), "--json".into(), "-".into()];
    argv.push("--quiet".into());
    argv.extend(args.iter().map(|s| s.to_string()));
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        proxy::run_cli(&refs)
    })
    .await
    .expect("bench ran");
    let report = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (code, report, err)
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A config with listeners on free ports, one catch-all route to `app`, and
/// the given upstream section (which must define `[upstreams.app]`).
pub fn config(upstream: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\nupstream = \"app\"\n\n{upstream}\n"
    )
}

/// `backends = [...]` for the given test backends, with weights.
pub fn backends_toml(backends: &[&TestBackend], weights: &[u32]) -> String {
    let items: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "{{ address = \"{}\", weight = {} }}",
                b.addr,
                weights.get(i).copied().unwrap_or(1)
            )
        })
        .collect();
    format!("backends = [{}]", items.join(", "))
}

/// A plugin built from `plugins/` (e.g. `thresholds`, `test_trap`).
pub fn wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/target/wasm32-wasip2/release"
    ))
    .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first with \
         `cargo build --release --manifest-path plugins/Cargo.toml --target wasm32-wasip2`",
        path.display()
    );
    path
}

/// Replaces `dest` with a copy of `src` atomically (write aside, rename), as
/// a deploy tool would.
pub fn replace_file(src: &std::path::Path, dest: &std::path::Path) {
    put_file(&std::fs::read(src).expect("read plugin"), dest);
}

/// Writes `bytes` to `dest` by a rename, as a build would land.
pub fn put_file(bytes: &[u8], dest: &std::path::Path) {
    let tmp = dest.with_extension("incoming");
    std::fs::write(&tmp, bytes).expect("write plugin");
    std::fs::rename(&tmp, dest).expect("rename plugin into place");
}
