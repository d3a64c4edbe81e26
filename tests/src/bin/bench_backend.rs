//! A small, fast HTTP/1.1 backend for benchmarks: answers every request with
//! a fixed body on one thread, so proxies are compared on equal footing.
//!
//! Usage: `bench-backend ADDR [BODY_BYTES]`

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
    let body = Bytes::from(vec![b'x'; size]);
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
