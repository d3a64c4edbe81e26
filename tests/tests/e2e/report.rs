//! `switchyard bench` reports and baselines: the HTML page holds the run's
//! figures (plots and tables read back against the JSON report) and renders
//! offline in a real headless Chromium; a saved baseline turns a 2× slower
//! backend into "regressed" verdicts and a non-zero exit.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::backend::TestBackend;
use crate::support::bench;
use crate::support::browser::{Browser, screenshot_path};
use crate::support::wasm;

fn fixed() -> String {
    wasm("fixed_request").display().to_string()
}

/// The value of attribute `name` in the tag that carries `marker`.
fn attr<'a>(html: &'a str, marker: &str, name: &str) -> &'a str {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} is on the page"));
    let tag_start = html[..at].rfind('<').expect("inside a tag");
    let tag_end = at + html[at..].find('>').expect("the tag ends");
    let tag = &html[tag_start..tag_end];
    let key = format!(" {name}=\"");
    let from = tag.find(&key).unwrap_or_else(|| panic!("{name} in {tag}")) + key.len();
    let len = tag[from..].find('"').expect("the value ends");
    &tag[from..from + len]
}

/// A plotted series' `x:y` pairs.
fn series(html: &str, name: &str) -> Vec<(f64, f64)> {
    attr(html, &format!("data-series=\"{name}\""), "data-values")
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(':').expect("x:y");
            (x.parse().expect("x"), y.parse().expect("y"))
        })
        .collect()
}

/// Whether two plotted series are the same figures (the JSON reader may be
/// off in the last bit).
fn same(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0);
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(p, q)| close(p.0, q.0) && close(p.1, q.1))
}

