//! Load tests started through the admin API: a run to completion whose
//! report has the CLI's shape and counts, one run at a time, bad input
//! refused with a reason, and the CSV report.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::support::backend::TestBackend;
use crate::support::client::request;
use crate::support::proxy::Proxy;
use crate::support::{backends_toml, bench, config, eventually, wasm};

async fn post(proxy: &Proxy, body: &str) -> (u16, String) {
    let r = request(Method::POST, &proxy.admin_url("/admin/bench"), &[], body)
        .await
        .expect("admin answer");
    (r.status, r.body)
}

/// `GET` on the admin listener.
async fn admin_get(proxy: &Proxy, path: &str) -> crate::support::client::Resp {
    request(Method::GET, &proxy.admin_url(path), &[], "")
        .await
        .expect("admin answer")
}

/// A proxy in front of a test backend, and the `fixed_request` plugin.
async fn proxy_and_plugin() -> (TestBackend, Proxy, String) {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\n{}\n",
        backends_toml(&[&b], &[])
    )));
    (b, proxy, wasm("fixed_request").display().to_string())
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map_or(vec![], |o| o.keys().cloned().collect());
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_through_the_admin_api_reports_like_the_cli() {
    let (_b, proxy, plugin) = proxy_and_plugin().await;
    let body = format!(
        "{{\"target\": \"/\", \"plugin\": \"{plugin}\", \"operations\": 300, \"concurrency\": 4, \"seed\": 7}}"
    );
    let (status, text) = post(&proxy, &body).await;
    assert_eq!(status, 202, "{text}");
    let started: Value = serde_json::from_str(&text).expect("JSON");
    let url = started["status"].as_str().expect("status URL").to_string();
    // One run at a time.
    let (busy, why) = post(&proxy, &body).await;
    assert!(
        busy == 409 || busy == 202,
        "a second run is refused while one runs (or the first was already done): {why}"
    );
    let run = eventually(Duration::from_secs(60), "the run finishes", || async {
        let v = proxy.admin_json(&url).await;
        (v["state"] == "finished").then_some(v)
    })
    .await;
    let report = &run["report"];
    assert_eq!(report["operations"]["count"], 300, "{run}");
    assert_eq!(report["operations"]["ok"], 300, "{run}");
    // The CLI's report for the same run has the same shape.
    let (code, cli, err) = bench(
        &proxy.url("/"),
        &["--plugin", &plugin, "-n", "300", "-c", "4", "--seed", "7"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(keys(report), keys(&cli));
    assert_eq!(keys(&report["operations"]), keys(&cli["operations"]));
    assert_eq!(report["operations"]["count"], cli["operations"]["count"]);
    assert_eq!(report["seed"], cli["seed"]);
    // The CSV report.
    let csv = admin_get(&proxy, &format!("{url}?format=csv")).await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.body.starts_with("scope,count,ok,failed"),
        "{}",
        csv.body
    );
    // The HTML report, as `--html` writes it.
    let html = admin_get(&proxy, &format!("{url}?format=html")).await;
    assert_eq!(html.status, 200);
    assert_eq!(
        html.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/html; charset=utf-8"[..])
    );
    let count = format!(
        "<td data-k=\"count\">{}</td>",
        report["operations"]["count"]
    );
    assert!(html.body.contains(&count), "{count}");
    assert!(html.body.contains("data-series=\"p99\""));
    let other = admin_get(&proxy, &format!("{url}?format=pdf")).await;
    assert_eq!(other.status, 400);
    assert_eq!(
        other.body,
        "unknown format \"pdf\" (known: json, csv, html)\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runs_are_refused_with_a_reason() {
    let (_b, proxy, plugin) = proxy_and_plugin().await;
    for (body, reason) in [
        ("not json".to_string(), "the body is not JSON"),
        ("{}".to_string(), "\"target\" is required"),
        (
            format!("{{\"target\": \"/\", \"plugin\": \"{plugin}\", \"duration\": \"1h\"}}"),
            "runs started here last at most",
        ),
        (
            format!("{{\"target\": \"/\", \"plugin\": \"{plugin}\", \"workers\": 3}}"),
            "unknown option \"workers\"",
        ),
        (
            "{\"target\": \"/\", \"plugin\": \"missing.wasm\"}".to_string(),
            "cannot read plugin",
        ),
    ] {
        let (status, text) = post(&proxy, &body).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(reason), "{body}: {text}");
    }
    let r = request(Method::GET, &proxy.admin_url("/admin/bench/99"), &[], "")
        .await
        .expect("answer");
    assert_eq!(r.status, 404);
}
