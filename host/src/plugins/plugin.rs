//! One configured plugin: its current version behind an `ArcSwap`, the live
//! instance that serves calls, limits on every call, failure accounting,
//! quarantine with backoff, and hot swap.
//!
//! A call loads the current version once and finishes on it, so a swap never
//! disturbs a call in flight. A call that traps, times out or exhausts memory
//! or fuel discards the instance (a fresh one is made for the next call) and
//! counts as a failure; after `quarantine_after` failures in a row the plugin
//! is quarantined for an exponentially growing time, during which calls fail
//! at once without running plugin code.
//!
//! A swap to a version the compile cache has not seen serves it from a
//! Winch build first (see [`PluginEngine::baseline`]): a Python or
//! JavaScript plugin carries an interpreter of megabytes, whose optimising
//! compile takes seconds. A thread then makes the Cranelift build and puts
//! it in place the same way a swap does (the Winch instance hands over its
//! state), unless a newer version came first. That second step is not
//! counted as a swap: `/admin/plugins` shows it as `compiler`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram};
use serde::Serialize;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::cache::CacheOutcome;
use super::compat::Instantiate;
use super::engine::{Compiled, Compiler, PluginEngine};
use super::host_state::HostState;
use crate::clock;
use crate::config::{PluginKind, PluginLimits, PluginRuntimeSection, PluginSection};

/// What differs between the three kinds of plugin.
pub trait Kind: Sized + Send + Sync + 'static {
    const KIND: PluginKind;
    type Pre: Instantiate<Bindings = Self::Bindings> + Send + Sync;
    type Bindings: Send;
    fn prepare(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Self::Bindings> {
        pre.instantiate_in(store)
    }
    /// Runs the plugin's `init` (and any self-check). `Ok(Err(reason))`
    /// means the plugin refused its config.
    fn init(
        bindings: &Self::Bindings,
        store: &mut Store<HostState>,
        args: &InitArgs<'_>,
    ) -> wasmtime::Result<Result<(), String>>;
    /// State to hand to the next version on a swap, if the kind has any.
    fn handoff(
        _bindings: &Self::Bindings,
        _store: &mut Store<HostState>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

pub struct InitArgs<'a> {
    pub config: &'a str,
    pub seed: u64,
    pub handoff: Option<Vec<u8>>,
}

/// Why a call did not produce a usable result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureCause {
    Trap,
    Timeout,
    Memory,
    Fuel,
    /// The result broke the host's bounds (too many items, too large).
    Output,
    /// `init` refused the config or failed while making a fresh instance.
    Init,
    Quarantined,
}

impl FailureCause {
    pub const ALL: [FailureCause; 7] = [
        FailureCause::Trap,
        FailureCause::Timeout,
        FailureCause::Memory,
        FailureCause::Fuel,
        FailureCause::Output,
        FailureCause::Init,
        FailureCause::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureCause::Trap => "trap",
            FailureCause::Timeout => "timeout",
            FailureCause::Memory => "memory",
            FailureCause::Fuel => "fuel",
            FailureCause::Output => "output",
            FailureCause::Init => "init",
            FailureCause::Quarantined => "quarantined",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginFailure {
    pub plugin: Arc<str>,
    pub cause: FailureCause,
    pub message: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plugin {} failed ({}): {}",
            self.plugin,
            self.cause.as_str(),
            self.message
        )
    }
}

impl std::error::Error for PluginFailure {}

struct Live<K: Kind> {
    store: Store<HostState>,
    bindings: K::Bindings,
    /// How long `init` took.
    init_us: f64,
}

/// One loaded version of a plugin's file.
pub struct Version<K: Kind> {
    pub content_hash: String,
    pub loaded_at: SystemTime,
    pub cache: CacheOutcome,
    /// How long this version's first `init` took, in microseconds.
    pub init_us: f64,
    /// How long its compile (or the compile cache's read) took.
    pub compile_time: std::time::Duration,
    /// How long instantiating it and running `init` took.
    pub start_time: std::time::Duration,
    /// The engine it was compiled by; its stores are made there.
    engine: Arc<PluginEngine>,
    pre: K::Pre,
    live: Mutex<Option<Live<K>>>,
}