/// The text of a table cell: row `data-kind`, cell `data-k`.
fn cell(html: &str, kind: &str, key: &str) -> String {
    let row = html
        .find(&format!("<tr data-kind=\"{kind}\">"))
        .unwrap_or_else(|| panic!("a row for {kind}"));
    let row = &html[row..row + html[row..].find("</tr>").expect("row ends")];
    let at = row
        .find(&format!("data-k=\"{key}\">"))
        .unwrap_or_else(|| panic!("{key} in {row}"));
    let text = &row[at + key.len() + 10..];
    text[..text.find('<').expect("cell ends")].to_string()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_holds_the_runs_figures_and_renders_offline() {
    let backend = TestBackend::start("b").await;
    backend.set_latency(2);
    backend.fail_every(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    let (code, report, err) = bench(
        &format!("http://{}", backend.addr),
        &[
            "--plugin",
            &fixed(),
            "--phase",
            "ramp:2s:4",
            "--phase",
            "steady:2s:4",
            "--html",
            page.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(&page).expect("the report was written");

    // Self-contained: nothing to fetch, no script.
    for banned in ["<script", " src=", " href=", "url(", "@import"] {
        assert!(!html.contains(banned), "{banned} on a self-contained page");
    }

    // The phases are marked where the schedule put them.
    let phases = report["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2);
    for p in phases {
        let kind = p["kind"].as_str().expect("kind");
        let marker = format!("data-phase=\"{kind}\"");
        assert_eq!(
            attr(&html, &marker, "data-start").parse::<f64>().ok(),
            p["start_s"].as_f64()
        );
        assert_eq!(
            attr(&html, &marker, "data-end").parse::<f64>().ok(),
            p["end_s"].as_f64()
        );
    }
    assert_eq!(f(&phases[1]["end_s"]), 4.0);

    // Throughput and latency over time are the report's timeline.
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(timeline.len() >= 4, "{timeline:?}");
    let rps: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (f(&s["t_s"]), f(&s["rps"])))
        .collect();
    assert!(same(&series(&html, "ops/s"), &rps), "{rps:?}");
    let p99: Vec<(f64, f64)> = timeline
        .iter()
        .filter(|s| s["ops"].as_u64() > Some(0))
        .map(|s| (f(&s["t_s"]), f(&s["p99_us"]) / 1e3))
        .collect();
    assert!(same(&series(&html, "p99"), &p99), "{p99:?}");
    let ops: u64 = timeline.iter().map(|s| s["ops"].as_u64().unwrap()).sum();
    assert_eq!(ops, report["operations"]["count"].as_u64().unwrap());

    // The percentile plot is the HDR distribution, up to 100%.
    let dist: Vec<(f64, f64)> = report["distribution"]
        .as_array()
        .expect("distribution")
        .iter()
        .map(|p| (f(&p["percentile"]), f(&p["value_us"]) / 1e3))
        .collect();
    assert!(dist.len() > 10, "{dist:?}");
    assert_eq!(dist.last().map(|p| p.0), Some(100.0));
    assert!(same(&series(&html, "all operations"), &dist), "{dist:?}");

    // The tables hold the summary's figures.
    let all = &report["operations"];
    assert_eq!(cell(&html, "all", "count"), all["count"].to_string());
    assert_eq!(cell(&html, "all", "failed"), all["failed"].to_string());
    assert_eq!(
        cell(&html, "all", "p99_ms"),
        format!("{:.3}", f(&all["p99_us"]) / 1e3)
    );
    let errors: BTreeMap<String, Value> =
        serde_json::from_value(report["errors"].clone()).expect("errors");
    assert!(!errors.is_empty(), "every tenth request failed");
    for (cause, e) in &errors {
        let row = format!(
            "<tr data-cause=\"{cause}\"><th>{cause}</th><td>{}</td>",
            e["count"]
        );
        assert!(html.contains(&row), "{row}");
    }

    // A real browser draws it with nothing fetched.
    let mut browser = Browser::launch().await;
    browser
        .navigate(&format!("file://{}", page.display()))
        .await;
    browser
        .wait_for(
            Duration::from_secs(30),
            "the report rendered",
            "document.readyState === 'complete' && document.querySelectorAll('polyline.series').length === 6",
        )
        .await;
    let fetched = browser
        .eval("performance.getEntriesByType('resource').length")
        .await;
    assert_eq!(fetched, 0, "the page fetched something");
    let width = browser
        .eval("document.getElementById('throughput').getBoundingClientRect().width")
        .await;
    assert!(f(&width) > 300.0, "the plot is drawn: {width}");
    let shot = screenshot_path(&dir, "bench-report.png");
    assert!(browser.screenshot(&shot).await > 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2x_slower_backend_regresses_against_the_saved_baseline() {
    let backend = TestBackend::start("b").await;
    backend.set_latency(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let baselines = dir.path().join("baselines");
    let baselines = baselines.to_str().expect("utf-8 path");
    let target = format!("http://{}", backend.addr);
    let run = |extra: &[&str]| {
        let target = target.clone();
        let mut args: Vec<String> = [
            "--plugin",
            &fixed(),
            "-c",
            "4",
            "-d",
            "3s",
            "--baseline-dir",
            baselines,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        async move {
            let refs: Vec<&str> = args.iter_mut().map(|s| s.as_str()).collect();
            bench(&target, &refs).await
        }
    };

    // Flags that cannot work are refused before any load.
    let (code, _, err) = run(&["--fail-on-regression", "10"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--fail-on-regression needs --baseline NAME"),
        "{err}"
    );
    let (code, _, err) = run(&["--baseline", "fast"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no baseline \"fast\" in"), "{err}");
    assert!(err.contains("save one with --save-baseline fast"), "{err}");
    let (code, _, err) = run(&["--save-baseline", "../up"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid baseline name \"../up\""), "{err}");
    let served = backend.requests();
    assert_eq!(served, 0, "no load for bad flags");

    let (code, _, err) = run(&["--save-baseline", "fast"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("saved baseline \"fast\" (1 run(s))"), "{err}");
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("baselines/fast.json")).expect("saved"),
    )
    .expect("JSON");
    assert_eq!(saved["runs"], 1);
    let p50 = &saved["kinds"]["all"]["p50_us"];
    assert!(f(&p50["lo"]) <= f(&p50["value"]) && f(&p50["value"]) <= f(&p50["hi"]));

    backend.set_latency(40);
    let page = dir.path().join("slow.html");
    let page_arg = page.display().to_string();
    let (code, report, err) = run(&[
        "--baseline",
        "fast",
        "--fail-on-regression",
        "25",
        "--save-baseline",
        "fast",
        "--html",
        &page_arg,
    ])
    .await;
    assert_eq!(code, 98, "a regression past 25% exits 98: {err}");
    let changes = report["comparison"]["changes"].as_array().expect("changes");
    let verdict = |kind: &str, figure: &str| {
        changes
            .iter()
            .find(|c| c["kind"] == kind && c["figure"] == figure)
            .unwrap_or_else(|| panic!("{kind} {figure} in {changes:?}"))
            .clone()
    };
    for kind in ["all", "read"] {
        let p50 = verdict(kind, "p50");
        assert_eq!(p50["verdict"], "regressed", "{p50}");
        assert!(f(&p50["change_pct"]) > 60.0, "{p50}");
        let rps = verdict(kind, "throughput");
        assert_eq!(rps["verdict"], "regressed", "{rps}");
        assert!(f(&rps["change_pct"]) < -30.0, "{rps}");
    }
    assert!(
        err.contains("against baseline \"fast\" (1 run(s))"),
        "{err}"
    );
    assert!(err.contains("regressed"), "{err}");
    let html = std::fs::read_to_string(&page).expect("report");
    assert!(
        html.contains("data-kind=\"all\" data-figure=\"p50\" data-verdict=\"regressed\""),
        "the page shows the verdicts"
    );
    assert!(
        html.contains("id=\"verdict\">failed<"),
        "the page's headline"
    );

    // The slow run was folded into the baseline's moving averages.
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("baselines/fast.json")).expect("saved"),
    )
    .expect("JSON");
    assert_eq!(saved["runs"], 2);
    let (before, after) = (
        f(&p50["value"]),
        f(&saved["kinds"]["all"]["p50_us"]["value"]),
    );
    assert!(
        after > before * 1.2 && after < before * 1.5,
        "EMA: {before} -> {after}"
    );
}
