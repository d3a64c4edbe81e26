//! The running proxy: owns the config, the published data-plane state, the
//! listeners and the control-plane tasks, and wires them together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::admin::{self, AdminHandle};
use crate::config::Loaded;
use crate::health::HealthChecks;
use crate::plugins::{PluginEngine, PluginSet, PluginWatcher};
use crate::proxy::{Carried, Listener, ListenerHandle, ProxyState};
use crate::telemetry::{self, PrometheusExport};

/// Shared by the admin API and the control-plane tasks.
pub struct Server {
    pub loaded: ArcSwap<Loaded>,
    pub state: Arc<ArcSwap<ProxyState>>,
    /// Learned backend state and connection pools, carried across reloads.
    pub carried: Carried,
    pub prometheus: PrometheusExport,
    pub plugin_engine: Arc<PluginEngine>,
    pub plugins: Arc<ArcSwap<PluginSet>>,
    health: std::sync::Mutex<HealthChecks>,
    watcher: std::sync::Mutex<Option<PluginWatcher>>,
    draining: AtomicBool,
}

/// A validated config with its plugins loaded: everything `Running::start`
/// needs, prepared before the async runtime starts so that a bad config or
/// plugin is reported the same way by `check` and `run`.
pub struct Prepared {
    pub loaded: Loaded,
    pub plugin_engine: Arc<PluginEngine>,
    pub plugins: PluginSet,
}

impl Prepared {
    pub fn new(loaded: Loaded) -> Result<Prepared, crate::config::ConfigErrors> {
        let engine = PluginEngine::new(
            loaded.config.plugin_runtime.cache_dir.clone(),
            loaded.config.plugin_runtime.fuel,
        )
        .map_err(|e| {
            crate::config::ConfigErrors(vec![loaded.error_at("plugin_runtime", format!("{e:#}"))])
        })?;
        let plugins = PluginSet::load_config(&loaded, &engine, None)?;
        Ok(Prepared {
            loaded,
            plugin_engine: engine,
            plugins,
        })
    }
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
    pub async fn start(prepared: Prepared) -> anyhow::Result<Running> {
        let Prepared {
            loaded,
            plugin_engine,
            plugins,
        } = prepared;
        let prometheus = telemetry::install();
        let carried = Carried::default();
        let config = &loaded.config;
        let state = ProxyState::build(config, &loaded.version, &carried);
        let listen = config.listen.address.0;
        let proxy = Listener::bind(listen)
            .await
            .with_context(|| format!("cannot bind listen.address {listen}"))?;
        let admin_addr = config.admin.address.0;
        let admin_tcp = TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("cannot bind admin.address {admin_addr}"))?;
        let health = HealthChecks::start(&state);
        let rt = loaded.config.plugin_runtime.clone();
        let plugins = Arc::new(ArcSwap::from_pointee(plugins));
        let watcher = if rt.watch && plugins.load().iter().next().is_some() {
            match crate::plugins::watch(plugins.clone(), rt.debounce.get()) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(
                        "cannot watch plugin files ({e}); reload them with POST /admin/plugins/NAME/reload"
                    );
                    None
                }
            }
        } else {
            None
        };
        let server = Arc::new(Server {
            loaded: ArcSwap::from_pointee(loaded),
            state: Arc::new(ArcSwap::from_pointee(state)),
            carried,
            prometheus,
            plugin_engine,
            plugins,
            health: std::sync::Mutex::new(health),
            watcher: std::sync::Mutex::new(watcher),
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
        // Background work stops before the admin listener goes.
        drop(
            self.server
                .health
                .lock()
                .map(|mut h| std::mem::take(&mut *h)),
        );
        drop(self.server.watcher.lock().map(|mut w| w.take()));
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
