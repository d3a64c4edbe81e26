//! Response compression through the real proxy: `Accept-Encoding`
//! negotiation with q-values, what is never compressed, the cache storing
//! one variant per coding, revalidating a compressed variant, HEAD, a
//! stream compressed as it arrives, and `curl --compressed` as the client.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::{Http, Resp};
use crate::support::origin::{Origin, Script};
use crate::support::proxy::Proxy;

/// A JSON document of about 20 KB.
fn json() -> String {
    let items: Vec<String> = (0..500)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item {i}\",\"ok\":true}}"))
        .collect();
    format!("{{\"items\":[{}]}}", items.join(","))
}

/// The content as a client decoding `coding` sees it.
fn decode(coding: Option<&str>, data: &[u8]) -> String {
    let mut out = Vec::new();
    match coding {
        None => out.extend_from_slice(data),
        Some("gzip") => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .expect("gzip decodes");
        }
        Some("br") => {
            brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .expect("br decodes");
        }
        Some("zstd") => {
            zstd::stream::read::Decoder::new(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .expect("zstd decodes");
        }
        Some(other) => panic!("unexpected coding {other}"),
    }
    String::from_utf8(out).expect("utf-8")
}

fn proxy_for(origin: &Origin, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [compression]\nenabled = true\n{extra}\n\
         [upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        origin.addr
    ))
}

fn json_script(cache_control: &str) -> Script {
    Script::ok(cache_control, &json())
        .header("content-type", "application/json")
        .header("etag", "\"v1\"")
}

/// An origin serving the JSON document at `path` with `cache_control`,
/// behind a proxy that caches and compresses.
async fn caching(path: &str, cache_control: &str) -> (Origin, Proxy, Http) {
    let origin = Origin::start().await;
    origin.script(path, json_script(cache_control));
    let proxy = proxy_for(
        &origin,
        "[cache]\nenabled = true\n[[routes]]\nupstream = \"app\"\n",
    );
    (origin, proxy, Http::default())
}

async fn get(http: &Http, proxy: &Proxy, path: &str, accept: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
    http.request(Method::GET, &proxy.url(path), &headers, "")
        .await
        .expect("request")
}

