//! Config reloads that drop nothing.
//!
//! Triggered by a change to the config file (or the profile layered on it),
//! by SIGHUP, or by `POST /admin/config/reload`. A reload reads the same
//! files and environment as the start did, validates everything (plugins
//! included), and only then changes anything: new listen addresses are bound
//! first, then the new data-plane state is swapped in with one atomic store.
//! Requests in flight finish on the state they began with; backends that stay
//! keep their learned state and pooled connections; plugins whose file and
//! settings did not change keep their instance. A config that fails any step
//! leaves the running one untouched, and says why in the log,
//! `switchyard_config_reload_total{result="failure"}` and `GET /admin/config`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::net::TcpListener;

use super::Server;
use crate::admin;
use crate::config::{self, Change, ConfigErrors, Loaded};
use crate::plugins::PluginSet;
use crate::proxy::registry::{CACHE_CAPACITY, CONCURRENCY_LIMIT};
use crate::proxy::{Listener, ProxyState};
use crate::tls::Materials;

/// Quiet time after the last change to the config file before reloading.
pub const CONFIG_DEBOUNCE: Duration = Duration::from_millis(200);

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    File,
    Signal,
    Admin,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::File => "file change",
            Trigger::Signal => "SIGHUP",
            Trigger::Admin => "admin API",
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded {
        from: String,
        to: String,
        changes: Vec<Change>,
    },
}

/// The last reload, for `GET /admin/config`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStatus {
    pub at: Option<String>,
    pub trigger: Option<Trigger>,
    /// `success`, `unchanged` or `failure`.
    pub result: Option<&'static str>,
    pub errors: Vec<String>,
    /// Settings that changed but take effect only at the next start.
    pub notes: Vec<String>,
    pub changes: Vec<Change>,
    pub successes: u64,
    pub failures: u64,
}

/// Settings read once at start; a reload that changes them says so.
fn needs_restart(
    old: &Loaded,
    new: &Loaded,
    meters_fuel: bool,
) -> Result<Vec<String>, ConfigErrors> {
    let (o, n) = (&old.config, &new.config);
    if n.plugins.iter().any(|p| p.limits.fuel.is_some()) && !meters_fuel {
        return Err(ConfigErrors(vec![new.error_at(
            "plugin_runtime.fuel",
            "fuel metering is chosen at start; restart Switchyard to use limits.fuel",
        )]));
    }
    let mut notes = Vec::new();
    if o.runtime.worker_threads != n.runtime.worker_threads {
        notes.push("runtime.worker_threads takes effect at the next start".to_string());
    }
    if o.plugin_runtime.cache_dir != n.plugin_runtime.cache_dir
        || o.plugin_runtime.fuel != n.plugin_runtime.fuel
    {
        notes.push(
            "plugin_runtime.cache_dir and plugin_runtime.fuel take effect at the next start"
                .to_string(),
        );
    }
    Ok(notes)
}

