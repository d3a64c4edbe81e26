//! Plugins in a running proxy: listed in the admin API, hot-swapped when
//! their file changes, a bad new version refused while the old one keeps
//! serving, and `switchyard plugin test` / `switchyard run` on plugins.

use std::time::Duration;

use http::Method;

use crate::support::proxy::run_cli;
use crate::support::{
    Load, Proxy, TestBackend, backends_toml, config, eventually, get, plugin, replace_file,
    request, wasm,
};

fn with_plugin(b: &TestBackend, plugin: &std::path::Path, kind: &str) -> String {
    config(&format!("[upstreams.app]\n{}\n", backends_toml(&[b], &[])))
        + &format!(
            "[plugin_runtime]\ndebounce = \"50ms\"\n\
             [[plugins]]\nname = \"rule\"\nkind = \"{kind}\"\npath = \"{}\"\nconfig = {{ min_requests = 5 }}\n",
            plugin.display()
        )
}

/// `POST /admin/plugins/NAME/reload`: status and JSON body.
async fn reload(proxy: &Proxy, name: &str) -> (u16, serde_json::Value) {
    let url = proxy.admin_url(&format!("/admin/plugins/{name}/reload"));
    let r = request(Method::POST, &url, &[], "").await.unwrap();
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body)),
    )
}

async fn plugin_view(proxy: &Proxy) -> serde_json::Value {
    let v = proxy.admin_json("/admin/plugins").await;
    v.as_array()
        .and_then(|a| a.first().cloned())
        .unwrap_or_else(|| panic!("no plugin in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_proxy_swaps_a_plugin_when_its_file_changes() {
    let b = TestBackend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rule.wasm");
    std::fs::copy(wasm("thresholds"), &file).unwrap();
    let proxy = Proxy::start(&with_plugin(&b, &file, "alert-rule"));

    let first = plugin_view(&proxy).await;
    assert_eq!(first["name"], "rule");
    assert_eq!(first["kind"], "alert-rule");
    assert_eq!(first["swaps"], 0);
    let original_hash = first["content_hash"].as_str().unwrap().to_string();

    replace_file(&wasm("slo_burn_rate"), &file);
    let swapped = eventually(
        Duration::from_secs(10),
        "the watcher swaps the new file in",
        || async {
            let v = plugin_view(&proxy).await;
            (v["swaps"] == 1).then_some(v)
        },
    )
    .await;
    assert_ne!(swapped["content_hash"], original_hash.as_str());
    // The log reaches the test through a pipe, possibly after the admin view.
    eventually(Duration::from_secs(5), "the swap is logged", || async {
        proxy.logs().contains("swapped in version").then_some(())
    })
    .await;

    // A broken file is refused; the running version stays.
    std::fs::write(&file, b"not a component").unwrap();
    let refused = eventually(
        Duration::from_secs(10),
        "the broken file is refused",
        || async {
            let v = plugin_view(&proxy).await;
            (v["swap_failures"] == 1).then_some(v)
        },
    )
    .await;
    assert_eq!(refused["content_hash"], swapped["content_hash"]);
    assert!(
        refused["last_error_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{refused}"
    );
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{refused}"
    );
    assert_eq!(get(&proxy.url("/still-serving")).await.unwrap().status, 200);
    let failures = proxy
        .metric(
            "switchyard_plugin_swap_failures_total",
            &[("plugin", "rule")],
        )
        .await;
    assert_eq!(failures, 1.0);

    // Forced reload through the admin API, of a plugin of the wrong kind.
    std::fs::copy(wasm("gradient_limit"), &file).unwrap();
    let (status, body) = reload(&proxy, "rule").await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("wrong kind: configured as kind = \"alert-rule\""),
        "{body}"
    );
    assert_eq!(body["plugin"]["content_hash"], swapped["content_hash"]);

    std::fs::copy(wasm("thresholds"), &file).unwrap();
    let (status, body) = reload(&proxy, "rule").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "swapped");
    assert_eq!(body["plugin"]["content_hash"], original_hash.as_str());
    // A successful swap clears the old version's error.
    assert!(body["plugin"]["last_error"].is_null(), "{body}");
    assert!(body["plugin"]["last_error_at"].is_null(), "{body}");

    assert_eq!(reload(&proxy, "nope").await.0, 404);
}

