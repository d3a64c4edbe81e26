//! Backends and load for the protocol benchmarks (`tests/bench/grpc.sh`,
//! `tests/bench/websocket.sh`): the same gRPC and WebSocket servers the
//! end-to-end tests use, and closed-loop clients that report a rate.
//!
//! Usage:
//! - `proto-bench grpc-serve ADDR`
//! - `proto-bench grpc-load URL CONCURRENCY SECONDS [CONNECTIONS]`: unary
//!   calls, CONCURRENCY at a time over CONNECTIONS HTTP/2 connections
//!   (default 4); prints `calls/s ERRORS`.
//! - `proto-bench ws-serve ADDR`
//! - `proto-bench ws-load URL CONNECTIONS SECONDS`: each connection sends a
//!   64-byte text message and waits for its echo, again and again; prints
//!   `messages/s ERRORS`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use switchyard_tests::grpc::{EchoClient, GrpcBackend, msg};
use switchyard_tests::ws::WsBackend;
use tokio_tungstenite::tungstenite::Message;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .context("missing argument (see the usage)")
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        match arg(0)?.as_str() {
            "grpc-serve" => {
                let _backend = GrpcBackend::start_on(&arg(1)?, "bench", 1000, None).await;
                std::future::pending::<()>().await;
            }
            "ws-serve" => {
                let _backend = WsBackend::start_on(&arg(1)?).await;
                std::future::pending::<()>().await;
            }
            "grpc-load" => {
                let conns: usize = args.get(4).map_or(Ok(4), |s| s.parse())?;
                grpc_load(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?, conns).await?
            }
            "ws-load" => ws_load(arg(1)?, arg(2)?.parse()?, arg(3)?.parse()?).await?,
            other => bail!("unknown command {other:?}"),
        }
        Ok(())
    })
}

/// Runs `work` on `tasks` tasks until `seconds` pass.
async fn closed_loop<F, Fut>(tasks: usize, seconds: u64, work: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = (0..tasks).map(|i| tokio::spawn(work(i))).collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    for h in &handles {
        h.abort();
    }
}

async fn grpc_load(
    url: String,
    concurrency: usize,
    seconds: u64,
    conns: usize,
) -> anyhow::Result<()> {
    let mut clients = Vec::new();
    for _ in 0..conns.max(1) {
        clients.push(EchoClient::connect(url.clone()).await);
    }
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    closed_loop(concurrency, seconds, |i| {
        let mut client = clients[i % clients.len()].clone();
        let (ok, failed) = (ok.clone(), failed.clone());
        async move {
            loop {
                match client.say(tonic::Request::new(msg("ping", 1))).await {
                    Ok(_) => ok.fetch_add(1, Relaxed),
                    Err(_) => failed.fetch_add(1, Relaxed),
                };
            }
        }
    })
    .await;
    let rate = ok.load(Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0} {}", failed.load(Relaxed));
    Ok(())
}

async fn ws_load(url: String, conns: usize, seconds: u64) -> anyhow::Result<()> {
    let mut sockets = Vec::new();
    for _ in 0..conns {
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .context("WebSocket handshake")?;
        sockets.push(tokio::sync::Mutex::new(Some(ws)));
    }
    let sockets = Arc::new(sockets);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    closed_loop(conns, seconds, |i| {
        let (sockets, ok, failed) = (sockets.clone(), ok.clone(), failed.clone());
        async move {
            let Some(mut ws) = sockets[i].lock().await.take() else {
                return;
            };
            let text = "x".repeat(64);
            loop {
                if ws.send(Message::text(text.clone())).await.is_err() {
                    failed.fetch_add(1, Relaxed);
                    return;
                }
                match ws.next().await {
                    Some(Ok(m)) if m.is_text() => ok.fetch_add(1, Relaxed),
                    _ => {
                        failed.fetch_add(1, Relaxed);
                        return;
                    }
                };
            }
        }
    })
    .await;
    let rate = ok.load(Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0} {}", failed.load(Relaxed));
    Ok(())
}
