//! Failure semantics as an operator meets them: application errors never
//! take a site down, panic routing keeps serving, a stalled backend is
//! routed around without failing requests, optimizers' knobs go back to the
//! config with their optimizer, failing plugins are quarantined, a weight
//! change resets nothing, a reload is all or nothing, and idle backend
//! connections the backend closed are not left in CLOSE_WAIT.

use std::time::{Duration, Instant};

use http::Method;

use crate::support::origin::{Origin, Script};
use crate::support::{
    Http, Load, Proxy, TestBackend, backends_toml, config, eventually, free_port, get, plugin,
    request,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_backend_answering_500_on_one_url_keeps_the_site_serving() {
    let origin = Origin::start().await;
    origin.script("/ok", Script::ok("no-store", "fine"));
    origin.script(
        "/broken",
        Script {
            status: 500,
            headers: vec![],
            body: "application error".into(),
            delay: Duration::ZERO,
            not_modified: None,
        },
    );
    // The defaults: no outlier section, one backend.
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        origin.addr
    )));
    let http = Http::default();
    for _ in 0..30 {
        let r = http.get(&proxy.url("/broken")).await.expect("request");
        assert_eq!(r.status, 500, "the application's own answer is passed on");
    }
    let r = http.get(&proxy.url("/ok")).await.expect("request");
    assert_eq!((r.status, r.body.as_str()), (200, "fine"));
    let r = http
        .request(Method::POST, &proxy.url("/ok"), &[], "with a body")
        .await
        .expect("request");
    assert_eq!(r.status, 200, "a request with a body is served too");
    let view = proxy.backend_view(origin.addr).await;
    assert_eq!(view["ejected"], false, "{view}");
    assert_eq!(view["ejections"], 0, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_failures_eject_but_never_the_last_backend() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    a.set_status(503);
    b.set_status(503);
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n[upstreams.app.retry]\nattempts = 1\n\
         [upstreams.app.outlier]\nconsecutive_failures = 3\nmax_ejection_percent = 100\n",
        backends_toml(&[&a, &b], &[])
    )));
    let http = Http::default();
    for _ in 0..20 {
        let r = http.get(&proxy.url("/")).await.expect("request");
        assert_eq!(r.status, 503);
    }
    let (va, vb) = (
        proxy.backend_view(a.addr).await,
        proxy.backend_view(b.addr).await,
    );
    let ejected = [&va, &vb].iter().filter(|v| v["ejected"] == true).count();
    assert_eq!(ejected, 1, "one is ejected, the last one is not: {va} {vb}");
    // The survivor gets the traffic, and serves once it recovers.
    a.set_status(200);
    b.set_status(200);
    let r = http.get(&proxy.url("/")).await.expect("request");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_failing_its_checks_panic_routing_still_serves() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    for b in &backends {
        b.set_health(500);
    }
    let refs: Vec<&TestBackend> = backends.iter().collect();
    let upstream = |panic: &str| {
        config(&format!(
            "[upstreams.app]\nstrategy = \"round_robin\"\n{panic}{}\n[upstreams.app.health]\ninterval = \"100ms\"\n\
             timeout = \"100ms\"\nunhealthy_threshold = 1\n",
            backends_toml(&refs, &[])
        ))
    };
    // The default threshold (50%).
    let proxy = Proxy::start(&upstream(""));
    eventually(
        Duration::from_secs(20),
        "every backend unhealthy",
        || async {
            let v = proxy.admin_json("/admin/backends").await;
            let all = v["app"]["backends"]
                .as_array()?
                .iter()
                .all(|b| b["healthy"] == false);
            all.then_some(())
        },
    )
    .await;
    let http = Http::default();
    let mut served = std::collections::HashSet::new();
    for _ in 0..30 {
        let r = http.get(&proxy.url("/")).await.expect("request");
        assert_eq!(r.status, 200, "served through panic routing: {}", r.body);
        served.insert(r.backend().to_string());
    }
    assert_eq!(served.len(), 3, "spread over every backend: {served:?}");
    let panicked = proxy
        .metric(
            "switchyard_panic_mode_requests_total",
            &[("upstream", "app")],
        )
        .await;
    assert!(panicked >= 30.0, "{panicked}");
    drop(proxy);

    // With panic routing off, the operator gets what they asked for.
    let proxy = Proxy::start(&upstream("panic_threshold = 0\n"));
    eventually(Duration::from_secs(20), "no backend available", || async {
        let r = get(&proxy.url("/")).await.ok()?;
        (r.status == 503).then_some(())
    })
    .await;
}

