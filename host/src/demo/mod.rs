//! `switchyard demo`: sample backends on loopback plus the proxy on the
//! default config, so a newcomer can watch it balance and curl it. The
//! backends share a REST-style `/items` resource, and the demo runs a short
//! `crud-mix` bench against it through the proxy.

pub mod rest;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::server::{Prepared, Running};
use rest::RestStore;

/// Latencies of the demo's sample backends, in config order.
const LATENCIES_MS: [u64; 3] = [2, 10, 40];
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Serves a sample backend on `tcp`: `/healthz` answers at once, `/items`
/// from the shared `store`, anything else after `latency` with a small JSON
/// body naming the backend.
pub fn sample_backend(
    tcp: TcpListener,
    name: String,
    latency: Duration,
    store: Arc<RestStore>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = tcp.accept().await else {
                continue;
            };
            let name = name.clone();
            let store = store.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let name = name.clone();
                let store = store.clone();
                async move {
                    let resp = if RestStore::owns(req.uri().path()) {
                        store.handle(req).await
                    } else if req.uri().path() == "/healthz" {
                        Response::new(Full::new(Bytes::from_static(b"ok\n")))
                    } else {
                        tokio::time::sleep(latency).await;
                        let body = serde_json::json!({
                            "backend": name,
                            "method": req.method().as_str(),
                            "path": req.uri().path(),
                        });
                        let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        if let Ok(v) = http::HeaderValue::from_str(&name) {
                            r.headers_mut().insert("x-backend", v);
                        }
                        r
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(conn);
        }
    })
}

/// Runs the demo until Ctrl-C.
pub async fn run(prepared: Prepared) -> anyhow::Result<()> {
    let loaded = &prepared.loaded;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for up in loaded.config.upstreams.values() {
        for b in &up.backends {
            if let Ok(a) = b.address.as_str().parse::<SocketAddr>()
                && a.ip().is_loopback()
                && !addrs.contains(&a)
            {
                addrs.push(a);
            }
        }
    }
    let mut backends = Vec::new();
    let store = Arc::new(RestStore::default());
    for (i, addr) in addrs.iter().enumerate() {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind sample backend {addr}"))?;
        let name = NAMES
            .get(i)
            .map_or_else(|| format!("backend-{i}"), |n| n.to_string());
        let latency = Duration::from_millis(LATENCIES_MS[i % LATENCIES_MS.len()]);
        println!(
            "sample backend {name:<6} on {addr} answers after {} ms",
            latency.as_millis()
        );
        backends.push(sample_backend(tcp, name, latency, store.clone()));
    }

    let running = Running::start(prepared).await?;
    let proxy = running.proxy_addr();
    let admin = running.admin_addr();
    tally(proxy).await;
    crud_bench(proxy).await;
    println!(
        "\nSwitchyard is running. Try:\n\
         \x20 curl -i http://{proxy}/hello\n\
         \x20 curl -i -X POST -d '{{\"name\":\"x\"}}' http://{proxy}/items\n\
         \x20 switchyard bench http://{proxy} --duration 10s --concurrency 32\n\
         \x20 curl http://{admin}/admin/backends\n\
         \x20 curl http://{admin}/admin/alerts\n\
         \x20 curl http://{admin}/admin/optimizer\n\
         \x20 curl http://{admin}/metrics | grep switchyard_\n\
         Press Ctrl-C to stop."
    );
    running.run_until_signalled().await;
    for b in backends {
        b.abort();
    }
    Ok(())
}

/// Sends a burst through the proxy and prints where it went.
async fn tally(proxy: SocketAddr) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let total = 60;
    for i in 0..total {
        let Ok(uri) = format!("http://{proxy}/demo/{i}").parse::<http::Uri>() else {
            continue;
        };
        let who = match client.get(uri).await {
            Ok(resp) if resp.status() == StatusCode::OK => resp
                .headers()
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string(),
            Ok(resp) => format!("status {}", resp.status()),
            Err(e) => format!("error: {e}"),
        };
        counts.entry(who).and_modify(|c| *c += 1).or_insert(1);
    }
    println!("\n{total} requests through the proxy went to:");
    for (who, n) in counts {
        println!("  {who:<10} {n:>3}  {}", "#".repeat(n as usize));
    }
}

/// A short `crud-mix` run through the proxy against the shared `/items`.
async fn crud_bench(proxy: SocketAddr) {
    use crate::loadgen::{BenchArgs, Plan};
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        bench: BenchArgs,
    }
    let target = format!("http://{proxy}");
    let argv = [
        "bench",
        target.as_str(),
        "--duration",
        "3s",
        "--concurrency",
        "16",
        "--quiet",
    ];
    let plan = Args::try_parse_from(argv)
        .map_err(|e| e.to_string())
        .and_then(|a| Plan::resolve(&a.bench));
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            println!("\n(skipping the crud-mix bench: {e})");
            return;
        }
    };
    let plugin = match plan.load_generator() {
        Ok(p) => p,
        Err(e) => {
            println!("\n(skipping the crud-mix bench: {e})");
            return;
        }
    };
    println!("\n3 s of crud-mix load (16 workers) through the proxy on /items:");
    let report = crate::loadgen::run(&plan, plugin, false).await;
    print!("{}", report.summary());
}
