//! Alert rules and optimizers watching and steering a running proxy.

use std::time::{Duration, Instant};

use crate::support::receiver::Receiver;
use crate::support::{Load, Proxy, TestBackend, backends_toml, config, eventually, get, plugin};

fn upstream(backends: &[&TestBackend], strategy: &str, weights: &[u32]) -> String {
    config(&format!(
        "[upstreams.app]\nstrategy = \"{strategy}\"\n{}\n[upstreams.app.retry]\nattempts = 1\n\
         [upstreams.app.outlier]\nconsecutive_failures = 0\n",
        backends_toml(backends, weights)
    ))
}

async fn alert_state(proxy: &Proxy, rule: &str, key: &str) -> Option<String> {
    let v = proxy.admin_json("/admin/alerts").await;
    v["active"]
        .as_array()?
        .iter()
        .find(|a| a["rule"] == rule && a["key"] == key)
        .and_then(|a| a["state"].as_str().map(str::to_string))
}

fn webhook_count(recv: &Receiver, key: &str, resolved: bool) -> usize {
    recv.alerts()
        .iter()
        .filter(|a| a["labels"]["alertname"] == key && a.get("endsAt").is_some() == resolved)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_fires_after_for_notifies_resolves_and_does_not_flap() {
    let b = TestBackend::start("b").await;
    let recv = Receiver::start().await;
    let cfg = upstream(&[&b], "round_robin", &[])
        + &format!(
            "[telemetry]\ncurrent_window = \"2s\"\n\
             [alerts]\ninterval = \"200ms\"\nwebhook_url = \"http://{}/api/v2/alerts\"\nwebhook_repeat = \"1h\"\n",
            recv.addr
        )
        + &plugin(
            "thresholds",
            "alert-rule",
            "thresholds",
            "{ min_requests = 5, for_ms = 1000, keep_firing_for_ms = 3000 }",
        );
    let proxy = Proxy::start(&cfg);
    let load = Load::start(proxy.url("/work"), 4);

    b.fail_every(3); // a third fail: success rate 67% < 80%
    let pending_at = eventually(
        Duration::from_secs(10),
        "the alert goes pending",
        || async {
            (alert_state(&proxy, "thresholds", "high-error-rate")
                .await
                .as_deref()
                == Some("pending"))
            .then(Instant::now)
        },
    )
    .await;
    let firing_at = eventually(Duration::from_secs(10), "the alert fires", || async {
        (alert_state(&proxy, "thresholds", "high-error-rate")
            .await
            .as_deref()
            == Some("firing"))
        .then(Instant::now)
    })
    .await;
    assert!(
        firing_at - pending_at >= Duration::from_millis(700),
        "fired only after `for` (1 s) of pending"
    );
    eventually(
        Duration::from_secs(5),
        "the webhook gets the firing alert",
        || async { (webhook_count(&recv, "high-error-rate", false) >= 1).then_some(()) },
    )
    .await;
    let fired = recv
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "high-error-rate")
        .unwrap();
    assert_eq!(fired["labels"]["rule"], "thresholds");
    assert_eq!(fired["labels"]["severity"], "high");
    assert!(
        fired["startsAt"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{fired}"
    );
    assert!(
        fired["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("success rate"),
        "{fired}"
    );
    let gauge = proxy
        .metric(
            "switchyard_alerts_firing",
            &[("rule", "thresholds"), ("severity", "high")],
        )
        .await;
    assert_eq!(gauge, 1.0);
    let snapshot = proxy.admin_json("/admin/snapshot").await;
    assert!(
        snapshot["firing_alerts"]
            .to_string()
            .contains("thresholds/high-error-rate"),
        "{snapshot}"
    );

    // Hovering around the threshold: errors on for 1.2 s, off for 1.2 s.
    // keep_firing_for (3 s) outlasts each quiet spell: no resolve, no flap.
    // While on, every second request fails: over the 2 s window the success
    // rate then drops below 80% well before each "on" spell ends (with a
    // third failing it would only reach 80% at the very end, and whether
    // the condition came back at all would be left to chance).
    let hover_end = Instant::now() + Duration::from_secs(6);
    let mut on = true;
    while Instant::now() < hover_end {
        on = !on;
        b.fail_every(if on { 2 } else { 0 });
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                alert_state(&proxy, "thresholds", "high-error-rate")
                    .await
                    .as_deref(),
                Some("firing"),
                "no flapping while hovering"
            );
        }
    }
    assert_eq!(
        webhook_count(&recv, "high-error-rate", true),
        0,
        "no resolve sent while hovering"
    );

    b.fail_every(0);
    eventually(
        Duration::from_secs(15),
        "the alert resolves after recovery",
        || async { (webhook_count(&recv, "high-error-rate", true) == 1).then_some(()) },
    )
    .await;
    let resolved = recv
        .alerts()
        .into_iter()
        .find(|a| a.get("endsAt").is_some())
        .unwrap();
    assert!(resolved["endsAt"].as_str().unwrap() > resolved["startsAt"].as_str().unwrap());
    let view = proxy.admin_json("/admin/alerts").await;
    assert!(
        view["resolved"].to_string().contains("high-error-rate"),
        "{view}"
    );
    assert_eq!(
        proxy
            .metric(
                "switchyard_alerts_firing",
                &[("rule", "thresholds"), ("severity", "high")]
            )
            .await,
        0.0
    );
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_burn_rate_fires_on_a_fast_burn_and_not_on_a_slow_one() {
    let (fast_b, slow_b) = (
        TestBackend::start("fast").await,
        TestBackend::start("slow").await,
    );
    let rules = "[alerts]\ninterval = \"200ms\"\n[telemetry]\ncurrent_window = \"2s\"\n"
        .to_string()
        + &plugin(
            "slo",
            "alert-rule",
            "slo_burn_rate",
            "{ objective = 0.99, min_requests = 10 }",
        );
    let fast = Proxy::start(&(upstream(&[&fast_b], "round_robin", &[]) + &rules));
    let slow = Proxy::start(&(upstream(&[&slow_b], "round_robin", &[]) + &rules));
    fast_b.fail_every(2); // 50% errors: 50x the 1% budget
    slow_b.fail_every(40); // 2.5% errors: 2.5x the budget
    let (lf, ls) = (
        Load::start(fast.url("/x"), 2),
        Load::start(slow.url("/x"), 2),
    );
    eventually(Duration::from_secs(10), "a fast burn pages", || async {
        (alert_state(&fast, "slo", "fast-burn").await.as_deref() == Some("firing")).then_some(())
    })
    .await;
    let v = fast.admin_json("/admin/alerts").await;
    assert!(v["active"].to_string().contains("\"critical\""), "{v}");
    // The slow burn gets as long, and more: nothing fires.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let active = slow.admin_json("/admin/alerts").await["active"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(active, 0, "a 2.5x burn stays under both thresholds");
    }
    lf.stop().await;
    ls.stop().await;
}