struct PluginMetrics {
    calls: Counter,
    failures: BTreeMap<FailureCause, Counter>,
    duration: Histogram,
    swaps: Counter,
    swap_failures: Counter,
    quarantined: Gauge,
}

impl PluginMetrics {
    fn new(name: &str, kind: PluginKind) -> Self {
        let labels = [
            ("plugin", name.to_string()),
            ("kind", kind.as_str().to_string()),
        ];
        PluginMetrics {
            calls: metrics::counter!("switchyard_plugin_calls_total", &labels),
            failures: FailureCause::ALL
                .into_iter()
                .map(|cause| {
                    let mut l = labels.to_vec();
                    l.push(("cause", cause.as_str().to_string()));
                    (
                        cause,
                        metrics::counter!("switchyard_plugin_failures_total", &l),
                    )
                })
                .collect(),
            duration: metrics::histogram!("switchyard_plugin_call_duration_seconds", &labels),
            swaps: metrics::counter!("switchyard_plugin_swaps_total", &labels),
            swap_failures: metrics::counter!("switchyard_plugin_swap_failures_total", &labels),
            quarantined: metrics::gauge!("switchyard_plugin_quarantined", &labels),
        }
    }
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    failures: Mutex<BTreeMap<FailureCause, u64>>,
    /// The last failure's text and when it happened.
    last_error: Mutex<Option<(String, SystemTime)>>,
    swaps: AtomicU64,
    swap_failures: AtomicU64,
    consecutive_failures: AtomicU32,
    quarantines: AtomicU32,
    quarantined_until_ms: AtomicU64,
    /// Largest linear memory of instances discarded after a failure.
    peak_memory: AtomicU64,
}

/// A configured plugin of kind `K`.
pub struct Plugin<K: Kind> {
    pub name: Arc<str>,
    pub section: PluginSection,
    /// The file, resolved against the config's directory.
    pub path: PathBuf,
    config: String,
    runtime: PluginRuntimeSection,
    engine: Arc<PluginEngine>,
    current: ArcSwap<Version<K>>,
    stats: Stats,
    metrics: PluginMetrics,
    seed: AtomicU64,
    swap_lock: Mutex<()>,
}

/// What `GET /admin/plugins` shows.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct PluginView {
    pub name: String,
    pub kind: String,
    pub path: String,
    pub content_hash: String,
    pub loaded_at: String,
    pub compiled_from_cache: bool,
    pub calls: u64,
    pub failures: u64,
    pub failures_by_cause: BTreeMap<String, u64>,
    /// The last failure (of a call or a swap) since the last successful
    /// swap, as `cause: message`.
    pub last_error: Option<String>,
    /// When `last_error` happened, RFC 3339.
    pub last_error_at: Option<String>,
    pub swaps: u64,
    pub swap_failures: u64,
    /// What compiled the version serving: `cranelift`, or `winch` for the
    /// moments after a swap until the optimised build is in place.
    pub compiler: String,
    pub consecutive_failures: u32,
    pub quarantined: bool,
    pub quarantined_for_ms: u64,
}

/// Result of a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reloaded {
    Swapped {
        from: String,
        to: String,
        /// What compiled the version now serving (Winch until its
        /// optimised build is in place).
        compiler: Compiler,
    },
    Unchanged,
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A lock on plugin bookkeeping; a panic elsewhere never leaves it unusable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a message to one readable line of bounded length.
fn short(message: String) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 500 {
        one_line.chars().take(500).collect::<String>() + "…"
    } else {
        one_line
    }
}

impl<K: Kind> Plugin<K> {
    /// Loads the plugin `section` describes: compile (or take the cached
    /// compilation), check the contract, instantiate, and run `init`.
    pub fn load(
        section: &PluginSection,
        base_dir: &Path,
        runtime: &PluginRuntimeSection,
        engine: Arc<PluginEngine>,
    ) -> Result<Self, String> {
        Self::load_with(section, base_dir, runtime, engine, 0, None)
    }

