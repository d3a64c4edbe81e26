//! The admission queue through the real proxy: a request at the limit
//! waits instead of failing, a place freed goes to the waiting request, the
//! queue timeout answers 503 with `Retry-After`, and under overload the
//! high class is served first while the low class still completes.

use std::time::{Duration, Instant};

use crate::support::backend::TestBackend;
use crate::support::client::Http;
use crate::support::proxy::Proxy;
use crate::support::{backends_toml, bench, eventually, wasm};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_the_high_class_goes_first_and_the_low_class_never_starves() {
    let b = TestBackend::start("b").await;
    b.set_latency(10);
    let proxy = proxy(
        &b,
        "max_concurrency = 2\nqueue_timeout = \"60s\"\naging = \"100ms\"",
        "[[routes]]\npath_prefix = \"/high\"\nupstream = \"app\"\npriority = 7\n\
         [[routes]]\npath_prefix = \"/low\"\nupstream = \"app\"\npriority = 0",
    );
    // Two `switchyard bench` runs at once for 30 s: six workers on the high
    // class and three on the low one keep the proxy above its limit of two.
    let plugin = wasm("fixed_request").display().to_string();
    let run = |path: &'static str, workers: &'static str| {
        let (url, plugin) = (proxy.url(path), plugin.clone());
        async move {
            bench(
                &url,
                &[
                    "--plugin",
                    &plugin,
                    "-c",
                    workers,
                    "-d",
                    "30s",
                    "--timeout",
                    "60s",
                ],
            )
            .await
        }
    };
    let ((hc, high, herr), (lc, low, lerr)) = tokio::join!(run("/high", "6"), run("/low", "3"));
    assert_eq!(hc, 0, "{herr}");
    assert_eq!(lc, 0, "{lerr}");
    let ops = |r: &serde_json::Value, k: &str| r["operations"][k].as_u64().unwrap_or(0);
    // No starvation: the low class ran all along and nothing failed.
    assert!(
        ops(&low, "ok") >= 30,
        "low class served: {}",
        low["operations"]
    );
    assert_eq!(ops(&low, "failed"), 0, "{}", low["operations"]);
    assert_eq!(ops(&high, "failed"), 0, "{}", high["operations"]);
    let (hp, lp) = (ops(&high, "p99_us"), ops(&low, "p99_us"));
    eprintln!(
        "high: {} ops, p99 {hp} µs; low: {} ops, p99 {lp} µs",
        ops(&high, "ok"),
        ops(&low, "ok")
    );
    assert!(hp < lp, "high p99 {hp} µs should be below low p99 {lp} µs");
    // The proxy saw the same: both classes queued, the low one longer.
    let waited = |class: &'static str| {
        let proxy = &proxy;
        async move {
            proxy
                .metric(
                    "switchyard_admission_queue_wait_seconds_count",
                    &[("class", class)],
                )
                .await
        }
    };
    assert!(waited("0").await >= 1.0 && waited("7").await >= 1.0);
    assert_eq!(
        proxy
            .metric(
                "switchyard_admission_queue_timeouts_total",
                &[("class", "0")]
            )
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_time_is_not_read_as_backend_latency() {
    // Four clients on a limit of one: each request waits for three others.
    // Optimizers and alert rules read the windows: they must see the
    // backend's 40 ms, not the queue (else a low limit would read as a
    // slow backend and be lowered further).
    let b = TestBackend::start("b").await;
    b.set_latency(40);
    let proxy = proxy(
        &b,
        "max_concurrency = 1\nqueue_timeout = \"60s\"",
        "[[routes]]\nupstream = \"app\"",
    );
    let http = Http::default();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (http, url) = (http.clone(), proxy.url("/x"));
            tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..8 {
                    let start = Instant::now();
                    assert_eq!(http.get(&url).await.expect("response").status, 200);
                    times.push(start.elapsed());
                }
                times
            })
        })
        .collect();
    let mut seen = Vec::new();
    for c in clients {
        seen.extend(c.await.expect("client"));
    }
    seen.sort();
    let client_p50 = seen[seen.len() / 2];
    let snapshot = proxy.admin_json("/admin/snapshot").await;
    let window_p99 = Duration::from_micros(snapshot["current"]["p99_us"].as_u64().expect("p99"));
    assert!(
        window_p99 < client_p50,
        "the window's p99 ({window_p99:?}) leaves out the queue clients waited in (their p50: {client_p50:?})"
    );
    assert!(window_p99 >= Duration::from_millis(40), "{window_p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_gives_a_higher_class_the_lowest_waiter_s_place() {
    let b = TestBackend::start("b").await;
    b.hold(true);
    let proxy = proxy(
        &b,
        "max_concurrency = 1\nqueue_size = 1\nqueue_timeout = \"60s\"",
        "[[routes]]\npath_prefix = \"/high\"\nupstream = \"app\"\npriority = 7\n\
         [[routes]]\nupstream = \"app\"\npriority = 1",
    );
    let http = Http::default();
    let first = held_first(&http, &proxy, &b).await;
    let low = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/low"));
        async move { http.get(&url).await }
    });
    queued(&proxy, 1).await;
    // Same class as the waiter: refused at once.
    let same = http.get(&proxy.url("/other")).await.expect("response");
    assert_eq!(same.status, 503);
    assert_eq!(
        same.body,
        "503 Service Unavailable: over capacity, retry later\n"
    );
    // Higher: it takes the low waiter's place, and the low one is told.
    let high = tokio::spawn({
        let (http, url) = (http.clone(), proxy.url("/high"));
        async move { http.get(&url).await }
    });
    let low = low.await.expect("task").expect("response");
    assert_eq!(low.status, 503);
    assert_eq!(low.header("retry-after"), Some("1"));
    queued(&proxy, 1).await;
    b.hold(false);
    for r in [first, high] {
        assert_eq!(r.await.expect("task").expect("response").status, 200);
    }
}
