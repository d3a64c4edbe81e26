//! Bad requests and failing backends get the right status, headers are
//! rewritten as documented, and routing picks the most specific route.

use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Http, Proxy, TestBackend, backends_toml, config, get, request};

fn app(b: &TestBackend, extra: &str) -> String {
    format!(
        "{extra}\n{}",
        config(&format!("[upstreams.app]\n{}\n", backends_toml(&[b], &[])))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_get_431() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, "[limits]\nmax_header_bytes = 2048"));
    let big = "x".repeat(3000);
    let r = request(Method::GET, &proxy.url("/"), &[("x-big", &big)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 431);
    // Far beyond the limit: refused while the head is still being read.
    let huge = "y".repeat(20_000);
    let r = request(Method::GET, &proxy.url("/"), &[("x-huge", &huge)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(b.requests(), 0, "nothing oversize reached the backend");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413_declared_or_chunked() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, "[limits]\nmax_body_bytes = 1024"));
    let r = request(Method::POST, &proxy.url("/upload"), &[], &"z".repeat(2000))
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        b.requests(),
        0,
        "a declared oversize body is refused before the backend"
    );

    let chunk = "a".repeat(800);
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let resp = raw(proxy.addr, req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");

    let r = request(Method::POST, &proxy.url("/upload"), &[], &"z".repeat(1000))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "a body under the limit passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_by_the_header_timeout() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, "[timeouts]\nheader_read = \"300ms\""));
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the proxy closes a slow connection")
        .unwrap_or(0);
    let waited = started.elapsed();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(
        n == 0 || reply.starts_with("HTTP/1.1 408"),
        "closed, or 408: {reply}"
    );
    assert!(
        waited >= Duration::from_millis(250),
        "not before the timeout: {waited:?}"
    );
    assert_eq!(b.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_map_to_502_504_and_503() {
    let b = TestBackend::start("b").await;
    let cfg = app(&b, "[timeouts]\nbackend_response = \"200ms\"")
        + "[upstreams.app.retry]\nattempts = 1\n[upstreams.app.outlier]\nconsecutive_failures = 0\n";
    let proxy = Proxy::start(&cfg);
    b.set_latency(1500);
    let r = get(&proxy.url("/slow")).await.unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "504 Gateway Timeout: backend timed out\n");
    b.set_latency(0);
    b.kill();
    let r = get(&proxy.url("/dead")).await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.body, "502 Bad Gateway: backend unreachable\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_rewritten_for_the_backend_and_the_client() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, ""));
    let r = request(
        Method::GET,
        &proxy.url("/h"),
        &[
            ("host", "shop.example.com"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("via"), Some("1.1 switchyard"));
    let seen = b.ctl.last_headers.lock().unwrap().clone().unwrap();
    let h = |n: &str| {
        seen.get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        h("x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "an untrusted client's X-Forwarded-For is replaced"
    );
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(h("x-forwarded-host").as_deref(), Some("shop.example.com"));
    assert_eq!(
        h("host").as_deref(),
        Some("shop.example.com"),
        "the client's Host is preserved"
    );
    assert_eq!(h("via").as_deref(), Some("1.1 switchyard"));
    assert_eq!(
        h("x-secret"),
        None,
        "headers named in Connection are hop-by-hop"
    );
    assert_eq!(h("keep-alive"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_host_then_longest_prefix_and_404_otherwise() {
    let (web, api, v2, admin) = (
        TestBackend::start("web").await,
        TestBackend::start("api").await,
        TestBackend::start("v2").await,
        TestBackend::start("admin").await,
    );
    let up = |name: &str, b: &TestBackend| {
        format!(
            "[upstreams.{name}]\nbackends = [{{ address = \"{}\" }}]\n",
            b.addr
        )
    };
    let cfg = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [[routes]]\nhost = \"*.example.com\"\npath_prefix = \"/\"\nupstream = \"web\"\n\
         [[routes]]\nhost = \"*.example.com\"\npath_prefix = \"/api\"\nupstream = \"api\"\n\
         [[routes]]\nhost = \"*.example.com\"\npath_prefix = \"/api/v2\"\nupstream = \"v2\"\n\
         [[routes]]\nhost = \"admin.example.com\"\npath_prefix = \"/\"\nupstream = \"admin\"\n\
         {}{}{}{}",
        up("web", &web),
        up("api", &api),
        up("v2", &v2),
        up("admin", &admin)
    );
    let proxy = Proxy::start(&cfg);
    let http = Http::default();
    let via = |host: &'static str, path: &'static str| {
        let http = http.clone();
        let url = proxy.url(path);
        async move {
            http.request(Method::GET, &url, &[("host", host)], "")
                .await
                .unwrap()
        }
    };
    assert_eq!(via("www.example.com", "/").await.backend(), "web");
    assert_eq!(via("www.example.com", "/api/users").await.backend(), "api");
    assert_eq!(
        via("www.example.com", "/api/v2/users").await.backend(),
        "v2"
    );
    assert_eq!(
        via("ADMIN.example.com:8080", "/api/v2").await.backend(),
        "admin"
    );
    let r = via("other.org", "/").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "404 Not Found: no route for this host and path\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_is_served() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, ""));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<Bytes>>();
    let resp = client.get(proxy.url("/h2").parse().unwrap()).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["via"], "1.1 switchyard");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"b");
    let seen = b.ctl.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["via"], "2 switchyard");
    assert_eq!(seen["host"], proxy.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_wire_rules_pipelining_continue_and_ambiguous_framing() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, ""));
    // Three pipelined requests on one connection, answered in order.
    let resp = raw(
        proxy.addr,
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{resp}");
    assert!(resp.contains("connection: close\r\n"), "{resp}");
    assert_eq!(b.requests(), 3);

    // HTTP/1.0 without keep-alive: answered, then closed (raw reads to EOF).
    let resp = raw(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");

    // Expect: 100-continue gets the interim answer before the final one.
    let resp = raw(
        proxy.addr,
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\
          Connection: close\r\n\r\nhello",
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{resp}"
    );

    // Both framings at once is a smuggling vector: refused, never forwarded.
    let before = b.requests();
    let resp = raw(
        proxy.addr,
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{resp}");
    assert!(
        resp.ends_with("400 Bad Request: both transfer-encoding and content-length\n"),
        "{resp}"
    );
    let resp = raw(proxy.addr, b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n").await;
    assert!(
        resp.ends_with("400 Bad Request: malformed request head\n"),
        "{resp}"
    );
    assert_eq!(
        b.requests(),
        before,
        "nothing malformed reached the backend"
    );
}