    /// As [`Plugin::load`], with the seed and the handed-over state `init`
    /// is given (a generator's; `plugin test` replays a swap with it).
    pub fn load_with(
        section: &PluginSection,
        base_dir: &Path,
        runtime: &PluginRuntimeSection,
        engine: Arc<PluginEngine>,
        seed: u64,
        handoff: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let bytes = read_file(&base_dir.join(&section.path))?;
        let hash = super::cache::content_hash(&bytes);
        let compiled = engine.compile(&bytes, &hash, K::KIND)?;
        Self::load_compiled(section, base_dir, runtime, engine, compiled, seed, handoff)
    }

    /// As [`Plugin::load_with`], for the file already compiled by `engine`
    /// (`plugin test` compiles it first to learn its kind).
    pub fn load_compiled(
        section: &PluginSection,
        base_dir: &Path,
        runtime: &PluginRuntimeSection,
        engine: Arc<PluginEngine>,
        compiled: Compiled,
        seed: u64,
        handoff: Option<Vec<u8>>,
    ) -> Result<Self, String> {
        let path = base_dir.join(&section.path);
        let name: Arc<str> = Arc::from(section.name.as_str());
        let config = section.config_string();
        let version = Self::start_version(
            &engine,
            &name,
            compiled,
            &section.limits,
            &InitArgs {
                config: &config,
                seed,
                handoff,
            },
        )?;
        Ok(Plugin {
            metrics: PluginMetrics::new(&name, K::KIND),
            name,
            section: section.clone(),
            path,
            config,
            runtime: runtime.clone(),
            engine,
            current: ArcSwap::from_pointee(version),
            stats: Stats::default(),
            seed: AtomicU64::new(seed),
            swap_lock: Mutex::new(()),
        })
    }

    fn new_store(
        engine: &PluginEngine,
        name: &Arc<str>,
        limits: &PluginLimits,
    ) -> Store<HostState> {
        let mut state = HostState::new(name.clone(), limits.memory.0 as usize);
        state.log_capture = engine.log_capture();
        let mut store = Store::new(engine.engine(), state);
        store.limiter(|s| &mut s.memory);
        store
    }

    fn arm(store: &mut Store<HostState>, limits: &PluginLimits, deadline: Deadline) {
        store.set_epoch_deadline(PluginEngine::deadline_ticks(deadline.of(limits).get()));
        // Fails only when the engine does not meter fuel; then there is no
        // fuel limit to set (validation requires metering for `limits.fuel`).
        let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        store.data_mut().memory.refused = false;
    }

    /// Instantiates a version and runs `init` on it.
    fn start_live(
        engine: &PluginEngine,
        name: &Arc<str>,
        pre: &K::Pre,
        limits: &PluginLimits,
        args: &InitArgs<'_>,
    ) -> Result<Live<K>, (FailureCause, String)> {
        let mut store = Self::new_store(engine, name, limits);
        let _running = engine.running();
        Self::arm(&mut store, limits, Deadline::Init);
        let bindings = K::instantiate(pre, &mut store).map_err(|e| {
            let (cause, what) = explain(&e, &store, limits, Deadline::Init);
            (cause, format!("instantiation failed: {what}"))
        })?;
        let started = Instant::now();
        match K::init(&bindings, &mut store, args) {
            Ok(Ok(())) => Ok(Live {
                store,
                bindings,
                init_us: started.elapsed().as_secs_f64() * 1e6,
            }),
            Ok(Err(reason)) => Err((
                FailureCause::Init,
                short(format!("init refused its config: {reason}")),
            )),
            Err(e) => {
                let (cause, what) = explain(&e, &store, limits, Deadline::Init);
                Err((cause, format!("init failed: {what}")))
            }
        }
    }

