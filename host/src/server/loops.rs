//! The control-plane loops that watch and steer the proxy: snapshots of the
//! sliding windows, alert-rule evaluation, and optimizer decisions. Each
//! reads the config in force at every tick, so reloads change intervals,
//! rules and bounds without a restart. Plugin calls run off the async
//! runtime; the request path only ever reads the knobs they set.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Server;
use crate::alerts::webhook::PostableAlert;
use crate::alerts::{AlertView, Evaluation};
use crate::clock;
use crate::optimize::{Change, DecisionRecord, clamp};
use crate::plugins::bindings::optimize::Adjustment;
use crate::plugins::{PluginFailure, PluginSnapshot};
use crate::proxy::registry::{
    CACHE_CAPACITY, CONCURRENCY_LIMIT, config_value, requested_weight_knob, weight_knob,
};
use crate::telemetry::{BackendStats, ProcessStats, Snapshot};

/// Longer windows every snapshot carries.
pub const WINDOWS_MS: [u32; 5] = [60_000, 300_000, 1_800_000, 3_600_000, 21_600_000];

impl Server {
    /// What alert rules and optimizers see now.
    pub fn snapshot(&self) -> Snapshot {
        let now = clock::now_ms();
        let loaded = self.loaded.load();
        let state = self.state.load();
        let current_ms = loaded.config.telemetry.current_window.get().as_millis() as u32;
        let windows = &self.registry.windows;
        let backend_span = u64::from(current_ms).div_ceil(1000).min(10);
        let now_s = now / 1000;
        let backends = state
            .upstreams
            .values()
            .flat_map(|up| {
                up.backends.iter().map(move |b| {
                    let view = b.view();
                    let recent = b
                        .state
                        .series
                        .totals(now_s + 1 - backend_span.min(now_s + 1), now_s + 1);
                    let stats = recent.stats(current_ms, backend_span * 1000);
                    BackendStats {
                        id: format!("{}/{}", up.name, b.addr),
                        healthy: view.healthy,
                        ejected: view.ejected,
                        weight: b.weight(),
                        in_flight: view.in_flight,
                        ewma_latency_us: view.ewma_latency_us,
                        requests: stats.requests,
                        errors: stats.errors,
                        p99_us: stats.p99_us,
                    }
                })
            })
            .collect();
        let cpu = self
            .process
            .lock()
            .map(|mut p| p.cpu_utilization())
            .unwrap_or(0.0);
        Snapshot {
            now_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            current: windows.window(now, current_ms),
            windows: WINDOWS_MS
                .iter()
                .map(|&ms| windows.window(now, ms))
                .collect(),
            in_flight: state.admission.in_flight(),
            concurrency_limit: state.admission.limit(),
            cache_capacity_bytes: if state.caches() {
                state.cache.capacity()
            } else {
                0
            },
            cpu_utilization: cpu,
            memory_rss_bytes: ProcessStats::rss_bytes(),
            memory_limit_bytes: ProcessStats::memory_limit_bytes(),
            backends,
            firing_alerts: self.alerts.firing_names(),
            queue: state.admission.queue_stats(now, current_ms),
            trends: windows.trends(now),
        }
    }
}

/// Starts the alert and optimizer loops and the pool sweep; they end when
/// the server is gone.
pub(super) fn start(server: &Arc<Server>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(alert_loop(Arc::downgrade(server))),
        tokio::spawn(optimizer_loop(Arc::downgrade(server))),
        tokio::spawn(pool_sweep(Arc::downgrade(server))),
    ]
}

/// How often idle backend connections are checked for a close by the
/// backend (the longest a closed one sits in CLOSE_WAIT), and freed memory
/// returned.
const POOL_SWEEP: Duration = Duration::from_secs(2);

