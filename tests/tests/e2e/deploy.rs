//! The monitoring assets shipped in `deploy/`: the Grafana dashboard and
//! the Prometheus rules use only metrics a running Switchyard exports, every
//! recording rule they use is defined, and `promtool check rules` accepts
//! the rules file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::support::origin::{Origin, Script};
use crate::support::{Proxy, TestBackend, backends_toml, eventually, get, plugin};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// Metric names in a PromQL expression (`switchyard_…` and `process_…`),
/// with a histogram's `_bucket`, `_sum` and `_count` series folded into
/// its name.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (expr[i..].starts_with("switchyard_") || expr[i..].starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || b"_:".contains(&bytes[i - 1])));
        if !starts {
            i += 1;
            continue;
        }
        let end = expr[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| i + n);
        out.insert(expr[i..end].to_string());
        i = end;
    }
    out
}

/// Recording rules (`switchyard:…`) an expression uses.
fn recorded_in(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("switchyard:"))
        .map(str::to_string)
        .collect()
}

/// The rules file's `expr:` values (plain or `|` blocks) and `record:` names.
fn rules() -> (Vec<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(deploy("prometheus/switchyard-rules.yml")).unwrap();
    let (mut exprs, mut records) = (Vec::new(), BTreeSet::new());
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- record: ") {
            records.insert(name.trim().to_string());
        }
        let Some(expr) = t.strip_prefix("expr: ") else {
            continue;
        };
        if expr.trim() != "|" {
            exprs.push(expr.to_string());
            continue;
        }
        let indent = line.len() - t.len();
        let block: Vec<&str> = lines[n + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .copied()
            .collect();
        exprs.push(block.join("\n"));
    }
    (exprs, records)
}

fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/switchyard-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(d["uid"], "switchyard");
    let mut exprs = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        exprs.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_string()),
        );
    }
    for var in d["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    exprs
}

/// The names a proxy exports, each with its type, from `/admin/metrics`,
/// after traffic through every feature the assets watch: cached and
/// uncached routes, a failing backend behind retries and health checks, an
/// admission limit, a rate limit, a firing alert rule and a config reload.
async fn exported() -> BTreeSet<String> {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let origin = Origin::start().await;
    origin.script("/static/logo", Script::ok("max-age=60", "logo"));
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\npath_prefix = \"/static/\"\nupstream = \"assets\"\ncache = true\n\
         [[routes]]\nupstream = \"app\"\ncache = false\n\
         [upstreams.assets]\nbackends = [{{ address = \"{}\" }}]\n\
         [upstreams.app]\n{}\n[upstreams.app.health]\npath = \"/healthz\"\n\
         interval = \"100ms\"\ntimeout = \"100ms\"\n\
         [upstreams.app.retry]\nattempts = 2\n\
         [cache]\nenabled = false\n[admission]\nmax_concurrency = 100\n\
         [[rate_limits]]\nname = \"generous\"\nrate = 100000\n\
         [alerts]\ninterval = \"100ms\"\n{}",
        origin.addr,
        backends_toml(&[&a, &b], &[]),
        plugin(
            "thresholds",
            "alert-rule",
            "thresholds",
            "{ throughput_medium_rps = 1e9, for_ms = 0 }"
        ),
    ));
    b.set_status(500);
    for i in 0..40 {
        get(&proxy.url(&format!("/x{}", i % 4))).await.unwrap();
        get(&proxy.url("/static/logo")).await.unwrap();
    }
    let (status, body) = proxy.reload().await;
    assert_eq!(status, 200, "{body}");
    let names = || async {
        let v = proxy.admin_json("/admin/metrics?format=json").await;
        v["metrics"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect::<BTreeSet<String>>()
    };
    eventually(Duration::from_secs(30), "an alert firing", || async {
        let n = names().await;
        n.contains("switchyard_alerts_firing").then_some(n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_dashboard_and_rules_use_only_exported_metrics() {
    let exported = exported().await;
    let (rule_exprs, records) = rules();
    assert!(records.len() >= 5, "{records:?}");
    let dashboard = dashboard_exprs();
    assert!(dashboard.len() >= 20, "{dashboard:?}");
    let mut used = BTreeSet::new();
    for expr in rule_exprs.iter().chain(&dashboard) {
        used.extend(metrics_in(expr));
        for r in recorded_in(expr) {
            assert!(records.contains(&r), "{r} is used but not recorded");
        }
    }
    let base = |name: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| exported.contains(*b))
            .unwrap_or(name)
            .to_string()
    };
    let missing: Vec<String> = used
        .iter()
        .map(|n| base(n))
        .filter(|n| !exported.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\nexported: {exported:?}"
    );
    assert!(used.len() >= 20, "{used:?}");
}

#[test]
fn promtool_accepts_the_rules() {
    let file = deploy("prometheus/switchyard-rules.yml");
    let out = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is missing ({e}): run `bash tests/install-deps.sh` \
                 (the README's test command does)"
            )
        });
    let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}
