//! Graceful shutdown: in-flight requests finish, new ones are refused.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{Proxy, TestBackend, backends_toml, config, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let b = TestBackend::start("b").await;
    b.set_latency(1200);
    let mut proxy = Proxy::start(
        &(config(&format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[])))
            + "[timeouts]\ndrain = \"10s\"\n"),
    );
    let url = proxy.url("/slow");
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = get(&proxy.admin_url("/readyz")).await.map(|r| r.status);
    assert!(
        matches!(ready, Ok(503) | Err(_)),
        "not ready while draining: {ready:?}"
    );
    assert!(
        get(&proxy.url("/new")).await.is_err(),
        "no new connections once draining"
    );
    for r in in_flight {
        let r = r.await.unwrap().expect("in-flight request completed");
        assert_eq!(r.status, 200);
    }
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(10)))
        .expect("proxy exited");
    assert!(status.success(), "clean exit: {status:?}");
    proxy.wait_log("SIGTERM received").await;
}