fn varies_on_accept_encoding(r: &Resp) -> bool {
    r.headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim().eq_ignore_ascii_case("accept-encoding"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_encoding_q_values_choose_the_coding() {
    let origin = Origin::start().await;
    origin.script("/data", json_script("no-store"));
    let proxy = proxy_for(&origin, "[[routes]]\nupstream = \"app\"\n");
    let http = Http::default();
    let cases: [(Option<&str>, Option<&str>); 14] = [
        (Some("gzip"), Some("gzip")),
        (Some("br"), Some("br")),
        (Some("zstd"), Some("zstd")),
        // Equal q-values: the configured preference (zstd, br, gzip).
        (Some("gzip, deflate, br, zstd"), Some("zstd")),
        (Some("gzip;q=1.0, br;q=0.5"), Some("gzip")),
        (Some("GZIP;Q=0.9, Br;q=0.8"), Some("gzip")),
        (Some("x-gzip"), Some("gzip")),
        (Some("*"), Some("zstd")),
        (Some("zstd;q=0, *;q=0.5"), Some("br")),
        // Refusals and what cannot be served: identity.
        (Some("gzip;q=0"), None),
        (Some("*;q=0"), None),
        (Some("deflate"), None),
        (Some("identity"), None),
        (None, None),
    ];
    for (accept, expected) in cases {
        let r = get(&http, &proxy, "/data", accept).await;
        assert_eq!(r.status, 200, "{accept:?}");
        assert_eq!(r.header("content-encoding"), expected, "{accept:?}");
        assert_eq!(decode(expected, &r.bytes), json(), "{accept:?}");
        assert!(varies_on_accept_encoding(&r), "{accept:?}: Vary");
        // The backend was asked for exactly what is served.
        let asked = origin.last_headers("/data").expect("origin saw it");
        assert_eq!(
            asked.get("accept-encoding").and_then(|v| v.to_str().ok()),
            Some(expected.unwrap_or("identity")),
            "{accept:?}"
        );
        if expected.is_some() {
            assert_eq!(r.header("etag"), Some("W/\"v1\""), "{accept:?}");
            assert_eq!(r.header("content-length"), None, "{accept:?}");
            assert!(r.bytes.len() * 4 < json().len(), "{accept:?}: compressed");
        } else {
            assert_eq!(r.header("etag"), Some("\"v1\""), "{accept:?}");
            assert_eq!(
                r.header("content-length"),
                Some(json().len().to_string().as_str())
            );
        }
    }
    let gzip = [("algorithm", "gzip"), ("direction", "in")];
    assert!(
        proxy
            .metric("switchyard_compression_bytes_total", &gzip)
            .await
            >= (4 * json().len()) as f64
    );
    let out = proxy
        .metric(
            "switchyard_compression_bytes_total",
            &[("algorithm", "gzip"), ("direction", "out")],
        )
        .await;
    assert!(out > 0.0 && out * 4.0 < (4 * json().len()) as f64, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_must_not_be_compressed_passes_as_sent() {
    let origin = Origin::start().await;
    let big = json();
    origin.script(
        "/small",
        Script::ok("no-store", "{\"small\":true}").header("content-type", "application/json"),
    );
    origin.script(
        "/png",
        Script::ok("no-store", &big).header("content-type", "image/png"),
    );
    origin.script(
        "/untyped",
        Script {
            headers: vec![],
            ..Script::ok("", &big)
        },
    );
    origin.script(
        "/encoded",
        Script::ok("no-store", &big)
            .header("content-type", "application/json")
            .header("content-encoding", "br"),
    );
    origin.script(
        "/no-transform",
        Script::ok("no-store, No-Transform", &big).header("content-type", "application/json"),
    );
    let mut partial = Script::ok("no-store", &big[..1000])
        .header("content-type", "application/json")
        .header("content-range", &format!("bytes 0-999/{}", big.len()));
    partial.status = 206;
    origin.script("/partial", partial);
    origin.script("/plain/data", json_script("no-store"));
    origin.script(
        "/csv/report",
        Script::ok("no-store", &big.replace(',', "\n")).header("content-type", "text/csv"),
    );
    origin.script("/csv/data", json_script("no-store"));
    origin.script(
        "/csv/big",
        Script::ok("no-store", &big.repeat(4)).header("content-type", "text/csv"),
    );
    let proxy = proxy_for(
        &origin,
        "[[routes]]\npath_prefix = \"/plain\"\nupstream = \"app\"\ncompression = false\n\
         [[routes]]\npath_prefix = \"/csv\"\nupstream = \"app\"\n\
         compression_types = [\"text/csv\"]\ncompression_min_size = \"64 KiB\"\n\
         [[routes]]\nupstream = \"app\"\n",
    );
    let http = Http::default();
    let accept = Some("gzip, br, zstd");
    for (path, body) in [
        ("/small", "{\"small\":true}".to_string()),
        ("/png", big.clone()),
        ("/untyped", big.clone()),
        ("/encoded", big.clone()),
        ("/no-transform", big.clone()),
        ("/partial", big[..1000].to_string()),
        ("/plain/data", big.clone()),
        ("/csv/data", big.clone()),
    ] {
        let r = get(&http, &proxy, path, accept).await;
        let sent = if path == "/encoded" { Some("br") } else { None };
        assert_eq!(r.header("content-encoding"), sent, "{path}");
        assert_eq!(r.body, body, "{path}: the bytes the backend sent");
        assert!(!varies_on_accept_encoding(&r), "{path}: no Vary added");
    }
    // The route's own type list and minimum: a 20 KB CSV stays below its
    // 64 KiB, a larger one is compressed.
    let r = get(&http, &proxy, "/csv/report", accept).await;
    assert_eq!(
        r.header("content-encoding"),
        None,
        "below the route's 64 KiB"
    );
    let r = get(&http, &proxy, "/csv/big", accept).await;
    assert_eq!(r.header("content-encoding"), Some("zstd"));
    assert_eq!(decode(Some("zstd"), &r.bytes), big.repeat(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_one_variant_per_coding_and_never_recompresses() {
    let (origin, proxy, http) = caching("/c", "max-age=300").await;
    // (Accept-Encoding, served coding, origin requests so far)
    let steps: [(Option<&str>, Option<&str>, u64); 8] = [
        (Some("gzip"), Some("gzip"), 1),
        (Some("deflate, GZIP"), Some("gzip"), 1),
        (Some("br"), Some("br"), 2),
        (Some("gzip;q=0.5, br"), Some("br"), 2),
        (None, None, 3),
        (Some("identity"), None, 3),
        (Some("zstd"), Some("zstd"), 4),
        (Some("gzip, br, zstd"), Some("zstd"), 4),
    ];
    for (accept, coding, hits) in steps {
        let r = get(&http, &proxy, "/c", accept).await;
        assert_eq!(r.header("content-encoding"), coding, "{accept:?}");
        assert_eq!(decode(coding, &r.bytes), json(), "{accept:?}");
        assert_eq!(origin.hits("/c"), hits, "{accept:?}: origin requests");
    }
    for algorithm in ["gzip", "br", "zstd"] {
        let compressed = proxy
            .metric(
                "switchyard_compressed_responses_total",
                &[("algorithm", algorithm)],
            )
            .await;
        assert_eq!(
            compressed, 1.0,
            "{algorithm}: compressed once, then served as stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_compressed_variant_revalidates_by_its_weak_etag() {
    // Stored, but every use must be revalidated.
    let (origin, proxy, http) = caching("/r", "no-cache").await;
    let first = get(&http, &proxy, "/r", Some("gzip")).await;
    assert_eq!(first.header("etag"), Some("W/\"v1\""));
    for _ in 0..2 {
        let r = get(&http, &proxy, "/r", Some("gzip")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("etag"), Some("W/\"v1\""), "still the variant's");
        assert_eq!(decode(Some("gzip"), &r.bytes), json());
        let asked = origin.last_headers("/r").expect("revalidated");
        assert_eq!(asked["if-none-match"], "W/\"v1\"");
    }
    assert_eq!(origin.hits("/r"), 3);
    let compressed = proxy
        .metric(
            "switchyard_compressed_responses_total",
            &[("algorithm", "gzip")],
        )
        .await;
    assert_eq!(compressed, 1.0, "304s refresh the stored variant");
    // A client's own conditional request against the stored variant.
    let r = http
        .request(
            Method::GET,
            &proxy.url("/r"),
            &[("accept-encoding", "gzip"), ("if-none-match", "W/\"v1\"")],
            "",
        )
        .await
        .expect("request");
    assert_eq!(r.status, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_headers_get_would() {
    let origin = Origin::start().await;
    origin.script("/h", json_script("no-store"));
    let proxy = proxy_for(&origin, "[[routes]]\nupstream = \"app\"\n");
    let http = Http::default();
    let head = http
        .request(
            Method::HEAD,
            &proxy.url("/h"),
            &[("accept-encoding", "br")],
            "",
        )
        .await
        .expect("HEAD");
    let get = get(&http, &proxy, "/h", Some("br")).await;
    for name in ["content-encoding", "etag", "vary", "content-type"] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    assert_eq!(head.header("content-encoding"), Some("br"));
    assert!(head.bytes.is_empty());
}

/// A backend that sends one event, then waits for the test's word before
/// sending the second and ending the stream.
async fn stalling_backend() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "the proxy closed before sending its request");
            head.extend_from_slice(&buf[..n]);
        }
        let first = "data: first\n\n";
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
             transfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
            first.len()
        );
        s.write_all(reply.as_bytes()).await.expect("write");
        let _ = wait.await;
        let second = "data: second\n\n";
        let rest = format!("{:x}\r\n{second}\r\n0\r\n\r\n", second.len());
        s.write_all(rest.as_bytes()).await.expect("write");
        let _ = s.read(&mut buf).await;
    });
    (addr, go)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_compressed_as_it_arrives() {
    let (addr, go) = stalling_backend().await;
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [compression]\nenabled = true\nmin_size = 0\n[[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\nbackends = [{{ address = \"{addr}\" }}]\n"
    ));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let req = http::Request::get(proxy.url("/events"))
        .header("accept-encoding", "gzip")
        .body(Empty::new())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response headers in time")
        .expect("response");
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let mut body = resp.into_body();
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let mut go = Some(go);
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect(
                "the first event should arrive while the backend waits: \
                 the compressor must flush when its input stalls",
            );
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.expect("frame").into_data() {
            decoder.write_all(&data).expect("gzip decodes");
            decoder.flush().expect("flush");
        }
        let seen = String::from_utf8_lossy(decoder.get_ref()).into_owned();
        if seen.contains("data: first\n\n")
            && let Some(go) = go.take()
        {
            assert!(!seen.contains("second"));
            let _ = go.send(());
        }
    }
    let all = decoder.finish().expect("gzip ends");
    assert_eq!(
        String::from_utf8_lossy(&all),
        "data: first\n\ndata: second\n\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_compressed_decodes_what_it_is_sent() {
    let origin = Origin::start().await;
    origin.script("/data", json_script("no-store"));
    let proxy = proxy_for(&origin, "[[routes]]\nupstream = \"app\"\n");
    let url = proxy.url("/data");
    for (flags, expected) in [
        (vec!["--compressed"], Some("zstd")),
        (vec!["-H", "accept-encoding: gzip"], Some("gzip")),
        (
            vec!["-H", "accept-encoding: br;q=0.9, gzip;q=0.1"],
            Some("br"),
        ),
        (vec![], None),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let headers = dir.path().join("headers");
        let body = dir.path().join("body");
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "30", "-D"])
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(&flags)
            .arg(&url)
            .output()
            .await
            .expect("curl runs (tests/install-deps.sh installs it)");
        assert!(out.status.success(), "{flags:?}: {out:?}");
        let headers = std::fs::read_to_string(&headers).expect("headers");
        let encoding = headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-encoding")
                .then(|| v.trim().to_string())
        });
        assert_eq!(encoding.as_deref(), expected, "{flags:?}");
        let body = std::fs::read(&body).expect("body");
        // `--compressed` decodes; plain curl keeps what was sent.
        let seen = if flags.first() == Some(&"--compressed") {
            String::from_utf8(body).expect("utf-8")
        } else {
            decode(expected, &body)
        };
        assert_eq!(seen, json(), "{flags:?}");
    }
}
