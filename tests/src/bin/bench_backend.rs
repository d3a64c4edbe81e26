//! A small, fast HTTP/1.1 backend for benchmarks: answers every request with
//! a fixed body on one thread, so proxies are compared on equal footing.
//!
//! Usage: `bench-backend ADDR [BODY_BYTES] [json]`
//!
//! With `json`, the body is a JSON document of about BODY_BYTES (records
//! with varied ids, names and numbers, so it compresses as real API output
//! does, not as a run of one byte) sent as `application/json`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3100".into());
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let json = args.next().as_deref() == Some("json");
    let body = if json {
        Bytes::from(json_of(size))
    } else {
        Bytes::from(vec![b'x'; size])
    };
    let content_type = if json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let tcp = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("bench-backend listening on {addr}, {size}-byte body");
        loop {
            let (stream, _) = tcp.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = Response::new(Full::new(body));
                        r.headers_mut().insert(
                            "cache-control",
                            http::HeaderValue::from_static("public, max-age=60"),
                        );
                        r.headers_mut()
                            .insert("content-type", http::HeaderValue::from_static(content_type));
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// A JSON array of records, about `size` bytes, from a fixed-seed
/// generator: the same document on every run.
fn json_of(size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut out = String::from("[");
    let mut id = 0u64;
    while out.len() + 2 < size {
        if id > 0 {
            out.push(',');
        }
        let (w1, w2) = (WORDS[(next() % 16) as usize], WORDS[(next() % 16) as usize]);
        out.push_str(&format!(
            "{{\"id\":{id},\"name\":\"{w1} {w2}\",\"score\":{}.{:02},\"active\":{},\"tags\":[\"{w2}\",\"t{}\"]}}",
            next() % 10_000,
            next() % 100,
            next() % 2 == 0,
            next() % 50
        ));
        id += 1;
    }
    out.push(']');
    out.into_bytes()
}