async fn pool_sweep(server: Weak<Server>) {
    loop {
        tokio::time::sleep(POOL_SWEEP).await;
        let Some(s) = server.upgrade() else { return };
        let closed = s.registry.sweep_pools();
        s.registry.rate_limits.sweep();
        if closed > 0 {
            tracing::debug!("closed {closed} idle backend connection(s) the backends had closed");
        }
        // Purges freed memory whose delay has passed: mimalloc does it only
        // when asked or while allocating, and an idle proxy allocates
        // little. (The worker this runs on; with one worker, all of it.)
        // SAFETY: a plain call into the process's allocator.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

async fn alert_loop(server: Weak<Server>) {
    let mut outbox: Vec<PostableAlert> = Vec::new();
    let mut last_repeat = Instant::now();
    loop {
        let Some(s) = server.upgrade() else { return };
        let cfg = s.loaded.load().config.alerts.clone();
        drop(s);
        tokio::time::sleep(cfg.interval.get()).await;
        let Some(s) = server.upgrade() else { return };
        let rules: Vec<_> = s.plugins.load().alerts().cloned().collect();
        if rules.is_empty() && s.alerts.view().0.is_empty() {
            continue;
        }
        let snapshot = s.snapshot();
        let overrides = cfg.rules.clone();
        let evaluated = tokio::task::spawn_blocking(move || {
            let ps = PluginSnapshot::from(&snapshot);
            rules
                .iter()
                .map(|rule| {
                    let meta = rule.describe().ok();
                    let over = overrides.get(&*rule.name);
                    let for_ = over
                        .and_then(|o| o.for_)
                        .map(|d| d.get())
                        .or(meta.as_ref().map(|m| ms(m.for_ms)));
                    let keep = over
                        .and_then(|o| o.keep_firing_for)
                        .map(|d| d.get())
                        .or(meta.as_ref().map(|m| ms(m.keep_firing_for_ms)));
                    Evaluation {
                        rule: rule.name.to_string(),
                        for_: for_.unwrap_or_default(),
                        keep_firing_for: keep.unwrap_or_default(),
                        findings: rule.evaluate_or_report(&ps),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(evaluations) = evaluated else { continue };
        let changes = s.alerts.update(evaluations, cfg.resolved_retention.get());
        for a in &changes.fired {
            tracing::warn!(rule = %a.rule, alert = %a.key, severity = a.severity, value = a.value, threshold = a.threshold, "alert firing: {}", a.summary);
        }
        for a in &changes.resolved {
            tracing::info!(rule = %a.rule, alert = %a.key, "alert resolved: {}", a.summary);
        }
        set_firing_gauges(&s.alerts.firing());
        let Some(url) = &cfg.webhook_url else {
            outbox.clear();
            continue;
        };
        let generator = format!(
            "http://{}/admin/alerts",
            s.loaded.load().config.admin.address
        );
        outbox.extend(
            changes
                .fired
                .iter()
                .chain(&changes.resolved)
                .map(|v| PostableAlert::from_view(v, &generator)),
        );
        if last_repeat.elapsed() >= cfg.webhook_repeat.get() {
            last_repeat = Instant::now();
            let firing = s.alerts.firing();
            outbox.extend(
                firing
                    .iter()
                    .filter(|v| !changes.fired.iter().any(|f| same(f, v)))
                    .map(|v| PostableAlert::from_view(v, &generator)),
            );
        }
        if outbox.is_empty() {
            continue;
        }
        match s
            .webhook
            .post(url, &outbox, cfg.webhook_timeout.get())
            .await
        {
            Ok(()) => outbox.clear(),
            Err(e) => {
                metrics::counter!("switchyard_alert_webhook_failures_total").increment(1);
                tracing::warn!(
                    "alert webhook {url} failed ({e}); {} alert(s) will be sent again",
                    outbox.len()
                );
                let keep = outbox.len().saturating_sub(1000);
                outbox.drain(..keep);
            }
        }
    }
}

fn ms(n: u32) -> Duration {
    Duration::from_millis(u64::from(n))
}

fn same(a: &AlertView, b: &AlertView) -> bool {
    a.rule == b.rule && a.key == b.key
}

/// `switchyard_alerts_firing{rule,severity}`: set for every pair seen, so a
/// pair whose alerts resolved goes back to 0.
fn set_firing_gauges(firing: &[AlertView]) {
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<(String, &'static str), ()>>> = OnceLock::new();
    let mut counts: HashMap<(String, &'static str), f64> = HashMap::new();
    for a in firing {
        *counts.entry((a.rule.clone(), a.severity)).or_default() += 1.0;
    }
    let Ok(mut seen) = SEEN.get_or_init(Default::default).lock() else {
        return;
    };
    for key in counts.keys() {
        seen.insert(key.clone(), ());
    }
    for (rule, severity) in seen.keys() {
        let n = counts
            .get(&(rule.clone(), *severity))
            .copied()
            .unwrap_or(0.0);
        metrics::gauge!("switchyard_alerts_firing", "rule" => rule.clone(), "severity" => *severity).set(n);
    }
}

async fn optimizer_loop(server: Weak<Server>) {
    loop {
        let Some(s) = server.upgrade() else { return };
        let interval = s.loaded.load().config.optimizer.interval.get();
        drop(s);
        tokio::time::sleep(interval).await;
        let Some(s) = server.upgrade() else { return };
        let optimizers: Vec<_> = s.plugins.load().optimizers().cloned().collect();
        if optimizers.is_empty() {
            continue;
        }
        for plugin in optimizers {
            let snapshot = s.snapshot();
            let state = s.optimizer.state(&plugin.name);
            let deciding = plugin.clone();
            let decided = tokio::task::spawn_blocking(move || {
                deciding.decide(&PluginSnapshot::from(&snapshot), &state)
            })
            .await;
            match decided {
                Ok(Ok(decision)) => {
                    s.optimizer.set_state(&plugin.name, decision.state.clone());
                    apply(&s, &plugin.name, decision.adjustments, decision.reason).await;
                }
                Ok(Err(failure)) => record_failure(&s, &failure),
                Err(e) => tracing::error!(plugin = %plugin.name, "optimizer task failed: {e}"),
            }
        }
    }
}

/// The last good parameters stay: nothing is applied.
fn record_failure(s: &Server, failure: &PluginFailure) {
    tracing::warn!(plugin = %failure.plugin, "optimizer failed, knobs unchanged: {failure}");
    let error = format!("{}: {}", failure.cause.as_str(), failure.message);
    s.optimizer.record(DecisionRecord::new(
        &failure.plugin,
        String::new(),
        Vec::new(),
        false,
        Some(error),
    ));
}

/// Holds each adjustment to the bounds, then applies it (or not, in dry
/// run). An applied knob is owned by `plugin` until it is removed or the
/// config's value for the knob changes (see `proxy::registry::Knobs`). A
/// weight change touches that backend's weight and its balancer, nothing
/// else: budgets, counters and rotations run on.
async fn apply(s: &Arc<Server>, plugin: &str, adjustments: Vec<Adjustment>, reason: String) {
    let loaded = s.loaded.load();
    let config = &loaded.config.optimizer;
    let b = &config.bounds;
    let state = s.state.load();
    let knobs = &s.registry.knobs;
    let mut changes = Vec::new();
    for adj in adjustments {
        match adj {
            Adjustment::ConcurrencyLimit(requested) => {
                let current = state.admission.limit();
                let bound = &b.concurrency_limit;
                let to = clamp(
                    (current > 0).then_some(u64::from(current)),
                    u64::from(requested),
                    bound.min.into(),
                    bound.max.into(),
                    bound.max_step.into(),
                );
                if to != u64::from(current) {
                    if !config.dry_run {
                        let configured = loaded.config.admission.max_concurrency;
                        knobs.set(CONCURRENCY_LIMIT, to, plugin, configured.into());
                        state.admission.set_limit(to as u32);
                    }
                    changes.push(Change {
                        knob: CONCURRENCY_LIMIT.into(),
                        from: current.into(),
                        requested: requested.into(),
                        to,
                        clamped: to != u64::from(requested),
                    });
                }
            }
            Adjustment::BackendWeight(w) => {
                let target = w.backend.split_once('/').and_then(|(name, addr)| {
                    let up = state.upstreams.get(name)?;
                    let backend = up.backends.iter().find(|bk| bk.addr.as_str() == addr)?;
                    Some((up, backend))
                });
                let Some((up, backend)) = target else {
                    tracing::debug!(plugin, "weight for unknown backend {} ignored", w.backend);
                    continue;
                };
                let current = backend.weight();
                let bound = &b.backend_weight;
                let to = clamp(
                    Some(current.into()),
                    w.weight.into(),
                    bound.min.into(),
                    bound.max.into(),
                    bound.max_step.into(),
                );
                if to != u64::from(current) {
                    if !config.dry_run {
                        let knob = weight_knob(&up.name, &backend.addr);
                        let configured = config_value(&loaded.config, &knob).unwrap_or(0);
                        knobs.set(&knob, to, plugin, configured);
                        up.set_weight(backend.addr.as_str(), to as u32);
                    }
                    changes.push(Change {
                        knob: requested_weight_knob(&w.backend),
                        from: current.into(),
                        requested: w.weight.into(),
                        to,
                        clamped: to != u64::from(w.weight),
                    });
                }
            }
            Adjustment::CacheCapacityBytes(requested) => {
                if !state.caches() {
                    tracing::debug!(
                        plugin,
                        "cache capacity {requested} ignored: no route caches"
                    );
                    continue;
                }
                let current = state.cache.capacity();
                let bound = &b.cache_capacity;
                let to = clamp(
                    Some(current),
                    requested,
                    bound.min.0,
                    bound.max.0,
                    bound.max_step.0,
                );
                if to != current {
                    if !config.dry_run {
                        let configured = loaded.config.cache.capacity.0;
                        knobs.set(CACHE_CAPACITY, to, plugin, configured);
                        state.cache.resize(to);
                    }
                    changes.push(Change {
                        knob: CACHE_CAPACITY.into(),
                        from: current,
                        requested,
                        to,
                        clamped: to != requested,
                    });
                }
            }
        }
    }
    for c in &changes {
        let clamp_note = if c.clamped {
            format!(" (asked {}, held to the bounds)", c.requested)
        } else {
            String::new()
        };
        let verb = if config.dry_run {
            "would change"
        } else {
            "changed"
        };
        tracing::info!(
            plugin,
            "optimizer {verb} {} {} -> {}{clamp_note}: {reason}",
            c.knob,
            c.from,
            c.to
        );
    }
    s.optimizer.record(DecisionRecord::new(
        plugin,
        reason,
        changes,
        config.dry_run,
        None,
    ));
}