/// The shipped config with its backends, listeners and plugin paths
/// pointed at this test's.
fn shipped_config(backends: &[&TestBackend]) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut text = std::fs::read_to_string(format!("{root}/config/switchyard.toml"))
        .expect("the shipped config");
    for (i, b) in backends.iter().enumerate() {
        text = text.replace(&format!("127.0.0.1:300{}", i + 1), &b.addr.to_string());
    }
    text.replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace("\"../plugins/", &format!("\"{root}/plugins/"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_backend_leaves_rotation_quickly_and_no_request_fails() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("stalls").await,
    ];
    let refs: Vec<&TestBackend> = backends.iter().collect();
    let proxy = Proxy::start(&shipped_config(&refs));
    let stalled = &backends[2];
    const CLIENTS: usize = 8;
    let load = Load::start(proxy.url("/work"), CLIENTS);
    eventually(Duration::from_secs(20), "every backend serves", || async {
        backends.iter().all(|b| b.requests() >= 10).then_some(())
    })
    .await;

    // The backend stops answering (its connections stay open).
    stalled.hold(true);
    let stalled_at = Instant::now();
    let at_stall = stalled.requests();
    // Out of rotation: no new request reaches it for 2 s.
    let (mut seen, mut changed_at) = (at_stall, stalled_at);
    while changed_at.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = stalled.requests();
        if now != seen {
            (seen, changed_at) = (now, Instant::now());
        }
        assert!(
            stalled_at.elapsed() < Duration::from_secs(60),
            "the stalled backend kept getting requests"
        );
    }
    let taken = seen - at_stall;
    let out_after = changed_at - stalled_at;
    assert!(
        taken <= CLIENTS as u64,
        "it took only the requests already heading its way: {taken}"
    );
    assert!(
        out_after < Duration::from_secs(3),
        "out of rotation after {out_after:?}"
    );
    // The requests it holds time out (backend_response) and are retried on
    // the others: every client gets its answer.
    let healthy_before = backends[0].requests() + backends[1].requests();
    eventually(
        Duration::from_secs(30),
        "traffic flows on the others",
        || async {
            (backends[0].requests() + backends[1].requests() > healthy_before + 50).then_some(())
        },
    )
    .await;
    let log = load.stop().await;
    stalled.hold(false);
    let failed: Vec<u16> = log
        .iter()
        .map(|(_, _, s)| *s)
        .filter(|s| *s != 200)
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_optimizer_s_limit_is_released_on_reload() {
    let b = TestBackend::start("b").await;
    let base = config(&format!(
        "[upstreams.app]\n{}\n[optimizer]\ninterval = \"100ms\"\n",
        backends_toml(&[&b], &[])
    ));
    let with_trap = format!(
        "{base}{}",
        plugin("trap", "optimizer", "test_trap_optimizer", "\"\"")
    );
    let proxy = Proxy::start(&with_trap);
    eventually(Duration::from_secs(20), "the optimizer sets 77", || async {
        let v = proxy.admin_json("/admin/optimizer").await;
        (v["knobs"]["concurrency_limit"] == 77
            && v["owners"]["concurrency_limit"]["owner"] == "trap")
            .then_some(())
    })
    .await;
    // It keeps failing (and is quarantined), but its last good value stays
    // as long as it is configured.
    let v = proxy.admin_json("/admin/optimizer").await;
    assert_eq!(v["knobs"]["concurrency_limit"], 77, "{v}");
    assert!(v["owners"]["concurrency_limit"]["at"].is_string(), "{v}");

    proxy.apply(&base).await;
    let v = proxy.admin_json("/admin/optimizer").await;
    assert_eq!(
        v["knobs"]["concurrency_limit"], 0,
        "the config's value again: {v}"
    );
    assert_eq!(v["owners"], serde_json::json!({}), "{v}");
    let http = Http::default();
    for _ in 0..20 {
        assert_eq!(
            http.get(&proxy.url("/")).await.expect("request").status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_value_takes_a_knob_back_from_its_optimizer() {
    let b = TestBackend::start("b").await;
    let cfg = |limit: u32| {
        config(&format!(
            "[upstreams.app]\n{}\n[optimizer]\ninterval = \"100ms\"\n[admission]\nmax_concurrency = {limit}\n{}",
            backends_toml(&[&b], &[]),
            plugin("trap", "optimizer", "test_trap_optimizer", "\"\"")
        ))
    };
    let proxy = Proxy::start(&cfg(500));
    // It asks for 77; one step down from 500 (max_step 200) is 300.
    eventually(
        Duration::from_secs(20),
        "the optimizer owns the limit",
        || async {
            let v = proxy.admin_json("/admin/optimizer").await;
            (v["owners"]["concurrency_limit"]["owner"] == "trap"
                && v["knobs"]["concurrency_limit"] == 300)
                .then_some(())
        },
    )
    .await;
    // The operator changes the configured value: it applies, the optimizer
    // (still configured, but failing) no longer owns the knob.
    proxy.apply(&cfg(400)).await;
    let v = proxy.admin_json("/admin/optimizer").await;
    assert_eq!(v["knobs"]["concurrency_limit"], 400, "{v}");
    assert_eq!(v["owners"], serde_json::json!({}), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_alert_rule_is_quarantined() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&format!(
        "{}[alerts]\ninterval = \"50ms\"\n[plugin_runtime]\nquarantine_after = 3\n\
         quarantine_base = \"30s\"\n{}",
        config(&format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[]))),
        plugin("spin", "alert-rule", "test_spin", "\"\"")
    ));
    let view = || async {
        let v = proxy.admin_json("/admin/plugins").await;
        v.as_array()?.iter().find(|p| p["name"] == "spin").cloned()
    };
    let quarantined = eventually(
        Duration::from_secs(30),
        "the rule is quarantined",
        || async { view().await.filter(|v| v["quarantined"] == true) },
    )
    .await;
    // Its describe() succeeds every round; that must not clear the count.
    assert_eq!(
        quarantined["failures_by_cause"]["timeout"], 3,
        "{quarantined}"
    );
    // Quarantined, it burns nothing: later rounds fail fast without a call.
    eventually(
        Duration::from_secs(30),
        "later rounds come and go",
        || async {
            let v = view().await?;
            (v["failures_by_cause"]["quarantined"].as_u64()? >= 5).then_some(v)
        },
    )
    .await;
    let v = view().await.expect("the plugin");
    assert_eq!(
        v["failures_by_cause"]["timeout"], 3,
        "no further timeouts: {v}"
    );
    let alerts = proxy.admin_json("/admin/alerts").await;
    assert!(alerts.to_string().contains("plugin-failed"), "{alerts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_is_unchanged_by_a_hundred_weight_changes() {
    let (failing, fine) = (
        TestBackend::start("failing").await,
        TestBackend::start("fine").await,
    );
    failing.set_status(503);
    // Retries: 0% of requests, 1 per second floor: at most 10 in 10 s.
    let proxy = Proxy::start(&format!(
        "{}[optimizer]\ninterval = \"20ms\"\n\
         [optimizer.bounds.backend_weight]\nmin = 1\nmax = 2\nmax_step = 1\n{}",
        config(&format!(
            "[upstreams.app]\nstrategy = \"weighted\"\n{}\n\
             [upstreams.app.retry]\nattempts = 2\nbudget_percent = 0\nmin_retries_per_second = 1\n\
             [upstreams.app.outlier]\nconsecutive_failures = 0\n",
            backends_toml(&[&failing, &fine], &[])
        )),
        plugin("flip", "optimizer", "test_flip_weights", "\"\"")
    ));
    let started = Instant::now();
    let http = Http::default();
    let decisions = || async {
        proxy
            .metric("switchyard_plugin_calls_total", &[("plugin", "flip")])
            .await
    };
    while decisions().await < 100.0 {
        for _ in 0..10 {
            let _ = http.get(&proxy.url("/")).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the optimizer runs"
        );
    }
    let weights_changed = proxy.logs().matches("optimizer changed weight").count();
    assert!(weights_changed >= 100, "{weights_changed} weight changes");
    let retries = proxy
        .metric("switchyard_retries_total", &[("upstream", "app")])
        .await;
    let exhausted = proxy
        .metric(
            "switchyard_retry_budget_exhausted_total",
            &[("upstream", "app")],
        )
        .await;
    // The floor allows 10 per 10 s window; a budget rebuilt with each weight
    // change would have handed out 10 each time.
    let windows = started.elapsed().as_secs() / 10 + 1;
    assert!(
        retries <= (10 * windows) as f64,
        "{retries} retries in {windows} window(s)"
    );
    assert!(
        retries >= 1.0 && exhausted >= 1.0,
        "{retries} retries, {exhausted} refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_admin_rebind_leaves_the_old_config_fully_in_place() {
    let b = TestBackend::start("b").await;
    let upstream = format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[]));
    let proxy = Proxy::start(&config(&upstream));
    let before = proxy.version().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let new_port = free_port();
    let moved = format!(
        "[listen]\naddress = \"127.0.0.1:{new_port}\"\n[admin]\naddress = \"127.0.0.1:{taken_port}\"\n\
         [[routes]]\nupstream = \"app\"\n\n{upstream}[timeouts]\nheader_read = \"7s\"\n"
    );
    proxy.write_config(&moved);
    let (status, body) = proxy.reload().await;
    assert_ne!(status, 200, "{body}");
    let errors = body.to_string();
    assert!(errors.contains("admin.address"), "{errors}");
    assert!(errors.contains("cannot bind"), "{errors}");
    assert!(
        errors.contains(&proxy.config_path.display().to_string()),
        "the error names the new config's file: {errors}"
    );
    // Nothing of the new config is in force, and its new port was let go.
    assert_eq!(proxy.version().await, before);
    let status = proxy.admin_json("/admin/config").await;
    assert_eq!(status["last_reload"]["result"], "failure", "{status}");
    assert_eq!(
        status["config"]["timeouts"]["header_read"], "10s",
        "{status}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", new_port)).is_ok(),
        "the new listen port is released"
    );
    assert_eq!(
        get(&proxy.url("/")).await.expect("old listener").status,
        200
    );
    drop(taken);
}

