//! Rate limits through the real proxy: 429 with `Retry-After` and the
//! `RateLimit` headers, keys and scopes, shadow mode, state kept across a
//! reload, a limit shared by two proxies through a real `redis-server`,
//! and what happens while Redis is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::Method;

use crate::support::backend::TestBackend;
use crate::support::backends_toml;
use crate::support::client::{Http, Resp};
use crate::support::proxy::Proxy;
use crate::support::redis::RedisServer;

fn config(b: &TestBackend, limits: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\npath_prefix = \"/limited\"\nupstream = \"app\"\n\
         [[routes]]\nupstream = \"app\"\n\
         {limits}\n[upstreams.app]\n{}\n",
        backends_toml(&[b], &[])
    )
}

async fn send(http: &Http, proxy: &Proxy, path: &str, user: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = user.map(|u| ("x-user", u)).into_iter().collect();
    http.request(Method::GET, &proxy.url(path), &headers, "")
        .await
        .expect("response")
}

/// Statuses of `n` requests in a row.
async fn statuses(
    http: &Http,
    proxy: &Proxy,
    path: &str,
    user: Option<&str>,
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(send(http, proxy, path, user).await.status);
    }
    out
}

/// `switchyard_rate_limited_total` of a limit and action.
async fn limited(proxy: &Proxy, limit: &str, action: &str) -> f64 {
    proxy
        .metric(
            "switchyard_rate_limited_total",
            &[("limit", limit), ("action", action)],
        )
        .await
}

/// Three requests a minute per `x-user` on `/limited`.
const PER_USER: &str = "[[rate_limits]]\nname = \"per-user\"\nkey = [\"header:x-user\"]\n\
                        rate = 3\nper = \"60s\"\nroute = \"*/limited\"\n";