impl Server {
    /// Reloads the config; one reload runs at a time.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Result<ReloadOutcome, ConfigErrors> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let mut notes = Vec::new();
        let result = self.try_reload(&mut notes).await;
        let label = match &result {
            Ok(ReloadOutcome::Reloaded { .. }) => "success",
            Ok(ReloadOutcome::Unchanged) => "unchanged",
            Err(_) => "failure",
        };
        metrics::counter!("switchyard_config_reload_total", "result" => label).increment(1);
        match &result {
            Ok(ReloadOutcome::Reloaded { from, to, changes }) => {
                let shown: Vec<String> = changes.iter().take(10).map(|c| c.to_string()).collect();
                let more = changes.len().saturating_sub(shown.len());
                let more = if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                };
                tracing::info!(
                    "config reloaded on {trigger}: version {from} -> {to}, {} change(s): {}{more}",
                    changes.len(),
                    shown.join("; ")
                );
            }
            Ok(ReloadOutcome::Unchanged) => {
                tracing::info!("config reload on {trigger}: nothing changed")
            }
            Err(errors) => tracing::error!(
                "config reload on {trigger} failed; the running config stays:\n{errors}"
            ),
        }
        for note in &notes {
            tracing::warn!("{note}");
        }
        if let Ok(mut status) = self.reload_status.lock() {
            status.at = Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
            status.trigger = Some(trigger);
            status.result = Some(label);
            status.notes = notes;
            match &result {
                Ok(outcome) => {
                    status.successes += 1;
                    status.errors.clear();
                    status.changes = match outcome {
                        ReloadOutcome::Reloaded { changes, .. } => changes.clone(),
                        ReloadOutcome::Unchanged => Vec::new(),
                    };
                }
                Err(errors) => {
                    status.failures += 1;
                    status.errors = errors.0.iter().map(|e| e.to_string()).collect();
                    status.changes.clear();
                }
            }
        }
        result
    }

    async fn try_reload(
        self: &Arc<Self>,
        notes: &mut Vec<String>,
    ) -> Result<ReloadOutcome, ConfigErrors> {
        let current = self.loaded.load_full();
        let (source, engine, previous) = (
            current.source.clone(),
            self.plugin_engine.clone(),
            self.plugins.load_full(),
        );
        let compare = current.clone();
        // Reading, validating and compiling plugins block: off the runtime.
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, ConfigErrors> {
            let loaded = config::load(&source)?;
            let notes = needs_restart(&compare, &loaded, engine.meters_fuel())?;
            let tls = Materials::load(&loaded)?;
            let plugins = PluginSet::load_config(&loaded, &engine, Some(&previous))?;
            Ok((loaded, plugins, tls, notes))
        })
        .await
        .map_err(|e| {
            ConfigErrors(vec![
                current.error_at("", format!("reload task failed: {e}")),
            ])
        })??;
        let (loaded, plugins, tls, found_notes) = prepared;
        *notes = found_notes;
        let certs_changed = tls.fingerprint != self.tls_fingerprint.load(Ordering::Relaxed);
        if loaded.version == current.version && !certs_changed {
            return Ok(ReloadOutcome::Unchanged);
        }
        if certs_changed {
            tracing::info!("certificate files changed; the new ones serve new handshakes");
        }
        let as_json = |c: &config::Config| serde_json::to_value(c).unwrap_or_default();
        let changes = config::diff(&as_json(&current.config), &as_json(&loaded.config));
        let (old, new) = (&current.config, &loaded.config);

        // Everything that can fail happens before anything changes: new
        // addresses are bound and the new admin listener is started (it
        // serves the running config until the swap). If a step fails, what
        // was prepared is dropped (its port released) and the running config
        // stays as it is. After the swap nothing can fail.
        let bind_error = |key: &str, addr, e| {
            ConfigErrors(vec![
                loaded.error_at(key, format!("cannot bind {addr}: {e}")),
            ])
        };
        let new_proxy = if new.listen.address != old.listen.address {
            let addr = new.listen.address.0;
            let bound = Listener::bind(addr).await;
            Some(bound.map_err(|e| bind_error("listen.address", addr, e))?)
        } else {
            None
        };
        let tls_address = |c: &config::Config| c.tls.as_ref().map(|t| t.address);
        let new_tls = match tls_address(new) {
            Some(address) if Some(&address) != tls_address(old).as_ref() => {
                let addr = address.0;
                let bound = Listener::bind(addr).await;
                Some(bound.map_err(|e| bind_error("tls.address", addr, e))?)
            }
            _ => None,
        };
        let new_admin = if new.admin.address != old.admin.address {
            let addr = new.admin.address.0;
            let tcp = TcpListener::bind(addr)
                .await
                .map_err(|e| bind_error("admin.address", addr, e))?;
            let handle = admin::serve(tcp, self.clone()).map_err(|e| {
                ConfigErrors(vec![
                    loaded.error_at("admin.address", format!("cannot serve on {addr}: {e}")),
                ])
            })?;
            Some(handle)
        } else {
            None
        };

        // Knobs whose optimizer is gone, or whose config value changed, go
        // back to the config; the others stay with their owner.
        let knobs = &self.registry.knobs;
        for (knob, owned) in knobs.release_for(new) {
            tracing::info!(
                "{knob} = {} set by optimizer \"{}\" released: the config value applies again",
                owned.value,
                owned.owner
            );
        }
        self.registry
            .admission
            .set_queue(crate::proxy::QueueSettings::from_config(&new.admission));
        if knobs.get(CONCURRENCY_LIMIT).is_none() {
            self.registry
                .admission
                .set_limit(new.admission.max_concurrency);
        }
        let state = ProxyState::build(new, &loaded.version, &self.registry, &tls);
        let capacity = knobs
            .get(CACHE_CAPACITY)
            .map_or(new.cache.capacity.0, |o| o.value);
        state.cache.resize(capacity);
        let drain = state.timeouts.drain.get();
        let watched = super::watched_files(&loaded, &tls);
        self.apply_tls(tls);
        self.state.store(Arc::new(state));
        self.plugins.store(Arc::new(plugins));
        crate::logging::set_level(&new.log.level);
        let (from, to) = (current.version.clone(), loaded.version.clone());
        let tls_removed = new.tls.is_none();
        self.loaded.store(Arc::new(loaded));
        self.restart_background();
        let rewatch = self
            .background
            .lock()
            .map(|bg| bg.watched != watched)
            .unwrap_or(false);
        if rewatch {
            watch_config(self, watched);
        }

        let mut listeners = self.listeners.lock().await;
        if let Some(listener) = new_proxy {
            tracing::info!("proxy listening on {}", listener.local_addr());
            if let Some(old) = listeners.proxy.replace(listener.serve(self.state.clone())) {
                tracing::info!("stopped accepting on {}; draining it", old.addr);
                tokio::spawn(old.shutdown(drain));
            }
        }
        if let Some(listener) = new_tls {
            tracing::info!("HTTPS listening on {}", listener.local_addr());
            if let Some(old) = listeners
                .tls
                .replace(listener.serve_tls(self.state.clone()))
            {
                tracing::info!("stopped accepting on {}; draining it", old.addr);
                tokio::spawn(old.shutdown(drain));
            }
        } else if tls_removed && let Some(old) = listeners.tls.take() {
            tracing::info!(
                "[tls] removed: stopped accepting on {}; draining it",
                old.addr
            );
            tokio::spawn(old.shutdown(drain));
        }
        if let Some(handle) = new_admin {
            tracing::info!("admin listening on {}", handle.addr);
            if let Some(old) = listeners.admin.replace(handle) {
                tokio::spawn(old.shutdown());
            }
        }
        Ok(ReloadOutcome::Reloaded { from, to, changes })
    }
}

/// Reloads when the config file (or its profile), or a certificate file
/// it names, settles after a change.
pub(super) fn watch_config(server: &Arc<Server>, files: Vec<std::path::PathBuf>) {
    let weak = Arc::downgrade(server);
    let watch = crate::watch::watch_files(files.clone(), CONFIG_DEBOUNCE, move |_| {
        if let Some(server) = weak.upgrade() {
            tokio::spawn(async move {
                let _ = server.reload(Trigger::File).await;
            });
        }
    });
    match watch {
        Ok(w) => {
            if let Ok(mut bg) = server.background.lock() {
                bg.config_watch = Some(w);
                bg.watched = files;
            }
        }
        Err(e) => tracing::warn!(
            "cannot watch the config file ({e}); reload with SIGHUP or the admin API"
        ),
    }
}

/// Reloads on every SIGHUP.
pub(super) async fn on_sighup(server: Arc<Server>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP");
            return;
        };
        while hup.recv().await.is_some() {
            let _ = server.reload(Trigger::Signal).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        std::future::pending::<()>().await;
    }
}