    /// A version of `compiled` (by `engine`), instantiated and initialised.
    fn start_version(
        engine: &Arc<PluginEngine>,
        name: &Arc<str>,
        compiled: Compiled,
        limits: &PluginLimits,
        args: &InitArgs<'_>,
    ) -> Result<Version<K>, String> {
        let started = Instant::now();
        let pre = K::prepare(compiled.pre)
            .map_err(|e| short(format!("does not match the {} world: {e:#}", K::KIND)))?;
        let live = Self::start_live(engine, name, &pre, limits, args).map_err(|(_, m)| m)?;
        Ok(Version {
            content_hash: compiled.content_hash,
            loaded_at: SystemTime::now(),
            cache: compiled.cache,
            init_us: live.init_us,
            compile_time: compiled.compile_time,
            start_time: started.elapsed(),
            engine: engine.clone(),
            pre,
            live: Mutex::new(Some(live)),
        })
    }

    pub fn kind(&self) -> PluginKind {
        K::KIND
    }

    pub fn current(&self) -> Arc<Version<K>> {
        self.current.load_full()
    }

    /// Seed handed to `init` of fresh generator instances.
    pub fn set_seed(&self, seed: u64) {
        self.seed.store(seed, Relaxed);
    }

    /// Runs `f` against the live instance with the plugin's deadline, memory
    /// cap and fuel; `check` validates the result. Failures are counted and
    /// feed the quarantine; a success clears the count.
    pub fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &K::Bindings) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), String>,
    ) -> Result<R, PluginFailure> {
        self.call_with(f, check, true)
    }

    /// As [`Plugin::call`], for a call that runs beside the plugin's main
    /// one (an alert rule's `describe` before each `evaluate`): its failure
    /// counts towards quarantine like any other, but its success does not
    /// clear the count, so a rule that describes itself and then fails to
    /// evaluate is still quarantined.
    pub fn call_beside<R>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &K::Bindings) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), String>,
    ) -> Result<R, PluginFailure> {
        self.call_with(f, check, false)
    }

    fn call_with<R>(
        &self,
        f: impl FnOnce(&mut Store<HostState>, &K::Bindings) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), String>,
        success_clears: bool,
    ) -> Result<R, PluginFailure> {
        self.stats.calls.fetch_add(1, Relaxed);
        self.metrics.calls.increment(1);
        let now = clock::now_ms();
        let until = self.stats.quarantined_until_ms.load(Relaxed);
        if until > now {
            return Err(self.failed(
                FailureCause::Quarantined,
                format!(
                    "quarantined for {} ms more after repeated failures",
                    until - now
                ),
                false,
            ));
        }
        let version = self.current.load_full();
        let mut slot = version.live.lock().unwrap_or_else(|e| e.into_inner());
        let limits = &self.section.limits;
        if slot.is_none() {
            let args = InitArgs {
                config: &self.config,
                seed: self.seed.load(Relaxed),
                handoff: None,
            };
            match Self::start_live(&version.engine, &self.name, &version.pre, limits, &args) {
                Ok(live) => *slot = Some(live),
                Err((cause, message)) => {
                    let cause = if cause == FailureCause::Trap {
                        FailureCause::Init
                    } else {
                        cause
                    };
                    return Err(self.failed(cause, message, true));
                }
            }
        }
        let Some(live) = slot.as_mut() else {
            return Err(self.failed(FailureCause::Init, "no instance".into(), true));
        };
        let _running = version.engine.running();
        Self::arm(&mut live.store, limits, Deadline::Call);
        let started = Instant::now();
        let result = f(&mut live.store, &live.bindings);
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(value) => match check(&value) {
                Ok(()) => {
                    if success_clears {
                        self.succeeded();
                    }
                    Ok(value)
                }
                Err(why) => Err(self.failed(FailureCause::Output, why, true)),
            },
            Err(e) => {
                let (cause, what) = explain(&e, &live.store, limits, Deadline::Call);
                let peak = live.store.data().memory.peak_bytes as u64;
                self.stats.peak_memory.fetch_max(peak, Relaxed);
                // A trapped instance may be in any state: never reuse it.
                *slot = None;
                Err(self.failed(cause, what, true))
            }
        }
    }

    fn succeeded(&self) {
        if self.stats.consecutive_failures.swap(0, Relaxed) != 0 {
            self.stats.quarantines.store(0, Relaxed);
            self.metrics.quarantined.set(0.0);
        }
    }

    fn failed(
        &self,
        cause: FailureCause,
        message: String,
        counts_towards_quarantine: bool,
    ) -> PluginFailure {
        *self
            .stats
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cause)
            .or_default() += 1;
        if let Some(c) = self.metrics.failures.get(&cause) {
            c.increment(1);
        }
        if counts_towards_quarantine {
            self.set_last_error(Some(format!("{}: {message}", cause.as_str())));
            tracing::warn!(plugin = %self.name, kind = %K::KIND, cause = cause.as_str(), "plugin call failed: {message}");
            let consecutive = self.stats.consecutive_failures.fetch_add(1, Relaxed) + 1;
            if consecutive >= self.runtime.quarantine_after {
                let n = self.stats.quarantines.fetch_add(1, Relaxed);
                let backoff = self
                    .runtime
                    .quarantine_base
                    .get()
                    .saturating_mul(1u32 << n.min(16))
                    .min(self.runtime.quarantine_max.get());
                self.stats
                    .quarantined_until_ms
                    .store(clock::now_ms() + backoff.as_millis() as u64, Relaxed);
                self.stats.consecutive_failures.store(0, Relaxed);
                self.metrics.quarantined.set(1.0);
                tracing::warn!(
                    plugin = %self.name,
                    "quarantined for {} after {consecutive} failures in a row",
                    humantime::format_duration(backoff)
                );
            }
        }
        PluginFailure {
            plugin: self.name.clone(),
            cause,
            message,
        }
    }

    /// Re-reads the file and swaps in the new version if it changed (or
    /// always, with `force`). The old version keeps serving if anything fails.
    pub fn reload(self: &Arc<Self>, force: bool) -> Result<Reloaded, String> {
        let _one_at_a_time = self.swap_lock.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.try_reload(force);
        match &result {
            Ok(Reloaded::Swapped { from, to, .. }) => {
                self.stats.swaps.fetch_add(1, Relaxed);
                self.metrics.swaps.increment(1);
                self.stats.quarantined_until_ms.store(0, Relaxed);
                self.stats.consecutive_failures.store(0, Relaxed);
                self.stats.quarantines.store(0, Relaxed);
                self.metrics.quarantined.set(0.0);
                // The new version has not failed yet.
                self.set_last_error(None);
                let v = self.current.load();
                tracing::info!(
                    plugin = %self.name,
                    "swapped in version {} (was {}): compiled by {} in {} ms, started in {} ms",
                    &to[..12],
                    &from[..12],
                    v.engine.compiler().as_str(),
                    v.compile_time.as_millis(),
                    v.start_time.as_millis()
                );
            }
            Ok(Reloaded::Unchanged) => {}
            Err(e) => {
                self.stats.swap_failures.fetch_add(1, Relaxed);
                self.metrics.swap_failures.increment(1);
                self.set_last_error(Some(format!("reload: {e}")));
                tracing::error!(plugin = %self.name, "reload failed, the previous version keeps serving: {e}");
            }
        }
        result
    }

    fn set_last_error(&self, error: Option<String>) {
        *lock(&self.stats.last_error) = error.map(|e| (e, SystemTime::now()));
    }

    /// The state `old`'s live instance hands to its successor, if any.
    fn handoff_of(&self, old: &Version<K>) -> Option<Vec<u8>> {
        let mut slot = old.live.lock().unwrap_or_else(|e| e.into_inner());
        let live = slot.as_mut()?;
        let _running = old.engine.running();
        Self::arm(&mut live.store, &self.section.limits, Deadline::Call);
        K::handoff(&live.bindings, &mut live.store).unwrap_or_else(|e| {
            tracing::warn!(plugin = %self.name, "old version could not hand over its state: {e:#}");
            None
        })
    }

    fn try_reload(self: &Arc<Self>, force: bool) -> Result<Reloaded, String> {
        let bytes = read_file(&self.path)?;
        let old = self.current.load_full();
        let hash = super::cache::content_hash(&bytes);
        if !force && hash == old.content_hash {
            return Ok(Reloaded::Unchanged);
        }
        // Not yet compiled by Cranelift: serve a Winch build meanwhile (the
        // Winch engine is made on the first swap that needs it).
        let engine = (self.runtime.baseline_first && !self.engine.has_compiled(&hash))
            .then(|| self.engine.baseline())
            .flatten()
            .unwrap_or_else(|| self.engine.clone());
        let compiled = engine.compile(&bytes, &hash, K::KIND)?;
        // Asked for once the new version is compiled, so that what the old
        // one did during the compile is handed over too.
        let args = InitArgs {
            config: &self.config,
            seed: self.seed.load(Relaxed),
            handoff: self.handoff_of(&old),
        };
        let version =
            Self::start_version(&engine, &self.name, compiled, &self.section.limits, &args)?;
        self.current.store(Arc::new(version));
        if engine.compiler() == Compiler::Winch {
            self.optimise_later(bytes, hash.clone());
        }
        Ok(Reloaded::Swapped {
            from: old.content_hash.clone(),
            to: hash,
            compiler: engine.compiler(),
        })
    }

    /// Makes the Cranelift build of the version with `content_hash` on a
    /// thread of its own, and puts it in place of the Winch build serving
    /// it, unless another version was swapped in meanwhile. A failure leaves
    /// the Winch build serving, and is logged.
    fn optimise_later(self: &Arc<Self>, bytes: Vec<u8>, content_hash: String) {
        let plugin = self.clone();
        let spawned = std::thread::Builder::new()
            .name("plugin-compile".into())
            .spawn(move || {
                if let Err(e) = plugin.optimise(&bytes, &content_hash) {
                    tracing::warn!(plugin = %plugin.name, "the optimised build failed; the baseline build keeps serving: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(plugin = %self.name, "cannot start the optimised build: {e}");
        }
    }

    fn optimise(&self, bytes: &[u8], content_hash: &str) -> Result<(), String> {
        let compiled = self.engine.compile(bytes, content_hash, K::KIND)?;
        let _one_at_a_time = self.swap_lock.lock().unwrap_or_else(|e| e.into_inner());
        let serving = self.current.load_full();
        if serving.content_hash != content_hash || serving.engine.compiler() != Compiler::Winch {
            return Ok(());
        }
        let args = InitArgs {
            config: &self.config,
            seed: self.seed.load(Relaxed),
            handoff: self.handoff_of(&serving),
        };
        let mut version = Self::start_version(
            &self.engine,
            &self.name,
            compiled,
            &self.section.limits,
            &args,
        )?;
        version.loaded_at = serving.loaded_at;
        tracing::info!(
            plugin = %self.name,
            "version {} now runs its optimised build: compiled by cranelift in {} ms, started in {} ms",
            &content_hash[..12],
            version.compile_time.as_millis(),
            version.start_time.as_millis()
        );
        self.current.store(Arc::new(version));
        Ok(())
    }

    /// Instantiates the current version in a fresh store and drops it: the
    /// cost of a cold start (pooling allocator included), without `init`.
    pub fn instantiate_check(&self) -> Result<(), String> {
        let version = self.current.load();
        let mut store = Self::new_store(&version.engine, &self.name, &self.section.limits);
        let _running = version.engine.running();
        Self::arm(&mut store, &self.section.limits, Deadline::Init);
        K::instantiate(&version.pre, &mut store)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    /// Largest linear memory an instance has reached: the live one, or
    /// one discarded after a failure (running out of memory, say).
    pub fn peak_memory_bytes(&self) -> usize {
        let version = self.current.load();
        let slot = version.live.lock().unwrap_or_else(|e| e.into_inner());
        let live = slot
            .as_ref()
            .map_or(0, |live| live.store.data().memory.peak_bytes);
        live.max(self.stats.peak_memory.load(Relaxed) as usize)
    }

    pub fn view(&self) -> PluginView {
        let v = self.current.load();
        let failures = lock(&self.stats.failures).clone();
        let now = clock::now_ms();
        let until = self.stats.quarantined_until_ms.load(Relaxed);
        let last_error = lock(&self.stats.last_error).clone();
        PluginView {
            name: self.name.to_string(),
            kind: K::KIND.as_str().into(),
            path: self.path.display().to_string(),
            content_hash: v.content_hash.clone(),
            loaded_at: humantime::format_rfc3339_seconds(v.loaded_at).to_string(),
            compiled_from_cache: v.cache == CacheOutcome::Hit,
            calls: self.stats.calls.load(Relaxed),
            failures: failures.values().sum(),
            failures_by_cause: failures
                .iter()
                .map(|(c, n)| (c.as_str().to_string(), *n))
                .collect(),
            last_error_at: last_error
                .as_ref()
                .map(|(_, at)| humantime::format_rfc3339_millis(*at).to_string()),
            last_error: last_error.map(|(e, _)| e),
            swaps: self.stats.swaps.load(Relaxed),
            swap_failures: self.stats.swap_failures.load(Relaxed),
            compiler: v.engine.compiler().as_str().into(),
            consecutive_failures: self.stats.consecutive_failures.load(Relaxed),
            quarantined: until > now,
            quarantined_for_ms: until.saturating_sub(now),
        }
    }

    /// Whether this plugin was loaded from the same file content and settings
    /// as `section` asks for (a reload can keep it as is).
    pub fn same_as(&self, section: &PluginSection, base_dir: &Path) -> bool {
        self.section == *section
            && self.path == base_dir.join(&section.path)
            && read_file(&self.path)
                .is_ok_and(|b| super::cache::content_hash(&b) == self.current.load().content_hash)
    }
}

/// Which deadline plugin code runs under: instantiation and `init` build
/// the instance once and get `limits.init_timeout`; every other call gets
/// `limits.timeout`.
#[derive(Clone, Copy)]
enum Deadline {
    Init,
    Call,
}

impl Deadline {
    fn of(self, limits: &PluginLimits) -> crate::config::Dur {
        match self {
            Deadline::Init => limits.init_timeout,
            Deadline::Call => limits.timeout,
        }
    }

    fn key(self) -> &'static str {
        match self {
            Deadline::Init => "limits.init_timeout",
            Deadline::Call => "limits.timeout",
        }
    }
}

/// Sorts a wasmtime error into a failure cause and says what happened, with
/// the last thing the plugin wrote to stderr (a panic message, typically).
fn explain(
    e: &wasmtime::Error,
    store: &Store<HostState>,
    limits: &PluginLimits,
    deadline: Deadline,
) -> (FailureCause, String) {
    let trap = e.downcast_ref::<wasmtime::Trap>();
    let (cause, what) = match trap {
        Some(wasmtime::Trap::Interrupt) => (
            FailureCause::Timeout,
            format!(
                "did not return within {} ({})",
                deadline.of(limits),
                deadline.key()
            ),
        ),
        Some(wasmtime::Trap::OutOfFuel) => (
            FailureCause::Fuel,
            "ran out of fuel (limits.fuel)".to_string(),
        ),
        _ if store.data().memory.refused => (
            FailureCause::Memory,
            format!(
                "ran out of memory: growth past {} refused (limits.memory)",
                limits.memory
            ),
        ),
        Some(t) => (FailureCause::Trap, format!("trapped: {t}")),
        None => (FailureCause::Trap, short(format!("{e:#}"))),
    };
    let said = store.data().stderr.text();
    let what = if said.is_empty() {
        what
    } else {
        format!("{what}; plugin stderr: {said}")
    };
    (cause, short(what))
}

/// Bounds on what a plugin may return, so a hostile one cannot flood the host.
pub fn at_most(what: &str, n: usize, max: usize) -> Result<(), String> {
    if n > max {
        Err(format!("returned {n} {what}; at most {max} are accepted"))
    } else {
        Ok(())
    }
}