/// A proxy with `PER_USER` where `ann` has made her three requests.
async fn ann_used_her_three() -> (TestBackend, Proxy, Http) {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&config(&b, PER_USER));
    let http = Http::default();
    assert_eq!(
        statuses(&http, &proxy, "/limited", Some("ann"), 3).await,
        [200; 3]
    );
    (b, proxy, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_429_with_retry_after_and_ratelimit_headers() {
    let (b, proxy, http) = ann_used_her_three().await;
    let r = send(&http, &proxy, "/limited", Some("ann")).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.body,
        "429 Too Many Requests: rate limit exceeded, retry later\n"
    );
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-policy"), Some("\"per-user\";q=3;w=60"));
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"per-user\";r=0;t={retry}").as_str())
    );
    // Another key has its own count; a request without the keyed header,
    // and another route, are not counted.
    assert_eq!(
        statuses(&http, &proxy, "/limited", Some("bob"), 3).await,
        [200; 3]
    );
    assert_eq!(statuses(&http, &proxy, "/limited", None, 5).await, [200; 5]);
    assert_eq!(
        statuses(&http, &proxy, "/other", Some("ann"), 5).await,
        [200; 5]
    );
    let rejected = limited(&proxy, "per-user", "rejected").await;
    assert_eq!(rejected, 1.0);
    assert_eq!(
        b.requests(),
        16,
        "the refused request never reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_limit_counts_and_refuses_nothing() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&config(&b, &format!("{PER_USER}shadow = true\n")));
    let http = Http::default();
    assert_eq!(
        statuses(&http, &proxy, "/limited", Some("ann"), 5).await,
        [200; 5]
    );
    let shadowed = limited(&proxy, "per-user", "shadow").await;
    assert_eq!(shadowed, 2.0, "two would have been refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_counts_of_an_unchanged_limit() {
    let (b, proxy, http) = ann_used_her_three().await;
    // Another change in the file: the limit keeps its state.
    proxy
        .apply(&config(
            &b,
            &format!("{PER_USER}[admission]\nqueue_size = 10\n"),
        ))
        .await;
    assert_eq!(
        send(&http, &proxy, "/limited", Some("ann")).await.status,
        429
    );
    // The limit itself changes: it starts afresh.
    proxy
        .apply(&config(&b, &PER_USER.replace("rate = 3", "rate = 4")))
        .await;
    assert_eq!(
        statuses(&http, &proxy, "/limited", Some("ann"), 4).await,
        [200; 4]
    );
    assert_eq!(
        send(&http, &proxy, "/limited", Some("ann")).await.status,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_one_limit_through_redis() {
    let redis = RedisServer::start();
    let b = TestBackend::start("b").await;
    let shared = format!(
        "[[rate_limits]]\nname = \"shared\"\nrate = 100\nburst = 10\nredis_url = \"{}\"\n",
        redis.url()
    );
    let proxies = [
        Arc::new(Proxy::start(&config(&b, &shared))),
        Arc::new(Proxy::start(&config(&b, &shared))),
    ];
    let http = Http::default();
    let admitted = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(5);
    let start = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (http, proxy, admitted) = (http.clone(), proxies[i % 2].clone(), admitted.clone());
            tokio::spawn(async move {
                let mut last_ok = start;
                while start.elapsed() < run_for {
                    let r = send(&http, &proxy, "/x", None).await;
                    match r.status {
                        200 => {
                            admitted.fetch_add(1, Relaxed);
                            last_ok = Instant::now();
                        }
                        429 => {}
                        other => panic!("unexpected status {other}"),
                    }
                }
                last_ok
            })
        })
        .collect();
    let mut end = start;
    for t in tasks {
        end = end.max(t.await.expect("load task"));
    }
    let elapsed = end.duration_since(start).as_secs_f64();
    let got = admitted.load(Relaxed) as f64;
    // GCRA: the burst, then one every 10 ms, whichever proxy asks.
    let expected = 10.0 + 100.0 * elapsed;
    eprintln!("two proxies admitted {got} in {elapsed:.2}s; a shared 100/s allows {expected:.0}");
    assert!(
        (got - expected).abs() <= expected * 0.05,
        "admitted {got} in {elapsed:.2}s between two proxies; a shared 100/s allows {expected:.0}"
    );
    let per_proxy = limited(&proxies[0], "shared", "rejected").await;
    assert!(per_proxy > 0.0, "each proxy refused its share");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_fail_mode_holds_and_the_limit_comes_back() {
    let mut redis = RedisServer::start();
    let b = TestBackend::start("b").await;
    let limits = format!(
        "[[rate_limits]]\nname = \"closed\"\nkey = [\"header:x-user\"]\nrate = 3\nper = \"60s\"\n\
         route = \"*/limited\"\n\
         redis_url = \"{url}\"\non_redis_error = \"deny\"\n\
         [[rate_limits]]\nname = \"open\"\nrate = 3\nper = \"60s\"\nroute = \"*/\"\n\
         redis_url = \"{url}\"\n",
        url = redis.url()
    );
    let proxy = Proxy::start(&config(&b, &limits));
    let http = Http::default();
    assert_eq!(
        statuses(&http, &proxy, "/limited", Some("ann"), 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(statuses(&http, &proxy, "/open", None, 1).await, [200]);
    redis.stop();
    // What this instance alone counted is still refused without asking
    // Redis; anything else fails closed: 503, decided within the bounded
    // Redis call.
    assert_eq!(
        send(&http, &proxy, "/limited", Some("ann")).await.status,
        429
    );
    for user in ["bea", "cat", "dan"] {
        let r = send(&http, &proxy, "/limited", Some(user)).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(
            r.body,
            "503 Service Unavailable: rate limiter unavailable, retry later\n"
        );
    }
    // Fail open to the local limit: what this instance counted still holds.
    assert_eq!(
        statuses(&http, &proxy, "/open", None, 3).await,
        [200, 200, 429]
    );
    proxy.wait_log("rate limit \"closed\"").await;
    let logs = proxy.logs();
    assert_eq!(
        logs.matches("rate limit \"closed\" redis://").count(),
        1,
        "the outage is logged once: {logs}"
    );
    assert!(
        proxy
            .metric(
                "switchyard_rate_limit_redis_errors_total",
                &[("limit", "closed")]
            )
            .await
            >= 3.0
    );
    // Redis is back (empty: it kept nothing): the shared limit applies again.
    redis.restart();
    let attempt = AtomicU64::new(0);
    crate::support::eventually(
        Duration::from_secs(20),
        "the limiter reconnects",
        || async {
            let user = format!("u{}", attempt.fetch_add(1, Relaxed));
            (send(&http, &proxy, "/limited", Some(&user)).await.status == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        statuses(&http, &proxy, "/limited", Some("eve"), 4).await,
        [200, 200, 200, 429]
    );
    proxy.wait_log("rate limit \"closed\" redis://").await;
    assert!(proxy.logs().contains("is back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_client_is_the_forwarded_address() {
    let b = TestBackend::start("b").await;
    let limits =
        "[[rate_limits]]\nname = \"per-ip\"\nkey = [\"client_ip\"]\nrate = 2\nper = \"60s\"\n";
    let trusted = config(&b, limits).replace(
        "[listen]\naddress = \"127.0.0.1:0\"\n",
        "[listen]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    );
    let proxy = Proxy::start(&trusted);
    let http = Http::default();
    let from = |xff: &'static str| {
        let (http, url) = (http.clone(), proxy.url("/x"));
        async move {
            let mut out = Vec::new();
            for _ in 0..3 {
                let r = http
                    .request(Method::GET, &url, &[("x-forwarded-for", xff)], "")
                    .await
                    .expect("response");
                out.push(r.status);
            }
            out
        }
    };
    // Two clients behind the balancer: counted apart. The rightmost
    // untrusted hop counts (a client cannot pose as another by adding
    // hops on the left).
    assert_eq!(from("10.0.0.1").await, [200, 200, 429]);
    assert_eq!(from("10.0.0.2").await, [200, 200, 429]);
    assert_eq!(from("10.9.9.9, 10.0.0.2").await, [429, 429, 429]);
    assert_eq!(from("10.0.0.3, 127.0.0.5").await, [200, 200, 429]);
    // Not trusted: the header is ignored and the peer is the client.
    let untrusted = Proxy::start(&config(&b, limits));
    for xff in ["10.0.0.1", "10.0.0.2"] {
        let r = http
            .request(
                Method::GET,
                &untrusted.url("/x"),
                &[("x-forwarded-for", xff)],
                "",
            )
            .await
            .expect("response");
        assert_eq!(r.status, 200);
    }
    let r = http
        .request(
            Method::GET,
            &untrusted.url("/x"),
            &[("x-forwarded-for", "10.0.0.3")],
            "",
        )
        .await
        .expect("response");
    assert_eq!(r.status, 429, "one peer, one count");
}
