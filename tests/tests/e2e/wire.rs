//! The HTTP/1 wing through the real binary: what the proxy refuses and with
//! which status, framing written from the proxy's own decision, backends
//! held to the same rules, forwarding headers trusted only from trusted
//! peers, and one normalized host for routing and the cache key.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::origin::{Origin, Script};
use crate::support::{Proxy, TestBackend, backends_toml, config, request};

fn app(b: &TestBackend, extra: &str) -> String {
    format!(
        "{extra}\n{}",
        config(&format!("[upstreams.app]\n{}\n", backends_toml(&[b], &[])))
    )
}

/// Sends `bytes` on a fresh connection and reads until the proxy closes it.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Every request the issue tracker listed as forwarded, with the answer
/// nginx gives it (or a stricter one); none reaches the backend.
const REFUSED: &[(&str, &str)] = &[
    (
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        "400 Bad Request: invalid content-length",
    ),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello",
        "400 Bad Request: invalid content-length",
    ),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "400 Bad Request: more than one content-length",
    ),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "400 Bad Request: more than one content-length",
    ),
    ("GET / HTTP/1.1\r\n\r\n", "400 Bad Request: missing host"),
    (
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "400 Bad Request: more than one host",
    ),
    (
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "400 Bad Request: invalid character in host",
    ),
    (
        "GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "400 Bad Request: userinfo in the authority",
    ),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "501 Not Implemented: unsupported transfer-coding",
    ),
    (
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        "400 Bad Request: both transfer-encoding and content-length",
    ),
    (
        "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
        "400 Bad Request: fragment in the request target",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_what_nginx_answers_and_never_reach_the_backend() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, ""));
    for (request, answer) in REFUSED {
        let resp = raw(proxy.addr, request.as_bytes()).await;
        let status_line = format!("HTTP/1.1 {}\r\n", &answer[..answer.find(':').unwrap_or(0)]);
        assert!(resp.starts_with(&status_line), "{request:?} got {resp:?}");
        assert!(
            resp.ends_with(&format!("{answer}\n")),
            "{request:?} got {resp:?}"
        );
        assert!(resp.contains("connection: close\r\n"), "{resp:?}");
    }
    assert_eq!(b.requests(), 0, "nothing malformed reached the backend");
    // The proxy still serves.
    let resp = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunk_sizes_end_the_request_with_400() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, ""));
    for size in ["+5", " 5", "5 ", "0x5", "5\n"] {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n"
        );
        let resp = raw(proxy.addr, req.as_bytes()).await;
        assert!(
            resp.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{size:?}: {resp}"
        );
        assert!(
            resp.ends_with("400 Bad Request: the request body could not be read\n"),
            "{size:?}: {resp}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_and_host_are_written_by_the_proxy_never_copied() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&app(&b, ""));
    let seen = |name: &str| {
        b.ctl
            .last_headers
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|h| h.get(name).map(|v| v.to_str().unwrap_or("").to_string()))
    };
    // `Connection` cannot take away the headers the proxy manages, and every
    // Connection line counts.
    let resp = raw(
        proxy.addr,
        b"POST /c HTTP/1.1\r\nHost: Shop.Example:80\r\nConnection: Host, Content-Length\r\n\
          Connection: x-second, close\r\nX-Second: 1\r\nContent-Length: 005\r\n\r\nhello",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert_eq!(seen("host").as_deref(), Some("shop.example"), "normalized");
    assert_eq!(seen("content-length").as_deref(), Some("5"), "re-rendered");
    assert_eq!(
        seen("x-second"),
        None,
        "a second Connection line is honoured"
    );
    assert_eq!(
        b.ctl.last_body.lock().unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    // A chunked body goes on chunked, re-encoded.
    let resp = raw(
        proxy.addr,
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert_eq!(seen("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(seen("content-length"), None);
    assert_eq!(
        b.ctl.last_body.lock().unwrap().as_deref(),
        Some(&b"hello"[..])
    );
}

/// A backend that answers every request with `response`, as bytes.
async fn raw_backend(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_held_to_the_same_framing_rules() {
    let cases: &[(&[u8], u16, &str)] = &[
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            200,
            "hello",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
            502,
            "",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5,5\r\n\r\nhello",
            502,
            "",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            502,
            "",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            502,
            "",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            200,
            "hello",
        ),
    ];
    for (response, status, body) in cases {
        let backend = raw_backend(response).await;
        let cfg = config(&format!(
            "[upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n\
             [upstreams.app.retry]\nattempts = 1\n"
        ));
        let proxy = Proxy::start(&cfg);
        let r = request(Method::GET, &proxy.url("/"), &[], "")
            .await
            .expect("request");
        let shown = String::from_utf8_lossy(response);
        assert_eq!(r.status, *status, "{shown:?}: {}", r.body);
        if *status == 200 {
            assert_eq!(r.body, *body, "{shown:?}");
        } else {
            assert_eq!(r.body, "502 Bad Gateway: backend failed\n", "{shown:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_trusted_only_from_trusted_proxies() {
    let b = TestBackend::start("b").await;
    let forged = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-real-ip", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9;proto=https"),
    ];
    let seen = |b: &TestBackend, name: &str| {
        b.ctl
            .last_headers
            .lock()
            .unwrap()
            .as_ref()
            .map(|h| {
                h.get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .unwrap_or_default()
    };
    // Untrusted (the default): replaced, whatever the client claims.
    let proxy = Proxy::start(&app(&b, ""));
    let mut headers = vec![("host", "shop.example")];
    headers.extend(forged);
    let r = request(Method::GET, &proxy.url("/"), &headers, "")
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(seen(&b, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(seen(&b, "x-forwarded-proto"), "http");
    assert_eq!(seen(&b, "x-forwarded-host"), "shop.example");
    assert_eq!(seen(&b, "x-real-ip"), "127.0.0.1");
    assert_eq!(
        seen(&b, "forwarded"),
        "for=127.0.0.1;host=shop.example;proto=http"
    );
    drop(proxy);
    // Trusted: appended to, and the load balancer's own view kept.
    let proxy = Proxy::start(&app(&b, "").replacen(
        "[listen]\naddress = \"127.0.0.1:0\"\n",
        "[listen]\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        1,
    ));
    let r = request(Method::GET, &proxy.url("/"), &headers, "")
        .await
        .expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(seen(&b, "x-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert_eq!(seen(&b, "x-forwarded-proto"), "https");
    assert_eq!(seen(&b, "x-forwarded-host"), "evil.example");
    assert_eq!(seen(&b, "x-real-ip"), "203.0.113.9");
    assert_eq!(
        seen(&b, "forwarded"),
        "for=203.0.113.9;proto=https, for=127.0.0.1;host=shop.example;proto=http"
    );
}

/// Two origins behind host routes, both caching `/x` under their own body.
async fn two_hosts() -> (Origin, Origin, Proxy) {
    let (a, b) = (Origin::start().await, Origin::start().await);
    a.script("/x", Script::ok("max-age=300", "from-a"));
    b.script("/x", Script::ok("max-age=300", "from-b"));
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [cache]\nenabled = true\n\
         [[routes]]\nhost = \"a.example\"\nupstream = \"a\"\n\
         [[routes]]\nhost = \"b.example\"\nupstream = \"b\"\n\
         [upstreams.a]\nbackends = [{{ address = \"{}\" }}]\n\
         [upstreams.b]\nbackends = [{{ address = \"{}\" }}]\n",
        a.addr, b.addr
    ));
    (a, b, proxy)
}

fn body_of(resp: &str) -> &str {
    resp.split("\r\n\r\n").nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_cannot_be_poisoned_across_hosts_over_http1() {
    let (a, b, proxy) = two_hosts().await;
    // Routed by the absolute target's host, as RFC 9112 §3.2.2 says.
    let resp = raw(
        proxy.addr,
        b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert_eq!(body_of(&resp), "from-a");
    assert_eq!(
        a.last_headers("/x").and_then(|h| h.get("host").cloned()),
        Some(http::HeaderValue::from_static("a.example")),
        "the Host sent upstream agrees with the route"
    );
    // An ordinary request for b.example gets b's answer, not a's.
    let resp = raw(
        proxy.addr,
        b"GET /x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(body_of(&resp), "from-b", "{resp}");
    assert!(!resp.contains("; hit"), "{resp}");
    assert_eq!(b.hits("/x"), 1);
    // a.example's own entry is the one the first request stored.
    let resp = raw(
        proxy.addr,
        b"GET /x HTTP/1.1\r\nHost: A.EXAMPLE\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(body_of(&resp), "from-a", "{resp}");
    assert!(resp.contains("cache-status: Switchyard; hit"), "{resp}");
    assert_eq!(a.hits("/x"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_cannot_be_poisoned_across_hosts_over_http2() {
    let (a, b, proxy) = two_hosts().await;
    // One HTTP/2 connection to the proxy, whatever the authority says.
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    let (client, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let port = proxy.addr.port();
    let send = |uri: String, host: Option<&'static str>| {
        let mut client = client.clone();
        async move {
            let mut req = http::Request::get(uri);
            if let Some(h) = host {
                req = req.header("host", h);
            }
            let resp = client
                .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
                .await
                .expect("h2 request");
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // :authority and Host disagree: refused, nothing stored, nothing sent.
    let (status, body) = send(format!("http://a.example:{port}/x"), Some("b.example")).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "400 Bad Request: host differs from :authority\n")
    );
    assert_eq!(a.hits("/x") + b.hits("/x"), 0);
    // :authority alone routes and keys.
    let (status, body) = send(format!("http://a.example:{port}/x"), None).await;
    assert_eq!((status, body.as_str()), (200, "from-a"));
    let (status, body) = send(format!("http://b.example:{port}/x"), None).await;
    assert_eq!((status, body.as_str()), (200, "from-b"));
    assert_eq!((a.hits("/x"), b.hits("/x")), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_trailers_reach_clients_that_accept_them() {
    let backend = raw_backend(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
          5\r\nhello\r\n0\r\nX-Checksum: abc\r\nContent-Length: 99\r\n\r\n",
    )
    .await;
    let cfg = config(&format!(
        "[upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n"
    ));
    let proxy = Proxy::start(&cfg);
    let with_te = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        with_te.contains("transfer-encoding: chunked\r\n"),
        "{with_te}"
    );
    // The trailer arrives; a framing field in the trailer section does not.
    assert!(
        with_te.ends_with("5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"),
        "{with_te:?}"
    );
    let without = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!without.contains("x-checksum: abc"), "{without:?}");
    assert!(without.ends_with("5\r\nhello\r\n0\r\n\r\n"), "{without:?}");
}
