//! Retries: to another backend, idempotent only, within the budget.

use http::Method;

use crate::support::{Http, Proxy, TestBackend, backends_toml, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_of_three_backends_killed_1000_gets_all_succeed() {
    let (a, b, dead) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("dead").await,
    );
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n[upstreams.app.retry]\nattempts = 2\n",
        backends_toml(&[&a, &b, &dead], &[])
    )));
    dead.kill();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let http = Http::default();
            let url = proxy.url("/get");
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..250 {
                    statuses.push(http.get(&url).await.unwrap().status);
                }
                statuses
            })
        })
        .collect();
    let mut ok = 0;
    for w in workers {
        ok += w.await.unwrap().into_iter().filter(|s| *s == 200).count();
    }
    assert_eq!(ok, 1000, "every GET succeeded");
    assert_eq!(a.requests() + b.requests(), 1000);
    assert!(
        proxy
            .metric("switchyard_retries_total", &[("upstream", "app")])
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_not_retried_but_gets_are() {
    let (failing, ok) = (
        TestBackend::start("failing").await,
        TestBackend::start("ok").await,
    );
    failing.set_status(503);
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n\
         [upstreams.app.retry]\nattempts = 2\n[upstreams.app.outlier]\nconsecutive_failures = 0\n",
        backends_toml(&[&failing, &ok], &[])
    )));
    let http = Http::default();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            http.request(Method::POST, &proxy.url("/orders"), &[], "{}")
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        ok.method_count(Method::POST),
        5,
        "a failed POST is never sent again"
    );
    assert_eq!(failing.method_count(Method::POST), 5);

    for _ in 0..10 {
        assert_eq!(http.get(&proxy.url("/orders")).await.unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_retries() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    a.set_status(503);
    b.set_status(503);
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n\
         [upstreams.app.retry]\nattempts = 3\nbudget_percent = 20\nmin_retries_per_second = 0\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\n\
         [upstreams.app.outlier]\nconsecutive_failures = 0\n",
        backends_toml(&[&a, &b], &[])
    )));
    let http = Http::default();
    let requests = 200;
    for _ in 0..requests {
        assert_eq!(http.get(&proxy.url("/x")).await.unwrap().status, 503);
    }
    let attempts = a.requests() + b.requests();
    let retries = attempts - requests;
    assert!(
        retries <= requests / 5 + 1,
        "{retries} retries for {requests} requests exceeds 20%"
    );
    assert!(
        retries >= requests / 10,
        "the budget allowed some retries: {retries}"
    );
    assert_eq!(
        proxy.metric("switchyard_retries_total", &[]).await as u64,
        retries
    );
    assert!(
        proxy
            .metric("switchyard_retry_budget_exhausted_total", &[])
            .await
            > 0.0
    );
}