/// Sockets of this machine in `state` (/proc's hex code: 01 ESTABLISHED,
/// 08 CLOSE_WAIT) towards `port`.
fn sockets_towards(port: u16, state: &str) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default()
        + &std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote_port = f
                .get(2)
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            f.get(3) == Some(&state) && remote_port == Some(port)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_the_backend_closed_do_not_linger() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\n{}\n",
        backends_toml(&[&b], &[])
    )));
    // A burst leaves idle pooled connections behind.
    let load = Load::start(proxy.url("/"), 16);
    eventually(Duration::from_secs(20), "a burst", || async {
        (b.requests() >= 500).then_some(())
    })
    .await;
    load.stop().await;
    let port = b.addr.port();
    // The proxy's pooled connections, and the backend's ends of them.
    assert!(
        sockets_towards(port, "01") > 0,
        "the proxy keeps idle connections"
    );
    // The backend closes them all (as a keep-alive timeout would).
    b.kill();
    eventually(
        Duration::from_secs(30),
        "no socket left towards the backend, in CLOSE_WAIT or otherwise",
        || async {
            (sockets_towards(port, "08") == 0 && sockets_towards(port, "01") == 0).then_some(())
        },
    )
    .await;
    let _ = request(Method::GET, &proxy.url("/"), &[], "").await;
}
