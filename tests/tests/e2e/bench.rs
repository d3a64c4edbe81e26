//! `switchyard bench`: the crud-mix generator's mix and entity tracking, the
//! open model's rate and coordinated-omission handling, retries, the
//! circuit breaker, thresholds and bad input.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::support::backend::TestBackend;
use crate::support::bench;
use crate::support::rest::RestBackend;
use crate::support::wasm;

fn fixed() -> String {
    wasm("fixed_request").display().to_string()
}

fn kind_count(report: &Value, kind: &str) -> u64 {
    report["kinds"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["name"] == kind))
        .map_or(0, |k| k["count"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_mix_honours_its_mix_and_aims_at_entities_it_created() {
    let rest = RestBackend::start().await;
    let mix = r#"{"mix":{"create":30,"read":40,"update":25,"delete":5}}"#;
    let plugin = wasm("crud_mix").display().to_string();
    let (code, report, err) = bench(
        &rest.url(),
        &[
            "--plugin",
            &plugin,
            "--generator-config",
            mix,
            "-n",
            "10000",
            "-c",
            "16",
            "--seed",
            "7",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["operations"]["count"], 10_000, "{report}");
    for (kind, pct) in [
        ("create", 30.0),
        ("read", 40.0),
        ("update", 25.0),
        ("delete", 5.0),
    ] {
        let share = kind_count(&report, kind) as f64 / 100.0;
        assert!(
            (share - pct).abs() <= 2.0,
            "{kind}: {share}% (want {pct}% ± 2)"
        );
    }

    // Every read, update and delete names an entity a create made before it,
    // and nothing is deleted twice.
    let seen = rest.seen();
    assert_eq!(seen.len(), 10_000);
    let mut created = HashSet::new();
    let mut deleted = HashSet::new();
    let mut not_found = 0;
    for s in &seen {
        let id = s.id.clone().expect("every request names an item");
        match s.method.as_str() {
            "POST" => {
                assert_eq!(s.status, 201);
                created.insert(id);
            }
            m => {
                assert!(created.contains(&id), "{m} of {id}, never created");
                if m == "DELETE" {
                    assert!(deleted.insert(id.clone()), "{id} deleted twice");
                }
                not_found += u32::from(s.status == 404);
            }
        }
    }
    // Only a read racing the delete of the same entity can miss.
    assert!(not_found <= 50, "{not_found} requests got 404");
    assert!(report["operations"]["ok"].as_u64().unwrap() >= 9_950);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_holds_the_requested_rate() {
    let backend = TestBackend::start("fast").await;
    let target = format!("http://{}", backend.addr);
    let plugin = fixed();
    let (code, report, err) = bench(
        &target,
        &[
            "--plugin", &plugin, "--model", "open", "--rate", "400", "-d", "5s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let ops = report["operations"]["count"].as_f64().unwrap();
    assert!(
        (ops - 2000.0).abs() <= 100.0,
        "{ops} operations, want 2000 ± 5%"
    );
    let rate = ops / report["duration_s"].as_f64().unwrap();
    assert!((rate - 400.0).abs() <= 20.0, "{rate}/s, want 400 ± 5%");
    assert_eq!(report["schedule"]["intended"], 2000);
    assert_eq!(report["schedule"]["missed"], 0);
    assert_eq!(backend.requests(), ops as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_p99_includes_a_backend_stall() {
    let backend = TestBackend::start("stalls").await;
    let target = format!("http://{}", backend.addr);
    let ctl = backend.ctl.clone();
    // After a second of traffic the backend stops answering for one second.
    let stall = tokio::spawn(async move {
        while ctl.requests.load(std::sync::atomic::Ordering::SeqCst) < 200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ctl.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        ctl.hold.store(false, std::sync::atomic::Ordering::SeqCst);
        ctl.release.notify_waiters();
    });
    let plugin = fixed();
    let (code, report, err) = bench(
        &target,
        &[
            "--plugin", &plugin, "--model", "open", "--rate", "200", "-d", "4s", "-c", "50",
        ],
    )
    .await;
    stall.await.unwrap();
    assert_eq!(code, 0, "{err}");
    // With at most 50 in flight the schedule falls behind during the stall;
    // latency still counts from each operation's intended start.
    let p99_ms = report["operations"]["p99_us"].as_f64().unwrap() / 1e3;
    assert!(
        p99_ms >= 800.0,
        "p99 {p99_ms} ms hides the 1 s stall: {report}"
    );
    let late = report["schedule"]["late"].as_u64().unwrap();
    assert!(
        late > 0,
        "starts delayed by the stall must be counted: {report}"
    );
    let p50_ms = report["operations"]["p50_us"].as_f64().unwrap() / 1e3;
    assert!(p50_ms < 100.0, "p50 {p50_ms} ms: most operations were fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_attempts_not_operations_and_only_for_idempotent_ones() {
    let backend = TestBackend::start("unavailable").await;
    backend.set_status(503);
    let target = format!("http://{}", backend.addr);
    let plugin = fixed();
    let args = [
        "--plugin",
        &plugin,
        "-n",
        "50",
        "-c",
        "1",
        "--retries",
        "2",
        "--retry-backoff",
        "1ms",
    ];
    let (code, report, err) = bench(&target, &args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["operations"]["count"], 50);
    assert_eq!(report["operations"]["failed"], 50);
    assert_eq!(report["attempts"]["count"], 150);
    assert_eq!(report["retries"], 100);
    assert_eq!(report["errors"]["http-503"]["count"], 50);
    assert_eq!(backend.requests(), 150);

    // A POST is not idempotent: one attempt each.
    let post = r#"{"method":"POST","path":"/orders","body":"{}"}"#;
    let mut args = args.to_vec();
    args.extend(["--generator-config", post]);
    let (_, report, err) = bench(&target, &args).await;
    assert_eq!(report["attempts"]["count"], 50, "{err}");
    assert_eq!(report["retries"], 0);
    assert_eq!(backend.requests(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_half_opens_and_spares_a_failing_target() {
    let backend = TestBackend::start("down").await;
    backend.set_status(503);
    let target = format!("http://{}", backend.addr);
    let plugin = fixed();
    let (code, report, err) = bench(
        &target,
        &[
            "--plugin",
            &plugin,
            "-d",
            "2s",
            "-c",
            "1",
            "--breaker-failures",
            "5",
            "--breaker-open-for",
            "300ms",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    // 5 failures open it; every 300 ms one probe fails and reopens it.
    let opened = report["breaker"]["opened"].as_u64().unwrap();
    assert!((3..=8).contains(&opened), "opened {opened} times: {report}");
    let sent = backend.requests();
    assert!(
        (5 + 3..=5 + 8).contains(&sent),
        "{sent} requests reached the target"
    );
    assert_eq!(report["attempts"]["count"], sent);
    let refused = report["errors"]["circuit-open"]["count"].as_u64().unwrap();
    assert!(refused > 100, "only {refused} operations failed fast");
    assert_eq!(report["breaker"]["rejected"], refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_set_the_exit_code() {
    let backend = TestBackend::start("ok").await;
    let target = format!("http://{}", backend.addr);
    let plugin = fixed();
    let pass = [
        "--threshold",
        "p99<10s",
        "--threshold",
        "success>99%",
        "--threshold",
        "read.errors<1",
    ];
    let mut args = vec!["--plugin", &plugin, "-n", "300"];
    args.extend(pass);
    let (code, report, err) = bench(&target, &args).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        report["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["passed"] == true)
    );

    backend.set_status(500);
    let (code, report, err) = bench(&target, &args).await;
    assert_eq!(code, 99, "{err}");
    let verdicts: HashMap<String, bool> = report["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["threshold"].as_str().unwrap().to_string(),
                v["passed"] == true,
            )
        })
        .collect();
    assert!(verdicts["p99<10s"]);
    assert!(!verdicts["success>99%"]);
    assert!(!verdicts["read.errors<1"]);
    assert!(
        err.contains("threshold FAIL success>99% (measured 0.000)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_exit_2_and_no_load() {
    let backend = TestBackend::start("untouched").await;
    let target = format!("http://{}", backend.addr);
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/profiles");
    let unreachable = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let rule = wasm("thresholds").display().to_string();
    let plugin = fixed();
    let cases: Vec<(String, Vec<&str>, String)> = vec![
        (
            target.clone(),
            vec!["--profile", "nope", "--profiles-dir", profiles],
            "unknown profile \"nope\" (available: development, load-testing, production, read-heavy, write-heavy)".into(),
        ),
        (
            target.clone(),
            vec!["--plugin", &plugin, "--threshold", "p99<<250ms"],
            "error: invalid threshold \"p99<<250ms\": expected one operator and a value after it".into(),
        ),
        (
            unreachable.clone(),
            vec!["--plugin", &plugin],
            format!("error: target {unreachable} is unreachable: Connection refused"),
        ),
        (
            target.clone(),
            vec!["--plugin", &rule],
            "wrong kind: configured as kind = \"operation-generator\" (expects export switchyard:plugins/generate@0.2.0), but this is an alert-rule plugin".into(),
        ),
        (
            target.clone(),
            vec!["--plugin", &plugin, "--model", "open"],
            "error: the open model needs --rate (or phases with a rate)".into(),
        ),
        (
            target.clone(),
            vec!["--plugin", &plugin, "-c", "20000"],
            "error: --concurrency: must be between 1 and 10000".into(),
        ),
    ];
    for (url, args, want) in cases {
        let (code, report, err) = bench(&url, &args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(report, Value::Null, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err}");
        assert!(
            err.starts_with("error: ") && err.contains(&want),
            "{args:?}: {err}"
        );
    }
    assert_eq!(backend.requests(), 0, "no load was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_supplies_model_workers_and_the_generator_mix() {
    let rest = RestBackend::start().await;
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/profiles");
    let plugin = wasm("crud_mix").display().to_string();
    let args = [
        "--plugin",
        &plugin,
        "--profile",
        "development",
        "--profiles-dir",
        profiles,
        "-n",
        "4000",
    ];
    let (code, report, err) = bench(&rest.url(), &args).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["model"], "closed");
    assert_eq!(report["operations"]["count"], 4000);
    // The development profile's crud-mix: 25/50/20/5.
    for (kind, pct) in [
        ("create", 25.0),
        ("read", 50.0),
        ("update", 20.0),
        ("delete", 5.0),
    ] {
        let share = kind_count(&report, kind) as f64 / 40.0;
        assert!(
            (share - pct).abs() <= 3.0,
            "{kind}: {share}% (want {pct}% ± 3)"
        );
    }
}
