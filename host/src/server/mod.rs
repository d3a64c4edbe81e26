//! The running proxy: owns the config, the published data-plane state, the
//! listeners and the control-plane tasks, and wires them together. Reloads
//! (`reload.rs`) replace these pieces one at a time, each with an atomic
//! store, so requests in flight finish on what they started with.

mod loops;
mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;

pub use reload::{ReloadOutcome, ReloadStatus, Trigger};

use crate::admin::{self, AdminHandle};
use crate::alerts::AlertEngine;
use crate::alerts::webhook::Webhook;
use crate::config::{ConfigErrors, Loaded};
use crate::health::HealthChecks;
use crate::optimize::OptimizerHost;
use crate::plugins::{EngineSlot, PluginSet};
use crate::proxy::{Listener, ListenerHandle, ProxyState, Registry};
use crate::telemetry::ProcessStats;
use crate::telemetry::{self, PrometheusExport};
use crate::tls::Materials;
use crate::tls::acme::{self, AcmeTask};
use crate::watch::FileWatch;

/// A validated config with its plugins loaded: everything `Running::start`
/// needs, prepared before the async runtime starts so that a bad config or
/// plugin is reported the same way by `check` and `run`.
pub struct Prepared {
    pub loaded: Loaded,
    pub plugin_engine: Arc<EngineSlot>,
    pub plugins: PluginSet,
    /// Certificates and backend TLS settings, read and checked.
    pub tls: Materials,
}

impl Prepared {
    pub fn new(loaded: Loaded) -> Result<Prepared, ConfigErrors> {
        let rt = &loaded.config.plugin_runtime;
        let engine = Arc::new(EngineSlot::new(rt.cache_dir.clone(), rt.fuel));
        let tls = Materials::load(&loaded)?;
        let plugins = PluginSet::load_config(&loaded, &engine, None)?;
        Ok(Prepared {
            loaded,
            plugin_engine: engine,
            plugins,
            tls,
        })
    }
}

/// Tasks that belong to one config and are replaced with it.
#[derive(Default)]
struct Background {
    health: HealthChecks,
    plugin_watch: Option<FileWatch>,
    config_watch: Option<FileWatch>,
    /// The files the config watch covers: the config, its profile, and the
    /// certificate files it names.
    watched: Vec<std::path::PathBuf>,
    /// Obtains and renews `[acme]`'s certificate, for the section it runs.
    acme: Option<(crate::config::AcmeSection, AcmeTask)>,
}

#[derive(Default)]
struct Listeners {
    proxy: Option<ListenerHandle>,
    /// The HTTPS listener of `[tls]`.
    tls: Option<ListenerHandle>,
    admin: Option<AdminHandle>,
}

/// Shared by the admin API, the reload machinery and the control-plane tasks.
pub struct Server {
    pub loaded: ArcSwap<Loaded>,
    pub state: Arc<ArcSwap<ProxyState>>,
    /// Everything learned that survives rebuilds and reloads.
    pub registry: Registry,
    pub prometheus: PrometheusExport,
    pub plugin_engine: Arc<EngineSlot>,
    pub plugins: Arc<ArcSwap<PluginSet>>,
    background: std::sync::Mutex<Background>,
    listeners: tokio::sync::Mutex<Listeners>,
    reload_lock: tokio::sync::Mutex<()>,
    reload_status: std::sync::Mutex<ReloadStatus>,
    pub alerts: AlertEngine,
    pub optimizer: OptimizerHost,
    webhook: Webhook,
    process: std::sync::Mutex<ProcessStats>,
    loops: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    draining: AtomicBool,
    /// Of the certificate files last applied: a reload whose config is the
    /// same still applies changed certificates.
    tls_fingerprint: AtomicU64,
    /// Load tests started through the admin API.
    pub bench_runs: Arc<crate::admin::bench::Runs>,
}

/// A started server.
pub struct Running {
    pub server: Arc<Server>,
    proxy_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
}