#[test]
fn run_and_check_refuse_a_plugin_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let cfg = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n\
         [[plugins]]\nname = \"limits\"\nkind = \"optimizer\"\npath = \"{}\"\n",
        wasm("thresholds").display()
    );
    std::fs::write(&path, cfg).unwrap();
    let p = path.display().to_string();
    for cmd in ["check", "run"] {
        let (code, _, err) = run_cli(&[cmd, "--config", &p]);
        assert_eq!(code, 2, "{cmd}: {err}");
        let want = format!(
            "error: {p}: plugins[0].path: cannot load plugin \"limits\": wrong kind: configured as kind = \"optimizer\""
        );
        assert!(err.contains(&want), "{cmd}:\n{err}");
    }
}

#[test]
fn plugin_test_runs_a_plugin_against_a_recorded_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("snapshot.json");
    std::fs::write(
        &input,
        r#"{"config": {"min_requests": 5},
            "snapshot": {"now_ms": 1, "current": {"window_ms": 10000, "requests": 100, "errors": 40, "rps": 10.0}}}"#,
    )
    .unwrap();
    let i = input.display().to_string();
    let (code, out, err) = run_cli(&[
        "plugin",
        "test",
        &wasm("thresholds").display().to_string(),
        "--input",
        &i,
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["kind"], "alert-rule");
    let findings = report["output"]["findings"].as_array().unwrap();
    let errors = findings
        .iter()
        .find(|f| f["key"] == "high-error-rate")
        .unwrap();
    assert_eq!(errors["active"], true);
    assert!(report["calls"][1]["us"].as_f64().unwrap() > 0.0);
    assert!(report["memory_peak_bytes"].as_u64().unwrap() > 0);

    let gen_input = dir.path().join("gen.json");
    std::fs::write(&gen_input, r#"{"seed": 7, "batches": 3, "batch_size": 5}"#).unwrap();
    let (code, out, err) = run_plugin_test("crud_mix", &gen_input, &[]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["output"]["batches"].as_array().unwrap().len(), 3);
    assert!(
        report["output"]["state"].as_str().unwrap().contains("sim-"),
        "created ids are remembered"
    );

    let (code, out, _) = run_cli(&[
        "plugin",
        "test",
        &wasm("test_trap").display().to_string(),
        "--input",
        &i,
    ]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["error"]["cause"], "trap");

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, "junk").unwrap();
    let (code, _, err) = run_cli(&["plugin", "test", &junk.display().to_string()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_built_for_contract_0_1_0_still_load_and_act() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&format!(
        "{}[alerts]\ninterval = \"100ms\"\n[optimizer]\ninterval = \"100ms\"\n{}{}",
        config(&format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[]))),
        plugin("old-rule", "alert-rule", "test_v0_1_rule", "\"\""),
        plugin(
            "old-optimizer",
            "optimizer",
            "test_v0_1_optimizer",
            "\"77\""
        )
    ));
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/x")).await.unwrap().status, 200);
    }
    eventually(
        Duration::from_secs(20),
        "the 0.1.0 optimizer's limit is applied",
        || async {
            let v = proxy.admin_json("/admin/snapshot").await;
            (v["concurrency_limit"] == 77).then_some(())
        },
    )
    .await;
    let alert = eventually(
        Duration::from_secs(20),
        "the 0.1.0 rule, given the 0.1.0 snapshot, fires",
        || async {
            let v = proxy.admin_json("/admin/alerts").await;
            v["active"]
                .as_array()?
                .iter()
                .find(|a| {
                    a["rule"] == "old-rule" && a["key"] == "requests" && a["state"] == "firing"
                })
                .cloned()
        },
    )
    .await;
    assert_eq!(alert["labels"]["contract"], "0.1.0", "{alert}");
    assert!(alert["value"].as_f64().unwrap() >= 5.0, "{alert}");
    let plugins = proxy.admin_json("/admin/plugins").await;
    for p in plugins.as_array().unwrap() {
        assert_eq!(p["failures"], 0, "{p}");
    }
    // The current contract's snapshot carries what 0.1.0's lacks.
    let snapshot = proxy.admin_json("/admin/snapshot").await;
    assert_eq!(
        snapshot["trends"].as_array().unwrap().len(),
        18,
        "{snapshot}"
    );
    assert_eq!(snapshot["queue"]["capacity"], 1024, "{snapshot}");
}

#[test]
fn plugin_test_runs_a_generator_built_for_contract_0_1_0() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gen.json");
    std::fs::write(&input, r#"{"seed": 1, "batches": 2, "batch_size": 3}"#).unwrap();
    let (code, out, err) = run_cli(&[
        "plugin",
        "test",
        &wasm("test_v0_1_generator").display().to_string(),
        "--input",
        &input.display().to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["kind"], "operation-generator");
    let paths: Vec<&str> = report["output"]["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap())
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/v0-1/0", "/v0-1/1", "/v0-1/2", "/v0-1/3", "/v0-1/4", "/v0-1/5"
        ]
    );
}

