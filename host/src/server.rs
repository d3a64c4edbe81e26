//! The running proxy: owns the config, the published data-plane state, the
//! listeners and the control-plane tasks, and wires them together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::admin::{self, AdminHandle};
use crate::balance::StateRegistry;
use crate::config::Loaded;
use crate::health::HealthChecks;
use crate::proxy::{Listener, ListenerHandle, ProxyState};
use crate::telemetry::{self, PrometheusExport};

/// Shared by the admin API and the control-plane tasks.
pub struct Server {
    pub loaded: ArcSwap<Loaded>,
    pub state: Arc<ArcSwap<ProxyState>>,
    pub registry: StateRegistry,
    pub prometheus: PrometheusExport,
    health: std::sync::Mutex<HealthChecks>,
    draining: AtomicBool,
}

/// A started server and its listeners.
pub struct Running {
    pub server: Arc<Server>,
    proxy: ListenerHandle,
    admin: AdminHandle,
}

impl Server {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

impl Running {
    /// Builds the state for `loaded`, binds both listeners and starts serving.
    pub async fn start(loaded: Loaded) -> anyhow::Result<Running> {
        let prometheus = telemetry::install();
        let registry = StateRegistry::default();
        let config = &loaded.config;
        let state = ProxyState::build(config, &loaded.version, &registry, None);
        let listen = config.listen.address.0;
        let proxy = Listener::bind(listen)
            .await
            .with_context(|| format!("cannot bind listen.address {listen}"))?;
        let admin_addr = config.admin.address.0;
        let admin_tcp = TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot bind admin.address {admin_addr}"))?;
        let health = HealthChecks::start(&state);
        let server = Arc::new(Server {
            loaded: ArcSwap::from_pointee(loaded),
            state: Arc::new(ArcSwap::from_pointee(state)),
            registry,
            prometheus,
            health: std::sync::Mutex::new(health),
            draining: AtomicBool::new(false),
        });
        tracing::info!("proxy listening on {}", proxy.local_addr());
        let admin = admin::serve(admin_tcp, server.clone())?;
        tracing::info!("admin listening on {}", admin.addr);
        let proxy = proxy.serve(server.state.clone());
        Ok(Running {
            server,
            proxy,
            admin,
        })
    }

    pub fn proxy_addr(&self) -> std::net::SocketAddr {
        self.proxy.addr
    }

    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin.addr
    }

    /// Graceful shutdown: readiness goes false, the proxy stops accepting and
    /// drains in-flight requests, then the admin listener closes.
    pub async fn shutdown(self) {
        self.server.draining.store(true, Ordering::Relaxed);
        let drain = self.server.state.load().timeouts.drain.get();
        self.proxy.shutdown(drain).await;
        drop(
            self.server
                .health
                .lock()
                .map(|mut h| std::mem::take(&mut *h)),
        );
        self.admin.shutdown().await;
        tracing::info!("shut down");
    }
}

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