impl Server {
    /// Where the plain listener is bound now, if it is.
    pub async fn proxy_addr(&self) -> Option<SocketAddr> {
        self.listeners.lock().await.proxy.as_ref().map(|l| l.addr)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload_status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The addresses the proxy and admin listeners are bound to now.
    pub async fn addresses(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let l = self.listeners.lock().await;
        (
            l.proxy.as_ref().map(|h| h.addr),
            l.admin.as_ref().map(|h| h.addr),
        )
    }

    /// (Re)starts the tasks that follow the current config: health checks and
    /// the plugin file watch.
    fn restart_background(self: &Arc<Self>) {
        let state = self.state.load();
        let rt = self.loaded.load().config.plugin_runtime.clone();
        let plugin_watch = if rt.watch && self.plugins.load().iter().next().is_some() {
            crate::plugins::watch(self.plugins.clone(), rt.debounce.get())
                .map_err(|e| {
                    tracing::warn!(
                        "cannot watch plugin files ({e}); use POST /admin/plugins/NAME/reload"
                    )
                })
                .ok()
        } else {
            None
        };
        if let Ok(mut bg) = self.background.lock() {
            bg.health = HealthChecks::start(&state);
            bg.plugin_watch = plugin_watch;
        }
        self.restart_acme();
    }

    /// Starts, restarts or stops the ACME task as `[acme]` says; a section
    /// that did not change keeps its task.
    fn restart_acme(&self) {
        let loaded = self.loaded.load();
        let wanted = loaded.config.acme.clone();
        let Ok(mut bg) = self.background.lock() else {
            return;
        };
        if bg.acme.as_ref().map(|(s, _)| s) == wanted.as_ref() {
            return;
        }
        bg.acme = wanted.map(|section| {
            let base = loaded.source.base_dir();
            if self.registry.certs.acme().is_none()
                && let Some(stored) = acme::load_stored(&section, &base)
            {
                self.registry.certs.set_acme(Some(stored));
            }
            let task = acme::start(
                section.clone(),
                base,
                self.registry.certs.clone(),
                self.registry.challenges.clone(),
            );
            (section, task)
        });
        if bg.acme.is_none() {
            self.registry.certs.set_acme(None);
        }
    }

    /// Serves what `tls` read: the certificate files from now on.
    fn apply_tls(&self, tls: Materials) {
        for warning in &tls.warnings {
            tracing::warn!("{warning}");
        }
        self.registry.certs.set_files(tls.certs);
        self.tls_fingerprint
            .store(tls.fingerprint, Ordering::Relaxed);
    }
}

impl Running {
    /// Builds the state for `prepared`, binds both listeners and starts
    /// serving, watching the config file for changes and SIGHUP.
    pub async fn start(prepared: Prepared) -> anyhow::Result<Running> {
        let Prepared {
            loaded,
            plugin_engine,
            plugins,
            tls,
        } = prepared;
        let prometheus = telemetry::install();
        let registry = Registry::default();
        let config = &loaded.config;
        let state = ProxyState::build(config, &loaded.version, &registry, &tls);
        let watched = watched_files(&loaded, &tls);
        // A bind failure is a problem of the config: reported like one, with
        // the file and key, and exit code 2.
        let bind_error = |key: &str, addr: SocketAddr, e: std::io::Error| {
            anyhow::Error::new(ConfigErrors(vec![
                loaded.error_at(key, format!("cannot bind {addr}: {e}")),
            ]))
        };
        let listen = config.listen.address.0;
        let proxy = Listener::bind(listen)
            .await
            .map_err(|e| bind_error("listen.address", listen, e))?;
        let https = match &config.tls {
            Some(section) => {
                let addr = section.address.0;
                let bound = Listener::bind(addr).await;
                Some(bound.map_err(|e| bind_error("tls.address", addr, e))?)
            }
            None => None,
        };
        let admin_addr = config.admin.address.0;
        let admin_tcp = TcpListener::bind(admin_addr)
            .await
            .map_err(|e| bind_error("admin.address", admin_addr, e))?;
        let server = Arc::new(Server {
            loaded: ArcSwap::from_pointee(loaded),
            state: Arc::new(ArcSwap::from_pointee(state)),
            registry,
            prometheus,
            plugin_engine,
            plugins: Arc::new(ArcSwap::from_pointee(plugins)),
            background: std::sync::Mutex::new(Background::default()),
            listeners: tokio::sync::Mutex::new(Listeners::default()),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_status: std::sync::Mutex::new(ReloadStatus::default()),
            alerts: AlertEngine::default(),
            optimizer: OptimizerHost::default(),
            webhook: Webhook::default(),
            process: std::sync::Mutex::new(ProcessStats::default()),
            loops: std::sync::Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            tls_fingerprint: AtomicU64::new(0),
            bench_runs: Arc::default(),
        });
        server.apply_tls(tls);
        server
            .registry
            .admission
            .set_limit(server.loaded.load().config.admission.max_concurrency);
        server
            .registry
            .admission
            .set_queue(crate::proxy::QueueSettings::from_config(
                &server.loaded.load().config.admission,
            ));
        if let Ok(mut l) = server.loops.lock() {
            *l = loops::start(&server);
        }
        server.restart_background();
        reload::watch_config(&server, watched);
        tracing::info!("proxy listening on {}", proxy.local_addr());
        let tls_addr = https.as_ref().map(Listener::local_addr);
        if let Some(addr) = tls_addr {
            tracing::info!("HTTPS listening on {addr}");
        }
        let admin = admin::serve(admin_tcp, server.clone())?;
        let (proxy_addr, admin_addr) = (proxy.local_addr(), admin.addr);
        {
            let mut l = server.listeners.lock().await;
            l.proxy = Some(proxy.serve(server.state.clone()));
            l.tls = https.map(|h| h.serve_tls(server.state.clone()));
            l.admin = Some(admin);
        }
        // Last: whoever waits for this line finds everything in place.
        tracing::info!("admin listening on {admin_addr}");
        Ok(Running {
            server,
            proxy_addr,
            tls_addr,
            admin_addr,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// The HTTPS listener's address, with `[tls]`.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until SIGTERM or SIGINT, reloading on SIGHUP, then shuts down.
    pub async fn run_until_signalled(self) {
        let server = self.server.clone();
        let hup = tokio::spawn(async move { reload::on_sighup(server).await });
        shutdown_signal().await;
        hup.abort();
        self.shutdown().await;
    }

    /// Graceful shutdown: readiness goes false, the proxy stops accepting and
    /// drains in-flight requests, then the admin listener closes.
    pub async fn shutdown(self) {
        let server = &self.server;
        server.draining.store(true, Ordering::Relaxed);
        let drain = server.state.load().timeouts.drain.get();
        let (proxy, tls, admin) = {
            let mut l = server.listeners.lock().await;
            (l.proxy.take(), l.tls.take(), l.admin.take())
        };
        let both = async {
            tokio::join!(
                async {
                    if let Some(proxy) = proxy {
                        proxy.shutdown(drain).await;
                    }
                },
                async {
                    if let Some(tls) = tls {
                        tls.shutdown(drain).await;
                    }
                }
            )
        };
        both.await;
        // Background work stops before the admin listener goes.
        drop(
            server
                .background
                .lock()
                .map(|mut bg| std::mem::take(&mut *bg)),
        );
        if let Some(admin) = admin {
            admin.shutdown().await;
        }
        tracing::info!("shut down");
    }
}

/// What the config watch covers for `loaded`: its files and the
/// certificate files it names.
fn watched_files(loaded: &Loaded, tls: &Materials) -> Vec<std::path::PathBuf> {
    let mut files = loaded.source.files();
    files.extend(tls.files.iter().cloned());
    files.sort();
    files.dedup();
    files
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