/// The `trend` rule fires on a steadily rising p99 while every response is
/// still below the threshold: the line predicts the crossing, as
/// Prometheus's `predict_linear` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trend_rule_fires_before_a_rising_latency_crosses_its_threshold() {
    let b = TestBackend::start("b").await;
    b.set_latency(10);
    let proxy = Proxy::start(&format!(
        "{}[alerts]\ninterval = \"100ms\"\n{}",
        config(&format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[]))),
        plugin(
            "trend",
            "alert-rule",
            "trend",
            r#"'{"predictions": [{"name": "p99-rising", "series": "p99", "window_ms": 60000, "horizon_ms": 60000, "above": 600, "min_points": 8, "severity": "high"}]}'"#
        )
    ));
    let load = Load::start(proxy.url("/slow"), 2);
    // The backend slows by 10 ms each second: 10 ms, 20 ms, … It would
    // reach the 600 ms threshold after about a minute.
    let start = std::time::Instant::now();
    let mut slowest = 10;
    let alert = eventually(
        Duration::from_secs(50),
        "the trend rule predicts the crossing",
        || {
            slowest = (10 + start.elapsed().as_millis() as u64 / 100).min(1000);
            b.set_latency(slowest);
            let proxy = &proxy;
            async move {
                let v = proxy.admin_json("/admin/alerts").await;
                v["active"]
                    .as_array()?
                    .iter()
                    .find(|a| a["rule"] == "trend" && a["state"] == "firing")
                    .cloned()
            }
        },
    )
    .await;
    let log = load.stop().await;
    assert!(
        slowest < 600,
        "the backend was already at {slowest} ms when the alert fired: {alert}"
    );
    assert!(log.iter().all(|(_, _, status)| *status == 200));
    assert_eq!(alert["key"], "p99-rising", "{alert}");
    assert_eq!(alert["severity"], "high", "{alert}");
    assert_eq!(alert["labels"]["series"], "p99", "{alert}");
    assert_eq!(alert["labels"]["window"], "1m", "{alert}");
    assert!(alert["value"].as_f64().unwrap() >= 600.0, "{alert}");
    let current: f64 = alert["labels"]["current"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(current < 600.0, "{alert}");
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .starts_with("p99 heading for"),
        "{alert}"
    );
}

/// `switchyard plugin test` on a built plugin: exit code, stdout, stderr.
fn run_plugin_test(plugin: &str, input: &std::path::Path, flags: &[&str]) -> (i32, String, String) {
    let file = wasm(plugin).display().to_string();
    let input = input.display().to_string();
    let mut args = vec!["plugin", "test", &file, "--input", &input];
    args.extend_from_slice(flags);
    run_cli(&args)
}

/// As [`run_plugin_test`], with the report parsed.
fn plugin_test(
    plugin: &str,
    input: &std::path::Path,
    flags: &[&str],
) -> (i32, serde_json::Value, String) {
    let (code, out, err) = run_plugin_test(plugin, input, flags);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, report, err)
}

