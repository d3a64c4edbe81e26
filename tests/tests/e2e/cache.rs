//! The response cache through the real proxy against a scriptable origin:
//! storability per directive, freshness and `Age`, `Vary`, revalidation,
//! unsafe-method invalidation, stale-while-revalidate, stale-if-error,
//! request collapsing, purge and the byte bound.

use std::time::Duration;

use http::Method;

use crate::support::client::{Http, Resp};
use crate::support::config;
use crate::support::origin::{Origin, Script};
use crate::support::proxy::Proxy;

async fn setup(cache: &str) -> (Origin, Proxy, Http) {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&format!(
        "[cache]\nenabled = true\n{cache}\n[upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        origin.addr
    )));
    (origin, proxy, Http::default())
}

async fn get(http: &Http, proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Resp {
    http.request(Method::GET, &proxy.url(path), headers, "")
        .await
        .expect("request")
}

fn cache_status(r: &Resp) -> &str {
    r.header("cache-status").unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_stored_follows_rfc_9111() {
    let (origin, proxy, http) = setup("").await;
    // (path, response, request headers, served from cache the second time,
    //  the first response's Cache-Status)
    type Case = (
        &'static str,
        Script,
        Vec<(&'static str, &'static str)>,
        bool,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "/max-age",
            Script::ok("max-age=60", "a"),
            vec![],
            true,
            "fwd=uri-miss; stored",
        ),
        (
            "/s-maxage",
            Script::ok("s-maxage=60, max-age=0", "b"),
            vec![],
            true,
            "stored",
        ),
        (
            "/public",
            Script::ok("public", "c").header("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            vec![],
            true,
            "stored",
        ),
        (
            "/no-store",
            Script::ok("no-store, max-age=60", "d"),
            vec![],
            false,
            "detail=no-store",
        ),
        (
            "/private",
            Script::ok("private, max-age=60", "e"),
            vec![],
            false,
            "detail=private",
        ),
        (
            "/auth",
            Script::ok("max-age=60", "f"),
            vec![("authorization", "Bearer x")],
            false,
            "detail=authorization",
        ),
        (
            "/auth-shared",
            Script::ok("s-maxage=60", "g"),
            vec![("authorization", "Bearer x")],
            true,
            "stored",
        ),
        (
            "/cookie",
            Script::ok("max-age=60", "h").header("set-cookie", "id=1"),
            vec![],
            false,
            "detail=set-cookie",
        ),
        (
            "/cookie-public",
            Script::ok("public, max-age=60", "i").header("set-cookie", "id=1"),
            vec![],
            true,
            "stored",
        ),
        (
            "/vary-star",
            Script::ok("max-age=60", "j").header("vary", "*"),
            vec![],
            false,
            "detail=vary-star",
        ),
        (
            "/req-no-store",
            Script::ok("max-age=60", "k"),
            vec![("cache-control", "no-store")],
            false,
            "detail=no-store",
        ),
        // Malformed directives are ignored one by one; an unparsable max-age
        // makes the response stale (RFC 9111 §4.2.1), never an error.
        (
            "/bad-cc",
            Script::ok("max-age=60, no-such=\"x, =5, ,", "l"),
            vec![],
            true,
            "stored",
        ),
        (
            "/bad-max-age",
            Script::ok("max-age=abc", "l2"),
            vec![],
            false,
            "detail=no-freshness",
        ),
        (
            "/status-500",
            Script {
                status: 500,
                ..Script::ok("max-age=60", "m")
            },
            vec![],
            false,
            "detail=status",
        ),
    ];
    let expires = |offset: i64| {
        let now = std::time::SystemTime::now();
        let at = if offset >= 0 {
            now + Duration::from_secs(offset as u64)
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        Script {
            headers: vec![("expires".into(), imf_fixdate(at))],
            ..Script::ok("", "exp")
        }
    };
    let mut cases = cases;
    cases.push(("/expires", expires(60), vec![], true, "stored"));
    cases.push((
        "/expired",
        expires(-60),
        vec![],
        false,
        "detail=no-freshness",
    ));
    for (path, script, headers, cached, first_status) in cases {
        origin.script(path, script);
        let first = get(&http, &proxy, path, &headers).await;
        assert!(
            cache_status(&first).contains(first_status),
            "{path}: {}",
            cache_status(&first)
        );
        let second = get(&http, &proxy, path, &headers).await;
        assert_eq!(second.body, first.body, "{path}");
        let want_hits = if cached { 1 } else { 2 };
        assert_eq!(
            origin.hits(path),
            want_hits,
            "{path}: {}",
            cache_status(&second)
        );
        if cached {
            assert!(
                cache_status(&second).starts_with("Switchyard; hit"),
                "{path}"
            );
            assert!(second.header("age").is_some(), "{path}: a hit carries Age");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_counts_from_the_origin_and_expiry_goes_back_to_it() {
    let (origin, proxy, http) = setup("").await;
    // Already 58 s old at the origin: fresh for 2 s more.
    origin.script("/aged", Script::ok("max-age=60", "x").header("age", "58"));
    get(&http, &proxy, "/aged", &[]).await;
    let hit = get(&http, &proxy, "/aged", &[]).await;
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((58..=59).contains(&age), "age {age}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    get(&http, &proxy, "/aged", &[]).await;
    assert_eq!(origin.hits("/aged"), 2, "expired after 60 s of age");

    // A `Date` 30 s in the past (a response that waited upstream) counts too.
    let date = imf_fixdate(std::time::SystemTime::now() - Duration::from_secs(30));
    origin.script(
        "/dated",
        Script::ok("max-age=60", "d").header("date", &date),
    );
    get(&http, &proxy, "/dated", &[]).await;
    let hit = get(&http, &proxy, "/dated", &[]).await;
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!((30..=31).contains(&age), "age {age} from Date {date}");
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn imf_fixdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_one_variant_per_header_combination() {
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/v",
        Script::ok("max-age=60", "varied").header("vary", "accept-language, accept-encoding"),
    );
    let combos = [("de", "gzip"), ("en", "gzip"), ("de", "br")];
    for _ in 0..2 {
        for (lang, enc) in combos {
            get(
                &http,
                &proxy,
                "/v",
                &[("accept-language", lang), ("accept-encoding", enc)],
            )
            .await;
        }
    }
    assert_eq!(origin.hits("/v"), 3, "one fetch per combination");
    origin.script(
        "/v1",
        Script::ok("max-age=60", "one").header("vary", "Accept-Language"),
    );
    for lang in ["de", "en", "de", "en", "fr"] {
        get(&http, &proxy, "/v1", &[("accept-language", lang)]).await;
    }
    assert_eq!(origin.hits("/v1"), 3, "de, en and fr");
    // Plugins see the same figures: 5 of the 11 lookups hit.
    let snapshot = proxy.admin_json("/admin/snapshot").await;
    let ratio = snapshot["current"]["cache_hit_ratio"].as_f64().unwrap();
    assert!((ratio - 5.0 / 11.0).abs() < 1e-9, "{snapshot}");
    assert_eq!(snapshot["cache_capacity_bytes"], 256 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_refreshes_the_stored_response() {
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/etag",
        Script::ok("max-age=1", "body-v1").header("etag", "\"v1\""),
    );
    get(&http, &proxy, "/etag", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revalidated = get(&http, &proxy, "/etag", &[]).await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, "body-v1", "the stored body after a 304");
    assert!(
        cache_status(&revalidated).contains("fwd-status=304"),
        "{}",
        cache_status(&revalidated)
    );
    let sent = origin.last_headers("/etag").unwrap();
    assert_eq!(sent.get("if-none-match").unwrap(), "\"v1\"");
    // Fresh again for another second.
    let hit = get(&http, &proxy, "/etag", &[]).await;
    assert!(cache_status(&hit).starts_with("Switchyard; hit"));
    assert_eq!(origin.hits("/etag"), 2);
    // A client's own conditional request is answered from the cache.
    let not_modified = get(&http, &proxy, "/etag", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(origin.hits("/etag"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_target_and_its_location() {
    let (origin, proxy, http) = setup("").await;
    origin.script("/item", Script::ok("max-age=60", "item"));
    origin.script("/list", Script::ok("max-age=60", "list"));
    origin.script(
        "/item-post",
        Script::ok("no-store", "ok").header("location", "/list"),
    );
    get(&http, &proxy, "/item", &[]).await;
    get(&http, &proxy, "/list", &[]).await;
    // A POST to /item invalidates /item.
    http.request(Method::POST, &proxy.url("/item"), &[], "x")
        .await
        .unwrap();
    get(&http, &proxy, "/item", &[]).await;
    assert_eq!(origin.hits("/item"), 3, "GET, POST, GET again");
    // A POST elsewhere whose Location is /list invalidates /list.
    http.request(Method::POST, &proxy.url("/item-post"), &[], "x")
        .await
        .unwrap();
    get(&http, &proxy, "/list", &[]).await;
    assert_eq!(origin.hits("/list"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let (origin, proxy, http) = setup("").await;
    let mut slow = Script::ok("max-age=1, stale-while-revalidate=30", "old");
    origin.script("/swr", slow.clone());
    get(&http, &proxy, "/swr", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    slow.body = "new".into();
    slow.delay = Duration::from_millis(300);
    origin.script("/swr", slow);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (http, url) = (http.clone(), proxy.url("/swr"));
        tasks.push(tokio::spawn(async move {
            http.request(Method::GET, &url, &[], "").await.unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.body, "old", "stale served at once");
        assert!(
            cache_status(&r).contains("stale-while-revalidate"),
            "{}",
            cache_status(&r)
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(origin.hits("/swr"), 2, "exactly one background refresh");
    let refreshed = get(&http, &proxy, "/swr", &[]).await;
    assert_eq!(refreshed.body, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_covers_a_failing_origin() {
    let (origin, proxy, http) = setup("").await;
    origin.script("/sie", Script::ok("max-age=1, stale-if-error=60", "good"));
    origin.script("/strict", Script::ok("max-age=1", "good"));
    // Stale when it arrives (its `Date` is 5 s old): kept for its
    // stale-if-error all the same.
    let date = imf_fixdate(std::time::SystemTime::now() - Duration::from_secs(5));
    origin.script(
        "/late",
        Script::ok("max-age=1, stale-if-error=60", "good").header("date", &date),
    );
    for path in ["/sie", "/strict", "/late"] {
        get(&http, &proxy, path, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for path in ["/sie", "/strict", "/late"] {
        origin.script(
            path,
            Script {
                status: 503,
                ..Script::ok("no-store", "down")
            },
        );
    }
    for path in ["/sie", "/late"] {
        let covered = get(&http, &proxy, path, &[]).await;
        assert_eq!(
            (covered.status, covered.body.as_str()),
            (200, "good"),
            "{path}"
        );
        assert!(
            cache_status(&covered).contains("stale-if-error"),
            "{path}: {}",
            cache_status(&covered)
        );
    }
    let exposed = get(&http, &proxy, "/strict", &[]).await;
    assert_eq!(
        exposed.status, 503,
        "no stale-if-error: the error goes through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_collapse_into_one_origin_request() {
    let (origin, proxy, http) = setup("").await;
    let mut script = Script::ok("max-age=60", "shared");
    script.delay = Duration::from_millis(300);
    origin.script("/hot", script);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (http, url) = (http.clone(), proxy.url("/hot"));
        tasks.push(tokio::spawn(async move {
            http.request(Method::GET, &url, &[], "").await.unwrap()
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "shared"));
    }
    assert_eq!(
        origin.hits("/hot"),
        1,
        "100 concurrent misses, one origin request"
    );
    let view = proxy.admin_json("/admin/cache").await;
    assert_eq!(view["counters"]["collapsed"], 99, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_key_prefix_and_tag() {
    let (origin, proxy, http) = setup("").await;
    for (path, tag) in [
        ("/a/1", "red"),
        ("/a/2", "blue"),
        ("/b/1", "red blue"),
        ("/c", "green"),
    ] {
        origin.script(
            path,
            Script::ok("max-age=60", path).header("surrogate-key", tag),
        );
        get(&http, &proxy, path, &[]).await;
    }
    let host = proxy
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let purge = |q: String| {
        let http = http.clone();
        let url = proxy.admin_url(&format!("/admin/cache?{q}"));
        async move { http.request(Method::DELETE, &url, &[], "").await.unwrap() }
    };
    let r = purge(format!("key={host}/c")).await;
    assert_eq!(r.body.trim(), "{\n  \"purged\": 1\n}");
    let r = purge(format!("prefix={host}/a/")).await;
    assert!(r.body.contains("\"purged\": 2"), "{}", r.body);
    let r = purge("tag=red".into()).await;
    assert!(r.body.contains("\"purged\": 1"), "{}", r.body);
    for path in ["/a/1", "/a/2", "/b/1", "/c"] {
        get(&http, &proxy, path, &[]).await;
        assert_eq!(origin.hits(path), 2, "{path} was purged");
    }
    let bad = purge("color=red".into()).await;
    assert_eq!(bad.status, 400);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("switchyard_cache_purges_total 4"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_method_works_from_loopback_when_enabled() {
    let (origin, proxy, http) = setup("purge_method = true").await;
    origin.script("/p", Script::ok("max-age=60", "p"));
    get(&http, &proxy, "/p", &[]).await;
    let url = proxy.url("/p");
    let purge = || http.request(Method::from_bytes(b"PURGE").unwrap(), &url, &[], "");
    let first = purge().await.unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "purged\n"));
    let again = purge().await.unwrap();
    assert_eq!(again.status, 404);
    assert_eq!(origin.hits("/p"), 1, "PURGE never reaches the origin");
    get(&http, &proxy, "/p", &[]).await;
    assert_eq!(origin.hits("/p"), 2, "purged, so fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_bound_evicts() {
    let (origin, proxy, http) = setup("capacity = \"64KiB\"\nmax_object_size = \"16KiB\"").await;
    let body = "x".repeat(4096);
    for i in 0..60 {
        let path = format!("/big/{i}");
        origin.script(&path, Script::ok("max-age=60", &body));
        get(&http, &proxy, &path, &[]).await;
    }
    let view = proxy.admin_json("/admin/cache").await;
    let bytes = view["bytes"].as_u64().unwrap();
    assert!(
        bytes <= 64 * 1024,
        "{bytes} bytes stored over a 64 KiB bound"
    );
    assert!(
        view["counters"]["evictions"].as_u64().unwrap() > 0,
        "{view}"
    );
    assert_eq!(view["counters"]["stores"], 60);
}

/// Both instances serve one site: clients reach them under one name.
const SITE: &[(&str, &str)] = &[("host", "shop.example")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_through_redis_and_ride_out_its_outage() {
    let mut redis = crate::support::redis::RedisServer::start();
    let origin = Origin::start().await;
    let cfg = config(&format!(
        "[cache]\nenabled = true\nredis_url = \"{}\"\n[upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        redis.url(),
        origin.addr
    ));
    let (a, b) = (Proxy::start(&cfg), Proxy::start(&cfg));
    let http = Http::default();

    origin.script("/shared", Script::ok("max-age=60", "warm"));
    get(&http, &a, "/shared", SITE).await;
    // The write-through is asynchronous; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from_b = get(&http, &b, "/shared", SITE).await;
    assert!(
        cache_status(&from_b).contains("shared-tier"),
        "{} / {}",
        cache_status(&from_b),
        a.logs()
    );
    assert_eq!(from_b.body, "warm");
    assert_eq!(
        origin.hits("/shared"),
        1,
        "the second instance never asked the origin"
    );

    // Redis goes away: both instances keep serving, from memory and origin.
    redis.stop();
    origin.script("/during", Script::ok("max-age=60", "still up"));
    for proxy in [&a, &b, &a] {
        let r = get(&http, proxy, "/during", SITE).await;
        assert_eq!((r.status, r.body.as_str()), (200, "still up"));
    }
    assert_eq!(origin.hits("/during"), 2, "each instance fetched once");
    let view = a.admin_json("/admin/cache").await;
    assert!(
        view["shared_tier"]["errors"].as_u64().unwrap() > 0,
        "{view}"
    );
    assert!(
        a.logs().contains("serving from memory only"),
        "the outage is logged"
    );

    // It comes back, and sharing resumes by itself.
    redis.restart();
    let mut n = 0;
    crate::support::eventually(Duration::from_secs(10), "sharing resumes", || {
        n += 1;
        let path = format!("/after/{n}");
        origin.script(&path, Script::ok("max-age=60", "again"));
        let (http, a, b) = (&http, &a, &b);
        async move {
            get(http, a, &path, SITE).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let r = get(http, b, &path, SITE).await;
            cache_status(&r).contains("shared-tier").then_some(())
        }
    })
    .await;
}

/// Each response is stored and its second request is a hit, whatever its
/// `Age` (RFC 9111 §5.1: an invalid `Age` is ignored, the first valid one
/// of several counts) — before, any `Age` that was not one integer kept
/// the response out of the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ages_that_are_not_one_delta_seconds_are_ignored_not_refused() {
    let (origin, proxy, http) = setup("").await;
    let cases: &[(&str, &[&str], u64)] = &[
        ("/nonnumeric", &["abc"], 0),
        ("/negative", &["-5"], 0),
        ("/float", &["1.5"], 0),
        ("/suffixed", &["30s"], 0),
        ("/parameter", &["30;x=1"], 0),
        ("/list", &["10, 20"], 0),
        ("/empty", &[""], 0),
        ("/two-lines", &["20", "40"], 20),
        ("/bad-then-good", &["x", "25"], 25),
    ];
    for (path, ages, _) in cases {
        let mut script = Script::ok("max-age=3600", path);
        for a in *ages {
            script = script.header("age", a);
        }
        origin.script(path, script);
    }
    for (path, _, counted) in cases {
        let first = get(&http, &proxy, path, &[]).await;
        assert_eq!(first.status, 200, "{path}");
        let second = get(&http, &proxy, path, &[]).await;
        assert!(
            cache_status(&second).starts_with("Switchyard; hit"),
            "{path}: {}",
            cache_status(&second)
        );
        assert_eq!(origin.hits(path), 1, "{path}");
        let age: u64 = second
            .header("age")
            .expect("an Age")
            .parse()
            .expect("one integer");
        assert!(age >= *counted && age < counted + 30, "{path}: Age {age}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_directive_names_are_case_insensitive() {
    let (origin, proxy, http) = setup("").await;
    origin.script("/upper-max-age", Script::ok("Max-Age=3600", "a"));
    origin.script("/upper-no-store", Script::ok("max-age=3600, No-Store", "b"));
    origin.script("/upper-private", Script::ok("PRIVATE, max-age=3600", "c"));
    origin.script(
        "/upper-no-cache",
        Script::ok("max-age=3600, No-Cache", "d").header("etag", "\"d\""),
    );
    for _ in 0..2 {
        for p in [
            "/upper-max-age",
            "/upper-no-store",
            "/upper-private",
            "/upper-no-cache",
        ] {
            get(&http, &proxy, p, &[]).await;
        }
    }
    assert_eq!(origin.hits("/upper-max-age"), 1, "Max-Age is max-age");
    assert_eq!(origin.hits("/upper-no-store"), 2, "No-Store is no-store");
    assert_eq!(origin.hits("/upper-private"), 2, "PRIVATE is private");
    assert_eq!(
        origin.hits("/upper-no-cache"),
        2,
        "No-Cache revalidates every time"
    );
    // A request's directives too.
    let forced = get(
        &http,
        &proxy,
        "/upper-max-age",
        &[("cache-control", "No-Cache")],
    )
    .await;
    assert!(
        !cache_status(&forced).starts_with("Switchyard; hit"),
        "{}",
        cache_status(&forced)
    );
    assert_eq!(origin.hits("/upper-max-age"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_updates_the_stored_headers_but_not_the_framing() {
    let (origin, proxy, http) = setup("").await;
    let mut script = Script::ok("max-age=1", "the stored body")
        .header("etag", "\"v1\"")
        .header("content-md5", "old-md5")
        .header("x-version", "1")
        .header("date", "Mon, 01 Jan 2024 00:00:00 GMT");
    script.not_modified = Some(vec![
        ("cache-control".into(), "max-age=3600".into()),
        ("etag".into(), "\"v2\"".into()),
        ("content-md5".into(), "new-md5".into()),
        ("x-version".into(), "2".into()),
        ("content-length".into(), "0".into()),
    ]);
    origin.script("/updated", script);
    let first = get(&http, &proxy, "/updated", &[]).await;
    assert_eq!(first.header("etag"), Some("\"v1\""));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let revalidated = get(&http, &proxy, "/updated", &[]).await;
    assert!(
        cache_status(&revalidated).contains("fwd-status=304"),
        "{}",
        cache_status(&revalidated)
    );
    for r in [&revalidated, &get(&http, &proxy, "/updated", &[]).await] {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "the stored body", "the body is the stored one");
        assert_eq!(r.header("etag"), Some("\"v2\""));
        assert_eq!(r.header("content-md5"), Some("new-md5"));
        assert_eq!(r.header("x-version"), Some("2"));
        assert_ne!(
            r.header("date"),
            Some("Mon, 01 Jan 2024 00:00:00 GMT"),
            "Date from the 304"
        );
        assert_eq!(r.header("content-length"), Some("15"), "not the 304's");
    }
    // The 304's max-age now decides: a hit, no third request.
    assert_eq!(origin.hits("/updated"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_cache_control_decides_for_this_cache_and_is_not_passed_on() {
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/cdn",
        Script::ok("no-store", "cdn").header("cdn-cache-control", "max-age=3600"),
    );
    origin.script(
        "/surrogate",
        Script::ok("private", "surrogate").header("surrogate-control", "Max-Age=3600"),
    );
    origin.script(
        "/ours-first",
        Script::ok("max-age=3600", "ours")
            .header("switchyard-cache-control", "no-store")
            .header("cdn-cache-control", "max-age=3600"),
    );
    for _ in 0..2 {
        for p in ["/cdn", "/surrogate", "/ours-first"] {
            let r = get(&http, &proxy, p, &[]).await;
            assert_eq!(r.status, 200, "{p}");
            for t in [
                "cdn-cache-control",
                "surrogate-control",
                "switchyard-cache-control",
            ] {
                assert!(r.header(t).is_none(), "{p}: {t} is for this cache only");
            }
        }
    }
    assert_eq!(
        origin.hits("/cdn"),
        1,
        "CDN-Cache-Control over Cache-Control: no-store"
    );
    assert_eq!(
        origin.hits("/surrogate"),
        1,
        "Surrogate-Control over Cache-Control: private"
    );
    assert_eq!(
        origin.hits("/ours-first"),
        2,
        "the first of the target list wins"
    );
    let hit = get(&http, &proxy, "/cdn", &[]).await;
    assert_eq!(
        hit.header("cache-control"),
        Some("no-store"),
        "downstream caches see the origin's own"
    );
    // With the list emptied, Cache-Control alone decides.
    let (origin, proxy, http) = setup("targeted_cache_control = []").await;
    origin.script(
        "/cdn",
        Script::ok("no-store", "cdn").header("cdn-cache-control", "max-age=3600"),
    );
    get(&http, &proxy, "/cdn", &[]).await;
    let r = get(&http, &proxy, "/cdn", &[]).await;
    assert_eq!(origin.hits("/cdn"), 2);
    assert_eq!(
        r.header("cdn-cache-control"),
        Some("max-age=3600"),
        "passed on when not ours"
    );
}

/// A caching origin answers errors on purpose (stale-if-error is exercised
/// that way): the default policies must not eject it, or every request
/// would get a 503 while a stale copy or a healthy answer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answering_errors_on_purpose_is_not_ejected_by_default() {
    let (origin, proxy, http) = setup("").await;
    origin.script("/sie", Script::ok("max-age=1, stale-if-error=600", "good"));
    origin.script("/fine", Script::ok("no-store", "fine"));
    get(&http, &proxy, "/sie", &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for status in [500u16, 502, 503, 504] {
        origin.script(
            "/sie",
            Script {
                status,
                ..Script::ok("no-store", "down")
            },
        );
        for _ in 0..10 {
            let r = get(&http, &proxy, "/sie", &[]).await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "good"),
                "stale-if-error over {status}"
            );
        }
    }
    let fine = get(&http, &proxy, "/fine", &[]).await;
    assert_eq!(
        (fine.status, fine.body.as_str()),
        (200, "fine"),
        "the origin is still in rotation"
    );
    origin.script("/sie", Script::ok("max-age=60", "recovered"));
    let back = get(&http, &proxy, "/sie", &[]).await;
    assert_eq!(back.body, "recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served_from_a_stored_full_response_and_partials_are_not_stored() {
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/file",
        Script::ok("max-age=3600", "0123456789abcdefghij")
            .header("etag", "\"f1\"")
            .header("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
    );
    // A backend's 206 is passed on, never stored (a later full request
    // must not get the part).
    origin.script(
        "/part",
        Script {
            status: 206,
            ..Script::ok("max-age=3600", "01").header("content-range", "bytes 0-1/20")
        },
    );
    for _ in 0..2 {
        let part = get(&http, &proxy, "/part", &[("range", "bytes=0-1")]).await;
        assert_eq!((part.status, part.body.as_str()), (206, "01"));
        assert!(
            cache_status(&part).contains("detail=partial"),
            "{}",
            cache_status(&part)
        );
    }
    assert_eq!(origin.hits("/part"), 2);
    let whole = get(&http, &proxy, "/file", &[]).await;
    assert_eq!(
        (whole.status, whole.body.as_str()),
        (200, "0123456789abcdefghij")
    );
    let hits_before = origin.hits("/file");
    // (request headers, status, body, Content-Range)
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str, Option<&'a str>);
    let cases: &[Case] = &[
        (&[("range", "bytes=0-3")], 206, "0123", Some("bytes 0-3/20")),
        (
            &[("range", "bytes=10-")],
            206,
            "abcdefghij",
            Some("bytes 10-19/20"),
        ),
        (
            &[("range", "bytes=-5")],
            206,
            "fghij",
            Some("bytes 15-19/20"),
        ),
        (
            &[("range", "bytes=15-99")],
            206,
            "fghij",
            Some("bytes 15-19/20"),
        ),
        (&[("range", "bytes=20-")], 416, "", Some("bytes */20")),
        (
            &[("range", "bytes=0-1,5-6")],
            200,
            "0123456789abcdefghij",
            None,
        ),
        (&[("range", "lines=0-1")], 200, "0123456789abcdefghij", None),
        (&[("range", "bytes=5-2")], 200, "0123456789abcdefghij", None),
        (
            &[("range", "bytes=0-3"), ("if-range", "\"f1\"")],
            206,
            "0123",
            Some("bytes 0-3/20"),
        ),
        (
            &[("range", "bytes=0-3"), ("if-range", "\"other\"")],
            200,
            "0123456789abcdefghij",
            None,
        ),
        (
            &[
                ("range", "bytes=0-3"),
                ("if-range", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ],
            206,
            "0123",
            Some("bytes 0-3/20"),
        ),
    ];
    for (headers, status, body, content_range) in cases {
        let r = get(&http, &proxy, "/file", headers).await;
        assert_eq!((r.status, r.body.as_str()), (*status, *body), "{headers:?}");
        assert_eq!(r.header("content-range"), *content_range, "{headers:?}");
        assert!(
            cache_status(&r).starts_with("Switchyard; hit"),
            "{headers:?}: {}",
            cache_status(&r)
        );
    }
    assert_eq!(
        origin.hits("/file"),
        hits_before,
        "every range came from the cache"
    );
}

/// RFC 9111 §5.2.2.3: with `must-understand`, a cache that implements the
/// status ignores `no-store`; one that does not, does not store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_understand_overrides_no_store_for_statuses_this_cache_implements() {
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/mu",
        Script::ok("must-understand, no-store, max-age=3600", "mu"),
    );
    origin.script(
        "/mu-unknown",
        Script {
            status: 299,
            ..Script::ok("must-understand, no-store, max-age=3600", "odd")
        },
    );
    origin.script("/no-store", Script::ok("no-store, max-age=3600", "ns"));
    for _ in 0..2 {
        for p in ["/mu", "/mu-unknown", "/no-store"] {
            get(&http, &proxy, p, &[]).await;
        }
    }
    assert_eq!(origin.hits("/mu"), 1, "understood status: no-store ignored");
    assert_eq!(
        origin.hits("/mu-unknown"),
        2,
        "status 299 is not understood"
    );
    assert_eq!(origin.hits("/no-store"), 2, "no-store alone still holds");
    let hit = get(&http, &proxy, "/mu", &[]).await;
    assert_eq!(
        hit.header("cache-control"),
        Some("must-understand, no-store, max-age=3600"),
        "passed on as the origin wrote it"
    );
}

/// RFC 9111 §5.2.2.4 and §5.2.2.7: `private="FIELD"` and `no-cache="FIELD"`
/// restrict the fields, not the response: it is stored without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualified_private_and_no_cache_keep_only_the_named_fields_out() {
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/private-field",
        Script::ok("max-age=3600, private=\"x-user, x-team\"", "p")
            .header("x-user", "alice")
            .header("x-team", "blue")
            .header("x-other", "kept"),
    );
    origin.script(
        "/no-cache-cookie",
        Script::ok("max-age=3600, no-cache=\"set-cookie\"", "c")
            .header("set-cookie", "session=secret"),
    );
    let first = get(&http, &proxy, "/private-field", &[]).await;
    assert_eq!(
        first.header("x-user"),
        Some("alice"),
        "the fetching client gets it"
    );
    let hit = get(&http, &proxy, "/private-field", &[]).await;
    assert!(
        cache_status(&hit).starts_with("Switchyard; hit"),
        "{}",
        cache_status(&hit)
    );
    assert_eq!((hit.header("x-user"), hit.header("x-team")), (None, None));
    assert_eq!(hit.header("x-other"), Some("kept"));
    assert_eq!(origin.hits("/private-field"), 1);

    get(&http, &proxy, "/no-cache-cookie", &[]).await;
    let hit = get(&http, &proxy, "/no-cache-cookie", &[]).await;
    assert!(
        cache_status(&hit).starts_with("Switchyard; hit"),
        "{}",
        cache_status(&hit)
    );
    assert_eq!(
        hit.header("set-cookie"),
        None,
        "one user's cookie never reaches another"
    );
    assert_eq!(origin.hits("/no-cache-cookie"), 1);
}

/// RFC 9111 §4.4: a 3xx answer to an unsafe method invalidates too, and so
/// do its `Location` and `Content-Location`; an error answer invalidates
/// nothing; a safe method never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_invalidate_their_locations_and_errors_invalidate_nothing() {
    let (origin, proxy, http) = setup("").await;
    for p in ["/a", "/b", "/c", "/d"] {
        origin.script(p, Script::ok("max-age=60", p));
    }
    origin.script(
        "/see-other",
        Script {
            status: 303,
            ..Script::ok("no-store", "")
                .header("location", "/b")
                .header("content-location", "/c")
        },
    );
    origin.script(
        "/fails",
        Script {
            status: 500,
            ..Script::ok("no-store", "").header("location", "/d")
        },
    );
    for p in ["/a", "/b", "/c", "/d"] {
        get(&http, &proxy, p, &[]).await;
    }
    http.request(Method::POST, &proxy.url("/see-other"), &[], "x")
        .await
        .expect("post");
    http.request(Method::DELETE, &proxy.url("/fails"), &[], "")
        .await
        .expect("delete");
    http.request(Method::OPTIONS, &proxy.url("/a"), &[], "")
        .await
        .expect("options");
    for p in ["/a", "/b", "/c", "/d"] {
        get(&http, &proxy, p, &[]).await;
    }
    assert_eq!(
        origin.hits("/a"),
        2,
        "OPTIONS passes through, /a stays cached"
    );
    assert_eq!(origin.hits("/b"), 2, "the 303's Location was invalidated");
    assert_eq!(
        origin.hits("/c"),
        2,
        "the 303's Content-Location was invalidated"
    );
    assert_eq!(origin.hits("/d"), 1, "a 500 invalidates nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_response_updates_or_invalidates_the_stored_get() {
    // RFC 9111 §4.3.5. The origin validates by Last-Modified only and
    // ignores If-Modified-Since, so the revalidating HEAD gets a 200.
    let (origin, proxy, http) = setup("").await;
    let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
    for path in ["/same", "/changed"] {
        origin.script(
            path,
            Script::ok("max-age=0", "stored body")
                .header("last-modified", lm)
                .header("x-version", "1"),
        );
        let first = get(&http, &proxy, path, &[]).await;
        assert_eq!(first.body, "stored body");
    }
    // Same validator: the stored GET takes the HEAD's fields and freshness.
    // (A body of the same length: a HEAD's Content-Length is compared too.)
    origin.script(
        "/same",
        Script::ok("max-age=300", "fresh body!")
            .header("last-modified", lm)
            .header("x-version", "2"),
    );
    let head = http
        .request(Method::HEAD, &proxy.url("/same"), &[], "")
        .await
        .expect("HEAD");
    assert_eq!(head.header("x-version"), Some("2"), "{:?}", head.headers);
    let r = get(&http, &proxy, "/same", &[]).await;
    assert!(cache_status(&r).contains("hit"), "{}", cache_status(&r));
    assert_eq!(r.header("x-version"), Some("2"));
    assert_eq!(r.body, "stored body", "the body is the stored one");
    assert_eq!(origin.hits("/same"), 2, "one GET, one HEAD");
    // A different validator: the stored GET is out of date and goes.
    origin.script(
        "/changed",
        Script::ok("max-age=300", "new body")
            .header("last-modified", "Mon, 07 Nov 1994 08:49:37 GMT")
            .header("x-version", "2"),
    );
    http.request(Method::HEAD, &proxy.url("/changed"), &[], "")
        .await
        .expect("HEAD");
    let r = get(&http, &proxy, "/changed", &[]).await;
    assert_eq!(r.body, "new body");
    assert_eq!(origin.hits("/changed"), 3, "GET, HEAD, then GET again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_location_does_not_make_a_response_reusable_for_that_uri() {
    // RFC 9110 §8.7: a cache cannot assume the response also represents
    // the resource Content-Location names.
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/cl/a",
        Script::ok("max-age=300", "from a").header("content-location", "/cl/b"),
    );
    origin.script("/cl/b", Script::ok("max-age=300", "from b"));
    assert_eq!(get(&http, &proxy, "/cl/a", &[]).await.body, "from a");
    let b = get(&http, &proxy, "/cl/b", &[]).await;
    assert_eq!(b.body, "from b");
    assert_eq!(origin.hits("/cl/b"), 1);
    let again = get(&http, &proxy, "/cl/a", &[]).await;
    assert!(cache_status(&again).contains("hit"));
    assert_eq!(again.body, "from a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_matches_normalised_field_values() {
    // RFC 9111 §4.1: values of identical semantics select the same variant.
    let (origin, proxy, http) = setup("").await;
    origin.script(
        "/v",
        Script::ok("max-age=300", "english").header("vary", "Accept-Language"),
    );
    let lang = |v: &'static str| vec![("accept-language", v)];
    let first = get(&http, &proxy, "/v", &lang("en-US, fr;q=0.5")).await;
    assert!(cache_status(&first).contains("stored"));
    for same in ["en-us,fr;q=0.5", "EN-US ,  FR;Q=0.5"] {
        let r = get(&http, &proxy, "/v", &lang(same)).await;
        assert!(
            cache_status(&r).contains("hit"),
            "{same}: {}",
            cache_status(&r)
        );
    }
    assert_eq!(origin.hits("/v"), 1);
    let other = get(&http, &proxy, "/v", &lang("de")).await;
    assert!(!cache_status(&other).contains("hit"));
    assert_eq!(origin.hits("/v"), 2);
}

/// The `cache-size` optimizer grows a cache whose hit ratio is low, while
/// traffic flows: the new bound is in force (admin, metrics, the
/// optimizer's owners), and a response stored before the resize is still
/// served from the cache after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_size_optimizer_grows_the_cache_live_and_keeps_what_it_holds() {
    let (origin, proxy, http) = setup(&format!(
        "capacity = \"1MiB\"\nmax_object_size = \"256KiB\"\n\
         [optimizer]\ninterval = \"100ms\"\n\
         [optimizer.bounds.cache_capacity]\nmin = \"1MiB\"\nmax = \"8MiB\"\nmax_step = \"1MiB\"\n{}",
        crate::support::plugin(
            "sizer",
            "optimizer",
            "cache_size",
            "{ target_hit_ratio = 0.9, min_requests = 20, step = 0.5 }"
        )
    ))
    .await;
    origin.script("/hot", Script::ok("max-age=600", "kept"));
    let page = "p".repeat(64 * 1024);
    for i in 0..200 {
        origin.script(&format!("/page/{i}"), Script::ok("max-age=600", &page));
    }
    assert_eq!(get(&http, &proxy, "/hot", &[]).await.status, 200);
    assert_eq!(origin.hits("/hot"), 1);

    let mut next = 0;
    let grown = crate::support::eventually(
        Duration::from_secs(60),
        "the cache grown to at least 3 MiB",
        || {
            let (http, proxy) = (&http, &proxy);
            next += 10;
            let pages = next - 10..next;
            async move {
                for i in pages {
                    let r = get(http, proxy, &format!("/page/{}", i % 200), &[]).await;
                    assert_eq!(r.status, 200);
                    // The hot object stays popular (and a hit) throughout.
                    assert_eq!(get(http, proxy, "/hot", &[]).await.body, "kept");
                }
                let v = proxy.admin_json("/admin/cache").await;
                let capacity = v["capacity_bytes"].as_u64().expect("capacity");
                (capacity >= 3 << 20).then_some(capacity)
            }
        },
    )
    .await;
    assert!(grown <= 8 << 20, "held to the bound: {grown}");
    assert_eq!(
        origin.hits("/hot"),
        1,
        "what the cache held before the resize is still served from it"
    );

    let opt = proxy.admin_json("/admin/optimizer").await;
    assert_eq!(
        opt["owners"]["cache_capacity_bytes"]["owner"], "sizer",
        "{opt}"
    );
    let reasons: Vec<String> = opt["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter_map(|d| d["reason"].as_str().map(str::to_string))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("hit ratio") && r.contains("MiB")),
        "{reasons:?}"
    );
    let metrics = proxy.metrics().await;
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("switchyard_cache_capacity_bytes "))
        .expect("the capacity gauge");
    let exported: f64 = gauge
        .split(' ')
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(exported >= (3u64 << 20) as f64, "{gauge}");
}