async fn limit_of(proxy: &Proxy) -> u64 {
    proxy.admin_json("/admin/optimizer").await["knobs"]["concurrency_limit"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradient_limit_sheds_load_when_latency_rises_and_recovers() {
    let b = TestBackend::start("b").await;
    b.set_latency(2);
    let cfg = upstream(&[&b], "round_robin", &[])
        // Shedding, not queueing: over the limit is an immediate 503.
        + "[admission]\nqueue_size = 0\n"
        + "[telemetry]\ncurrent_window = \"1s\"\n[optimizer]\ninterval = \"250ms\"\n\
           [optimizer.bounds.concurrency_limit]\nmin = 4\nmax = 200\nmax_step = 25\n"
        + &plugin(
            "limit",
            "optimizer",
            "gradient_limit",
            "{ initial_limit = 100, min_limit = 4, max_limit = 200, smoothing = 0.5, tolerance = 1.5, long_window = 60, min_requests = 10 }",
        );
    let proxy = Proxy::start(&cfg);
    let load = Load::start(proxy.url("/work"), 40);
    eventually(
        Duration::from_secs(5),
        "the optimizer sets its initial limit",
        || async { (limit_of(&proxy).await == 100).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The backend saturates: 4 requests at a time, 5 ms each; the rest queue.
    b.set_concurrency(4);
    b.set_latency(5);
    let rise = Instant::now();
    let mut lowest = u64::MAX;
    while rise.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lowest = lowest.min(limit_of(&proxy).await);
    }
    assert!(lowest <= 40, "the limit fell from 100 to {lowest}");
    let early = load.p99_between(rise, rise + Duration::from_millis(700));
    let late = load.p99_between(
        rise + Duration::from_millis(2500),
        rise + Duration::from_millis(4000),
    );
    assert!(
        late * 4 < early * 3,
        "p99 of admitted requests recovered: {early:?} right after the rise, {late:?} later"
    );

    // Latency back to normal: the limit climbs again.
    b.set_concurrency(0);
    b.set_latency(2);
    let before = limit_of(&proxy).await;
    eventually(Duration::from_secs(15), "the limit rises again", || async {
        (limit_of(&proxy).await >= (before * 2).max(before + 10)).then_some(())
    })
    .await;
    load.stop().await;

    let decisions = proxy.admin_json("/admin/optimizer").await["decisions"]
        .as_array()
        .cloned()
        .unwrap();
    assert!(!decisions.is_empty());
    for d in &decisions {
        for c in d["changes"].as_array().unwrap() {
            let (from, to) = (c["from"].as_i64().unwrap(), c["to"].as_i64().unwrap());
            assert!((4..=200).contains(&to), "bounds held: {c}");
            assert!(from == 0 || (to - from).abs() <= 25, "step held: {c}");
        }
    }
}

async fn weights(proxy: &Proxy) -> serde_json::Value {
    proxy.admin_json("/admin/optimizer").await["knobs"]["weights"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_weights_shifts_traffic_off_a_slow_backend_and_back() {
    let (a, b, slow) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("slow").await,
    );
    slow.set_latency(30);
    let cfg = upstream(&[&a, &b, &slow], "weighted", &[100, 100, 100])
        + "[telemetry]\ncurrent_window = \"2s\"\n[optimizer]\ninterval = \"250ms\"\n\
           [optimizer.bounds.backend_weight]\nmin = 1\nmax = 100\nmax_step = 50\n"
        + &plugin(
            "weights",
            "optimizer",
            "latency_weights",
            "{ max_weight = 100, min_weight = 5, smoothing = 0.5, min_requests = 3 }",
        );
    let proxy = Proxy::start(&cfg);
    let load = Load::start(proxy.url("/work"), 8);
    let key = format!("app/{}", slow.addr);
    eventually(
        Duration::from_secs(10),
        "the slow backend's weight drops",
        || async { (weights(&proxy).await[&key].as_u64()? <= 30).then_some(()) },
    )
    .await;
    // The fast peers keep more weight than the slow one. (Their own weights
    // move with the latency noise of a loaded machine, so no ratio here: the
    // traffic share below is what the operator sees.)
    let w = weights(&proxy).await;
    let weight = |addr: std::net::SocketAddr| w[&format!("app/{addr}")].as_u64().unwrap();
    for fast in [a.addr, b.addr] {
        assert!(weight(fast) > weight(slow.addr), "{w}");
    }
    let (a0, b0, s0) = (a.requests(), b.requests(), slow.requests());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (da, db, ds) = (a.requests() - a0, b.requests() - b0, slow.requests() - s0);
    let share = ds as f64 / (da + db + ds) as f64;
    assert!(
        share < 0.15,
        "the slow backend's share fell to {share:.2} ({da}/{db}/{ds})"
    );

    slow.set_latency(0);
    eventually(
        Duration::from_secs(15),
        "its weight recovers once it is fast again",
        || async { (weights(&proxy).await[&key].as_u64()? >= 80).then_some(()) },
    )
    .await;
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_plugins_raise_plugin_failed_and_leave_knobs_alone() {
    let b = TestBackend::start("b").await;
    let cfg = upstream(&[&b], "round_robin", &[])
        + "[alerts]\ninterval = \"100ms\"\n[optimizer]\ninterval = \"100ms\"\n"
        + &plugin("trap", "alert-rule", "test_trap", "\"\"")
        + &plugin("trap-opt", "optimizer", "test_trap_optimizer", "\"\"");
    let proxy = Proxy::start(&cfg);
    eventually(
        Duration::from_secs(5),
        "a plugin-failed alert fires",
        || async {
            (alert_state(&proxy, "trap", "plugin-failed")
                .await
                .as_deref()
                == Some("firing"))
            .then_some(())
        },
    )
    .await;
    let v = proxy.admin_json("/admin/alerts").await;
    assert!(
        v["active"].to_string().contains("could not be evaluated"),
        "{v}"
    );
    eventually(
        Duration::from_secs(5),
        "the optimizer's failures are recorded",
        || async {
            let d = proxy.admin_json("/admin/optimizer").await["decisions"].clone();
            (d.as_array()?
                .iter()
                .filter(|x| x["error"].is_string())
                .count()
                >= 2)
                .then_some(())
        },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(limit_of(&proxy).await, 77, "the last good setting stays");
        assert_eq!(
            get(&proxy.url("/ok")).await.unwrap().status,
            200,
            "the proxy keeps serving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.wait_log("optimizer failed, knobs unchanged").await;
}
