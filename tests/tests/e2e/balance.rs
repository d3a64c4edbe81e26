//! Each strategy's distribution, measured at the backends.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Http, Proxy, TestBackend, backends_toml, config, eventually};

async fn three() -> [TestBackend; 3] {
    [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_even_within_one() {
    let [a, b, c] = three().await;
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}",
        backends_toml(&[&a, &b, &c], &[])
    )));
    let http = Http::default();
    for _ in 0..301 {
        assert_eq!(http.get(&proxy.url("/rr")).await.unwrap().status, 200);
    }
    let counts = [a.requests(), b.requests(), c.requests()];
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "round robin spread {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_is_proportional_within_two_percent() {
    let [a, b, c] = three().await;
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"weighted\"\n{}",
        backends_toml(&[&a, &b, &c], &[1, 3, 6])
    )));
    let total = 10_000;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let http = Http::default();
            let url = proxy.url("/w");
            tokio::spawn(async move {
                for _ in 0..total / 8 {
                    assert_eq!(http.get(&url).await.unwrap().status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    for (backend, weight) in [(&a, 1.0), (&b, 3.0), (&c, 6.0)] {
        let share = backend.requests() as f64 / total as f64;
        let want = weight / 10.0;
        assert!(
            (share - want).abs() <= 0.02,
            "backend {} got {share:.4}, want {want:.2}",
            backend.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_new_work_to_the_idle_backend() {
    let (busy, idle) = (
        TestBackend::start("busy").await,
        TestBackend::start("idle").await,
    );
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"least_connections\"\n{}",
        backends_toml(&[&busy, &idle], &[])
    )));
    busy.hold(true);
    // Keep one request stuck on `busy`.
    let mut held = Vec::new();
    while busy.ctl.active.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        let url = proxy.url("/hold");
        held.push(tokio::spawn(async move { crate::support::get(&url).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = busy.requests();
    let http = Http::default();
    for _ in 0..100 {
        assert_eq!(
            http.get(&proxy.url("/new")).await.unwrap().backend(),
            "idle"
        );
    }
    assert_eq!(
        busy.requests(),
        before,
        "no new work went to the busy backend"
    );
    busy.hold(false);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_response_time_avoids_a_backend_20ms_slower() {
    let [a, b, slow] = three().await;
    slow.set_latency(20);
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"least_response_time\"\n{}",
        backends_toml(&[&a, &b, &slow], &[])
    )));
    let http = Http::default();
    let total = 300;
    for _ in 0..total {
        assert_eq!(http.get(&proxy.url("/lrt")).await.unwrap().status, 200);
    }
    let away = (a.requests() + b.requests()) as f64 / total as f64;
    assert!(
        away >= 0.8,
        "only {away:.2} of requests avoided the slow backend (slow got {})",
        slow.requests()
    );
}

async fn key_owners(proxy: &Proxy, keys: u32) -> HashMap<u32, String> {
    let http = Http::default();
    let mut owners = HashMap::new();
    for k in 0..keys {
        let key = format!("user-{k}");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let r = http
                .request(http::Method::GET, &proxy.url("/h"), &[("x-user", &key)], "")
                .await
                .unwrap();
            seen.push(r.backend().to_string());
        }
        assert!(
            seen.iter().all(|s| s == &seen[0]),
            "key {key} moved between backends: {seen:?}"
        );
        owners.insert(k, seen[0].clone());
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_keeps_keys_and_moves_only_the_removed_backends_keys() {
    let backends = [
        TestBackend::start("h0").await,
        TestBackend::start("h1").await,
        TestBackend::start("h2").await,
        TestBackend::start("h3").await,
    ];
    let refs: Vec<&TestBackend> = backends.iter().collect();
    let upstream = |bs: &[&TestBackend]| {
        config(&format!(
            "[upstreams.app]\nstrategy = \"hash\"\n{}\n[upstreams.app.hash]\nkey = \"header:x-user\"\n",
            backends_toml(bs, &[])
        ))
    };
    let all = Proxy::start(&upstream(&refs));
    let before = key_owners(&all, 200).await;
    let used: std::collections::HashSet<&String> = before.values().collect();
    assert_eq!(used.len(), 4, "200 keys spread over all four backends");

    let without_h2: Vec<&TestBackend> = refs.iter().copied().filter(|b| b.name != "h2").collect();
    let three = Proxy::start(&upstream(&without_h2));
    let after = key_owners(&three, 200).await;
    for (k, owner) in &before {
        if owner != "h2" {
            assert_eq!(
                &after[k], owner,
                "key {k} moved although its backend stayed"
            );
        } else {
            assert_ne!(after[k], "h2");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_backends_are_skipped_and_panic_mode_spreads_over_all() {
    let [a, b, c] = three().await;
    let upstream = |panic: bool| {
        let threshold = if panic { 50 } else { 0 };
        config(&format!(
            "[upstreams.app]\nstrategy = \"round_robin\"\npanic_threshold = {threshold}\n{}\n\
             [upstreams.app.health]\ninterval = \"50ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1\n",
            backends_toml(&[&a, &b, &c], &[])
        ))
    };
    for bk in [&a, &b, &c] {
        bk.set_health(503);
    }
    let strict = Proxy::start(&upstream(false));
    let r = eventually(
        Duration::from_secs(5),
        "503 once all are unhealthy",
        || async {
            let r = crate::support::get(&strict.url("/x")).await.ok()?;
            (r.status == 503).then_some(r)
        },
    )
    .await;
    assert!(r.header("retry-after").is_some(), "503 carries Retry-After");

    let panicking = Proxy::start(&upstream(true));
    eventually(Duration::from_secs(5), "all marked unhealthy", || async {
        let v = panicking.admin_json("/admin/backends").await;
        v["app"]["backends"]
            .as_array()?
            .iter()
            .all(|b| b["healthy"] == false)
            .then_some(())
    })
    .await;
    let before = a.requests() + b.requests() + c.requests();
    let http = Http::default();
    for _ in 0..30 {
        assert_eq!(http.get(&panicking.url("/p")).await.unwrap().status, 200);
    }
    assert_eq!(a.requests() + b.requests() + c.requests() - before, 30);
    assert!(
        panicking
            .metric("switchyard_panic_mode_requests_total", &[])
            .await
            >= 30.0
    );
}
