//! Accepting client connections (HTTP/1.1 and HTTP/2 with prior knowledge on
//! one port) and draining them on shutdown or when the listen address moves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ConnInfo, ProxyService, ProxyState};

/// A bound, not yet serving, proxy listener.
pub struct Listener {
    tcp: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        Ok(Listener { tcp, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until stopped; in-flight requests are then drained.
    pub fn serve(self, state: Arc<ArcSwap<ProxyState>>) -> ListenerHandle {
        let (stop, stopped) = watch::channel(false);
        let addr = self.addr;
        let task = tokio::spawn(accept_loop(self.tcp, state, stopped));
        ListenerHandle { stop, task, addr }
    }
}

/// A serving listener.
pub struct ListenerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    pub addr: SocketAddr,
}

impl ListenerHandle {
    /// Stops accepting, then waits for in-flight requests to finish, at most
    /// `drain`. Idle keep-alive connections are closed at once.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(drain + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::warn!("listener {} did not drain in time", self.addr);
        }
    }
}

fn connection_builder(state: &ProxyState) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let max_header = state.limits.max_header_bytes;
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also bounds how long an idle keep-alive connection waits for its
        // next request.
        .header_read_timeout(state.timeouts.header_read.get())
        .max_buf_size(max_header.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(state.timeouts.client_idle.get()));
    builder
}

async fn accept_loop(
    tcp: TcpListener,
    state: Arc<ArcSwap<ProxyState>>,
    mut stopped: watch::Receiver<bool>,
) {
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let graceful = GracefulShutdown::new();
    let mut version = String::new();
    let mut builder = connection_builder(&state.load());
    let mut drain = state.load().timeouts.drain.get();
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = stopped.changed() => break,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept on {local} failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let current = state.load();
        if current.version != version {
            builder = connection_builder(&current);
            drain = current.timeouts.drain.get();
            version.clone_from(&current.version);
        }
        let _ = stream.set_nodelay(true);
        let service = ProxyService::new(state.clone(), ConnInfo::new(remote, local));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
    }
    drop(tcp);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(
            "{local}: stopped accepting; draining {open} connections (up to {})",
            humantime::format_duration(drain)
        );
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("{local}: drain timeout reached; closing remaining connections");
    }
}
