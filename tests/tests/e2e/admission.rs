//! The admission queue through the real proxy: a request at the limit
//! waits instead of failing, a place freed goes to the waiting request, the
//! queue timeout answers 503 with `Retry-After`, and under overload the
//! high class is served first while the low class still completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::support::backend::TestBackend;
use crate::support::client::Http;
use crate::support::proxy::Proxy;
use crate::support::{backends_toml, eventually};

fn proxy(b: &TestBackend, admission: &str, routes: &str) -> Proxy {
    Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [admission]\n{admission}\n{routes}\n[upstreams.app]\n{}\n",
        backends_toml(&[b], &[])
    ))
}

async fn queued(proxy: &Proxy, n: u64) {
    eventually(Duration::from_secs(20), "requests queue", || async {
        let v = proxy.admin_json("/admin/optimizer").await;
        (v["knobs"]["queued"] == n).then_some(())
    })
    .await;
}

type Pending = tokio::task::JoinHandle<anyhow::Result<crate::support::client::Resp>>;

/// Sends `/first`, which the held backend keeps, taking the only place.
async fn held_first(http: &Http, proxy: &Proxy, b: &TestBackend) -> Pending {
    let first = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/first"));
        async move { http.get(&url).await }
    });
    eventually(Duration::from_secs(20), "the first is held", || async {
        (b.requests() == 1).then_some(())
    })
    .await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_at_the_limit_waits_for_a_place() {
    let b = TestBackend::start("b").await;
    b.hold(true);
    let proxy = proxy(
        &b,
        "max_concurrency = 1\nqueue_timeout = \"60s\"",
        "[[routes]]\nupstream = \"app\"",
    );
    let http = Http::default();
    let first = held_first(&http, &proxy, &b).await;
    let second = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/second"));
        async move { http.get(&url).await }
    });
    queued(&proxy, 1).await;
    assert_eq!(b.requests(), 1, "the second waits, unsent");
    b.hold(false);
    for r in [first, second] {
        assert_eq!(r.await.expect("task").expect("response").status, 200);
    }
    assert_eq!(b.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_timeout_answers_503_with_retry_after() {
    let b = TestBackend::start("b").await;
    b.hold(true);
    let proxy = proxy(
        &b,
        "max_concurrency = 1\nqueue_timeout = \"500ms\"",
        "[[routes]]\nupstream = \"app\"\npriority = 5",
    );
    let http = Http::default();
    let first = held_first(&http, &proxy, &b).await;
    let start = Instant::now();
    let r = http.get(&proxy.url("/second")).await.expect("response");
    let waited = start.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.body,
        "503 Service Unavailable: over capacity: queued too long, retry later\n"
    );
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    let timeouts = proxy
        .metric(
            "switchyard_admission_queue_timeouts_total",
            &[("class", "5")],
        )
        .await;
    assert_eq!(timeouts, 1.0);
    assert_eq!(b.requests(), 1, "the backend never saw it");
    b.hold(false);
    assert_eq!(first.await.expect("task").expect("response").status, 200);
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_the_high_class_goes_first_and_the_low_class_still_completes() {
    let b = TestBackend::start("b").await;
    b.set_latency(10);
    let proxy = proxy(
        &b,
        "max_concurrency = 2\nqueue_timeout = \"60s\"\naging = \"100ms\"",
        "[[routes]]\npath_prefix = \"/high\"\nupstream = \"app\"\npriority = 7\n\
         [[routes]]\npath_prefix = \"/low\"\nupstream = \"app\"\npriority = 0",
    );
    let http = Http::default();
    let low_done = Arc::new(AtomicBool::new(false));
    // High-class load that lasts until the low class is through.
    let high: Vec<_> = (0..6)
        .map(|_| {
            let (http, url, done) = (http.clone(), proxy.url("/high"), low_done.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(120);
                while !done.load(SeqCst) && Instant::now() < deadline {
                    let start = Instant::now();
                    let r = http.get(&url).await.expect("high response");
                    assert_eq!(r.status, 200);
                    times.push(start.elapsed());
                }
                times
            })
        })
        .collect();
    let low: Vec<_> = (0..3)
        .map(|_| {
            let (http, url) = (http.clone(), proxy.url("/low"));
            tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..10 {
                    let start = Instant::now();
                    let r = http.get(&url).await.expect("low response");
                    assert_eq!(r.status, 200, "the low class is served, not refused");
                    times.push(start.elapsed());
                }
                times
            })
        })
        .collect();
    let mut low_times = Vec::new();
    for t in low {
        low_times.extend(t.await.expect("low task"));
    }
    let still_loaded = !high.iter().all(|h| h.is_finished());
    low_done.store(true, SeqCst);
    let mut high_times = Vec::new();
    for t in high {
        high_times.extend(t.await.expect("high task"));
    }
    assert!(
        still_loaded,
        "the low class completed while the high class kept the proxy at its limit"
    );
    assert_eq!(low_times.len(), 30);
    let (hp, lp) = (p99(high_times.clone()), p99(low_times));
    assert!(hp < lp, "high p99 {hp:?} should be below low p99 {lp:?}");
    let waited = proxy
        .metric(
            "switchyard_admission_queue_wait_seconds_count",
            &[("class", "0")],
        )
        .await;
    assert!(waited >= 1.0, "low requests waited in the queue");
}