/// `plugin test` as a test harness: an `expect` block that passes and one
/// that fails with a diff, `init` and the plugin's log lines in the report,
/// the proxy's limits and the flags that change them, severity written as
/// the admin API writes it, and a generator resumed from saved state.
#[test]
fn plugin_test_holds_expectations_limits_logs_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let snapshot = r#""snapshot": {"current": {"requests": 100, "errors": 40, "rps": 10.0}}"#;
    let passing = write(
        "pass.json",
        &format!(
            r#"{{"config": {{"min_requests": 5}}, {snapshot},
                "expect": {{"findings": [{{"key": "high-error-rate", "active": true, "severity": "high"}}]}}}}"#
        ),
    );
    let (code, report, err) = plugin_test("thresholds", &passing, &[]);
    assert_eq!(code, 0, "{err}\n{report}");
    assert_eq!(report["expect"]["passed"], true, "{report}");
    assert_eq!(report["calls"][0]["call"], "init", "{report}");
    assert_eq!(report["calls"][2]["call"], "evaluate", "{report}");
    assert_eq!(
        report["limits"],
        serde_json::json!({"timeout_ms": 100, "init_timeout_ms": 10_000, "memory_bytes": 64 << 20, "fuel": null}),
        "the proxy's defaults"
    );
    for f in report["output"]["findings"].as_array().unwrap() {
        let severity = f["severity"].as_str().unwrap();
        assert_eq!(severity, severity.to_lowercase(), "{f}");
    }

    // Not met: exit 1, and a diff of what was expected against what came.
    let failing = write(
        "fail.json",
        &format!(
            r#"{{"config": {{"min_requests": 5}}, {snapshot},
                "expect": {{"findings": [{{"key": "high-error-rate", "active": false}}], "quiet": true}}}}"#
        ),
    );
    let (code, report, err) = plugin_test("thresholds", &failing, &["--timeout", "30s"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(report["expect"]["passed"], false);
    assert!(
        err.contains(
            "findings: nothing matches\n- {\"active\":false,\"key\":\"high-error-rate\"}\n+ {"
        ),
        "{err}"
    );
    assert!(err.contains("quiet: nothing matches"), "{err}");
    assert!(
        err.contains("error: the output does not hold what \"expect\" names"),
        "{err}"
    );

    // Winch, the baseline compiler, runs the same plugin to the same output.
    let (code, winch, err) = plugin_test(
        "thresholds",
        &passing,
        &["--compiler", "winch", "--timeout", "30s"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(winch["compiler"], "winch");
    assert_eq!(winch["output"], report["output"]);

    // The plugin's own log lines.
    let quiet = write(
        "quiet.json",
        r#"{"config": {"min_requests": 5}, "snapshot": {"current": {"requests": 2, "rps": 50.0}}, "expect": {"quiet": true}}"#,
    );
    let (code, report, err) = plugin_test("thresholds", &quiet, &["--timeout", "30s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        report["logs"],
        serde_json::json!([{"level": "debug", "message": "not judged: 2 requests in the window, min_requests is 5"}]),
        "{report}"
    );

    // Limits: the default deadline stops a spinning rule; fuel, when given,
    // runs out first; a memory cap below what it grabs stops a hog. Calls
    // that are not about the deadline get a long one: filling 64 MiB on a
    // loaded machine can take longer than the default 100 ms.
    let fails_for = |plugin: &str, flags: &[&str], cause: &str| {
        let (code, report, _) = plugin_test(plugin, &quiet, flags);
        assert_eq!(
            (code, &report["error"]["cause"]),
            (1, &serde_json::json!(cause)),
            "{plugin} {flags:?}: {report}"
        );
        report
    };
    fails_for("test_spin", &[], "timeout");
    let report = fails_for(
        "test_spin",
        &["--fuel", "2000000", "--timeout", "30s"],
        "fuel",
    );
    assert_eq!(report["limits"]["fuel"], 2_000_000);
    let report = fails_for(
        "test_memory_bomb",
        &["--memory", "8MiB", "--timeout", "30s"],
        "memory",
    );
    assert_eq!(report["limits"]["memory_bytes"], 8 << 20);
    let report = fails_for("test_memory_bomb", &["--timeout", "30s"], "memory");
    assert!(
        report["memory_peak_bytes"].as_u64().unwrap() > 8 << 20,
        "{report}"
    );

    // A generator resumed from the state a run saved, as after a hot swap:
    // with no results fed back this time, any id it uses comes from the
    // first run.
    let first = write(
        "gen1.json",
        r#"{"seed": 3, "batches": 4, "batch_size": 10}"#,
    );
    let (code, report, err) = plugin_test("crud_mix", &first, &[]);
    assert_eq!(code, 0, "{err}");
    let state = report["output"]["state"].as_str().unwrap().to_string();
    assert!(state.contains("sim-"), "{state}");
    let resumed = write(
        "gen2.json",
        &serde_json::json!({
            "state": state, "batches": 2, "batch_size": 10, "simulate": false,
            "expect": {"operations": [{"kind": "read"}]},
        })
        .to_string(),
    );
    let (code, report, err) = plugin_test("crud_mix", &resumed, &[]);
    assert_eq!(code, 0, "{err}\n{report}");
    let paths: Vec<&str> = report["output"]["batches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b.as_array().unwrap())
        .filter_map(|op| op["path"].as_str())
        .collect();
    assert!(
        paths.iter().any(|p| p.contains("/sim-")),
        "the resumed generator works on the saved ids: {paths:?}"
    );
    // Bad input is refused before anything runs.
    let bad = write("bad.json", r#"{"expect": {"finding": []}}"#);
    let (code, _, err) = run_plugin_test("thresholds", &bad, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `finding`"), "{err}");
}
