//! Active health checks and passive outlier detection.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::support::{Http, Proxy, TestBackend, backends_toml, config, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_backend_out_after_fall_and_back_after_rise() {
    let (good, flaky) = (
        TestBackend::start("good").await,
        TestBackend::start("flaky").await,
    );
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n\
         [upstreams.app.health]\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
         unhealthy_threshold = 3\nhealthy_threshold = 2\n",
        backends_toml(&[&good, &flaky], &[])
    )));
    let http = Http::default();

    flaky.set_health(503);
    let checks_at_fail = flaky.ctl.health_checks.load(SeqCst);
    eventually(Duration::from_secs(5), "flaky marked unhealthy", || async {
        (proxy.backend_view(flaky.addr).await["healthy"] == false).then_some(())
    })
    .await;
    let failed_checks = flaky.ctl.health_checks.load(SeqCst) - checks_at_fail;
    assert!(
        failed_checks >= 3,
        "went unhealthy after {failed_checks} failed checks, threshold is 3"
    );

    let before = flaky.requests();
    for _ in 0..50 {
        assert_eq!(http.get(&proxy.url("/x")).await.unwrap().backend(), "good");
    }
    assert_eq!(
        flaky.requests(),
        before,
        "an unhealthy backend gets no traffic"
    );

    flaky.set_health(200);
    let checks_at_recover = flaky.ctl.health_checks.load(SeqCst);
    eventually(Duration::from_secs(5), "flaky healthy again", || async {
        (proxy.backend_view(flaky.addr).await["healthy"] == true).then_some(())
    })
    .await;
    let passed = flaky.ctl.health_checks.load(SeqCst) - checks_at_recover;
    assert!(
        passed >= 2,
        "came back after {passed} passed checks, threshold is 2"
    );
    for _ in 0..20 {
        http.get(&proxy.url("/x")).await.unwrap();
    }
    assert!(
        flaky.requests() >= before + 9,
        "traffic returns to the recovered backend"
    );
    let fails = proxy
        .metric("switchyard_health_checks_total", &[("result", "fail")])
        .await;
    assert!(fails >= 3.0, "failed checks are counted: {fails}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_drops_connections_is_ejected_and_returns() {
    let (good, bad) = (
        TestBackend::start("good").await,
        TestBackend::start("bad").await,
    );
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n\
         [upstreams.app.retry]\nattempts = 1\n\
         [upstreams.app.outlier]\nconsecutive_failures = 3\nbase_ejection_time = \"1s\"\nmax_ejection_percent = 50\n",
        backends_toml(&[&good, &bad], &[])
    )));
    let http = Http::default();
    bad.set_drop_connections(true);
    let mut failures = 0;
    for _ in 0..20 {
        if http.get(&proxy.url("/x")).await.unwrap().status == 502 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "ejected after exactly 3 consecutive failures");
    let view = proxy.backend_view(bad.addr).await;
    assert_eq!(view["ejected"], true, "{view}");
    assert_eq!(view["ejections"], 1);
    assert!(
        proxy
            .metric(
                "switchyard_backend_ejections_total",
                &[("backend", &bad.addr.to_string())]
            )
            .await
            >= 1.0
    );

    bad.set_drop_connections(false);
    eventually(
        Duration::from_secs(5),
        "ejection ends after the base time",
        || async { (proxy.backend_view(bad.addr).await["ejected"] == false).then_some(()) },
    )
    .await;
    let before = bad.requests();
    for _ in 0..10 {
        assert_eq!(http.get(&proxy.url("/x")).await.unwrap().status, 200);
    }
    assert_eq!(
        bad.requests() - before,
        5,
        "a returned backend takes its share again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_ejection_percent_are_ejected() {
    let backends = [
        TestBackend::start("b0").await,
        TestBackend::start("b1").await,
        TestBackend::start("b2").await,
        TestBackend::start("b3").await,
    ];
    let refs: Vec<&TestBackend> = backends.iter().collect();
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n\
         [upstreams.app.retry]\nattempts = 1\n\
         [upstreams.app.outlier]\nconsecutive_failures = 2\nbase_ejection_time = \"30s\"\nmax_ejection_percent = 25\n",
        backends_toml(&refs, &[])
    )));
    // Gateway failures (503): what outlier detection counts by default.
    for b in &backends[..3] {
        b.set_status(503);
    }
    let http = Http::default();
    for _ in 0..60 {
        http.get(&proxy.url("/x")).await.unwrap();
    }
    let v = proxy.admin_json("/admin/backends").await;
    let ejected = v["app"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["ejected"] == true)
        .count();
    assert_eq!(ejected, 1, "25% of 4 backends is 1: {v}");
    assert!(backends[3].requests() > 0);
}
