//! Accepting client connections (HTTP/1.1 and HTTP/2 with prior knowledge on
//! one port; over TLS, HTTP/2 as ALPN chose it) and draining them on
//! shutdown or when the listen address moves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ConnInfo, ProxyService, ProxyState};
use crate::http1::Origin;
use crate::http1::server::{self, Shared, Shutdown};

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

    /// Serves plain HTTP until stopped; in-flight requests are then
    /// drained.
    pub fn serve(self, state: Arc<ArcSwap<ProxyState>>) -> ListenerHandle {
        self.start(state, false)
    }

    /// Serves HTTPS with the state's `tls` config until stopped.
    pub fn serve_tls(self, state: Arc<ArcSwap<ProxyState>>) -> ListenerHandle {
        self.start(state, true)
    }

    fn start(self, state: Arc<ArcSwap<ProxyState>>, secure: bool) -> ListenerHandle {
        let stop = Shutdown::default();
        let addr = self.addr;
        let task = tokio::spawn(accept_loop(self.tcp, state, stop.clone(), secure));
        ListenerHandle { stop, task, addr }
    }
}

/// A serving listener.
pub struct ListenerHandle {
    stop: Shutdown,
    task: JoinHandle<()>,
    pub addr: SocketAddr,
}

impl ListenerHandle {
    /// Stops accepting, then waits for in-flight requests to finish, at most
    /// `drain`. Idle keep-alive connections are closed at once.
    pub async fn shutdown(self, drain: Duration) {
        self.stop.trigger();
        if tokio::time::timeout(drain + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::warn!("listener {} did not drain in time", self.addr);
        }
    }
}

/// Per-connection settings from a config snapshot.
fn connection_settings(state: &ProxyState) -> server::Settings {
    let max_header = state.limits.max_header_bytes;
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(state.timeouts.client_idle.get()));
    server::Settings {
        // Also bounds how long an idle keep-alive connection waits for its
        // next request.
        header_read: state.timeouts.header_read.get(),
        max_header_bytes: max_header,
        h2: Arc::new(h2),
    }
}

async fn accept_loop(
    tcp: TcpListener,
    state: Arc<ArcSwap<ProxyState>>,
    stopped: Shutdown,
    secure: bool,
) {
    let local = tcp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Every connection task holds a sender; all dropped = all drained.
    let (alive, mut drained) = mpsc::channel::<()>(1);
    let mut version = String::new();
    let mut settings = connection_settings(&state.load());
    let mut drain = state.load().timeouts.drain.get();
    let mut acceptor = state
        .load()
        .tls
        .clone()
        .map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = stopped.wait() => break,
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
            settings = connection_settings(&current);
            drain = current.timeouts.drain.get();
            acceptor = current.tls.clone().map(tokio_rustls::TlsAcceptor::from);
            version.clone_from(&current.version);
        }
        let _ = stream.set_nodelay(true);
        // The address this connection reached: a wildcard listener's
        // connections each have their own.
        let here = if local.ip().is_unspecified() {
            stream.local_addr().unwrap_or(local)
        } else {
            local
        };
        let trusted = current.is_trusted(remote.ip());
        let conn = ConnInfo::new(remote, here, trusted, secure);
        let service = ProxyService::new(state.clone(), conn);
        let (settings, stop, alive) = (settings.clone(), stopped.clone(), alive.clone());
        if !secure {
            tokio::spawn(async move {
                server::serve(stream, service, settings, Origin::http(here), stop).await;
                drop(alive);
            });
            continue;
        }
        let Some(acceptor) = acceptor.clone() else {
            // `[tls]` without a usable config (logged when it was built).
            continue;
        };
        tokio::spawn(async move {
            // The handshake has the time a request head has.
            if let Some(tls) = crate::tls::accept(&acceptor, stream, settings.header_read).await {
                if tls.h2 {
                    server::serve_h2_on(tls.stream, service, &settings, stop).await;
                } else {
                    let origin = Origin::https(here);
                    server::serve(Shared(tls.stream), service, settings, origin, stop).await;
                }
            }
            drop(alive);
        });
    }
    drop(tcp);
    drop(alive);
    if !drained.is_closed() {
        tracing::info!(
            "{local}: stopped accepting; draining connections (up to {})",
            humantime::format_duration(drain)
        );
    }
    if tokio::time::timeout(drain, drained.recv()).await.is_err() {
        tracing::warn!("{local}: drain timeout reached; closing remaining connections");
    }
}
