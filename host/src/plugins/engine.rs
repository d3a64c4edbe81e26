//! The process's one wasmtime `Engine`: component model, pooling allocator,
//! epoch interruption driven by a ticker thread, fuel metering available;
//! plus the shared `Linker` and the compiled-component cache.
//!
//! The ticker only runs while plugin code may run: with no call in progress
//! for [`IDLE_TICKS`] ticks it parks, and the next call wakes it. A proxy
//! without plugins (or with a rule evaluated once a second) then is not
//! interrupted 500 times a second by a thread that has nothing to time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::{CacheOutcome, CompiledCache, content_hash};
use super::host_state::HostState;
use super::{bindings, contract};
use crate::config::{PLUGIN_MEMORY_MAX, PluginKind};

/// How often the epoch advances; call deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Ticks without a call in progress after which the ticker parks.
const IDLE_TICKS: u32 = 50;

pub struct PluginEngine {
    engine: Engine,
    fuel: bool,
    linker: Linker<HostState>,
    cache: CompiledCache,
    ticker: Arc<Ticker>,
    ticker_thread: Thread,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker.stop.store(true, SeqCst);
        self.ticker_thread.unpark();
    }
}

/// What the ticker thread and the callers share.
#[derive(Default)]
struct Ticker {
    /// Calls into plugin code in progress.
    active: AtomicUsize,
    /// Set by the ticker before it parks; a call starting then unparks it.
    parked: AtomicBool,
    stop: AtomicBool,
}

impl Ticker {
    fn run(&self, engine: &Engine) {
        let mut idle = 0;
        while !self.stop.load(SeqCst) {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
            idle = if self.active.load(SeqCst) == 0 {
                idle + 1
            } else {
                0
            };
            if idle < IDLE_TICKS {
                continue;
            }
            // A caller increments `active` before it reads `parked`, and
            // this side sets `parked` before it reads `active`: one of the
            // two sees the other, so a call never runs without ticks.
            self.parked.store(true, SeqCst);
            if self.active.load(SeqCst) == 0 && !self.stop.load(SeqCst) {
                std::thread::park();
            }
            self.parked.store(false, SeqCst);
            idle = 0;
        }
    }
}

/// Keeps the epoch ticking while plugin code runs; see [`PluginEngine::running`].
pub struct Running<'a>(&'a PluginEngine);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.ticker.active.fetch_sub(1, SeqCst);
    }
}

/// A compiled, contract-checked component ready to instantiate.
pub struct Compiled {
    pub pre: InstancePre<HostState>,
    pub content_hash: String,
    pub cache: CacheOutcome,
    pub compile_time: Duration,
}

impl PluginEngine {
    /// Default cache directory: `switchyard-plugin-cache` under the system's
    /// temporary directory.
    pub fn default_cache_dir() -> PathBuf {
        std::env::temp_dir().join("switchyard-plugin-cache")
    }

    /// `fuel`: meter fuel so plugins can have `limits.fuel`; it costs every
    /// plugin call about 10%, so it is off unless asked for.
    pub fn new(cache_dir: Option<PathBuf>, fuel: bool) -> anyhow::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(128)
            .total_core_instances(512)
            .total_memories(128)
            .total_tables(256)
            .max_memory_size(PLUGIN_MEMORY_MAX as usize);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)
            .map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e:#}"))?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e:#}"))?;
        bindings::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("cannot link the host interface: {e:#}"))?;
        bindings::v0_1::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("cannot link the 0.1.0 host interface: {e:#}"))?;

        let ticker = Arc::new(Ticker::default());
        let (ticking, shared) = (engine.clone(), ticker.clone());
        let ticker_thread = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || shared.run(&ticking))
            .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker: {e}"))?
            .thread()
            .clone();

        let cache = CompiledCache::new(cache_dir.unwrap_or_else(Self::default_cache_dir), &engine);
        Ok(Arc::new(PluginEngine {
            engine,
            fuel,
            linker,
            cache,
            ticker,
            ticker_thread,
        }))
    }

    /// Marks plugin code as running until the guard drops: epoch deadlines
    /// only pass while the ticker runs, so every entry into a store holds
    /// one of these.
    pub fn running(&self) -> Running<'_> {
        self.ticker.active.fetch_add(1, SeqCst);
        if self.ticker.parked.load(SeqCst) {
            self.ticker_thread.unpark();
        }
        Running(self)
    }

    /// Whether fuel is metered (`plugin_runtime.fuel`).
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache_dir(&self) -> &std::path::Path {
        self.cache.dir()
    }

    /// Epoch ticks for a deadline of `timeout` (rounded up, plus one so a
    /// tick landing right after the call starts does not cut it short).
    pub fn deadline_ticks(timeout: Duration) -> u64 {
        timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
    }

    /// Compiles `bytes` (or loads the cached compilation) without checking
    /// what kind of plugin it is.
    pub fn component(
        &self,
        bytes: &[u8],
    ) -> Result<(Component, String, CacheOutcome, Duration), String> {
        let started = Instant::now();
        let hash = content_hash(bytes);
        if let Some(c) = self.cache.load(&self.engine, &hash) {
            metrics::counter!("switchyard_plugin_compile_cache_total", "result" => "hit")
                .increment(1);
            return Ok((c, hash, CacheOutcome::Hit, started.elapsed()));
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            if wasmparser_says_core_module(bytes) {
                "not a WebAssembly component: this is a core module; build it for the wasm32-wasip2 target".to_string()
            } else {
                format!("not a valid WebAssembly component: {}", e.to_string().lines().next().unwrap_or(""))
            }
        })?;
        metrics::counter!("switchyard_plugin_compile_cache_total", "result" => "miss").increment(1);
        self.cache.store(&hash, &component);
        Ok((component, hash, CacheOutcome::Miss, started.elapsed()))
    }

    /// Compiles (or loads from cache), checks the contract for `kind`, and
    /// pre-instantiates against the host's imports.
    pub fn compile(&self, bytes: &[u8], kind: PluginKind) -> Result<Compiled, String> {
        let (component, content_hash, cache, compile_time) = self.component(bytes)?;
        contract::check(&self.engine, &component, kind)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| contract::explain_link_error(&self.engine, &component, &e))?;
        Ok(Compiled {
            pre,
            content_hash,
            cache,
            compile_time,
        })
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }
}

/// The process's engine, made when the first plugin is loaded: a proxy
/// without plugins never reserves the pooling allocator's address space
/// (hundreds of GiB of virtual memory, which a `ulimit -v` or a memory
/// checker such as valgrind refuses) and never starts the epoch ticker.
pub struct EngineSlot {
    cache_dir: Option<PathBuf>,
    fuel: bool,
    engine: std::sync::Mutex<Option<Arc<PluginEngine>>>,
}

impl EngineSlot {
    pub fn new(cache_dir: Option<PathBuf>, fuel: bool) -> Self {
        EngineSlot {
            cache_dir,
            fuel,
            engine: std::sync::Mutex::new(None),
        }
    }

    /// The engine, made now if it was not yet.
    pub fn get(&self) -> anyhow::Result<Arc<PluginEngine>> {
        let mut slot = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(engine) = slot.as_ref() {
            return Ok(engine.clone());
        }
        let engine = PluginEngine::new(self.cache_dir.clone(), self.fuel)?;
        *slot = Some(engine.clone());
        Ok(engine)
    }

    /// Whether fuel is metered (`plugin_runtime.fuel`, read at start).
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }
}

/// A core module starts with `\0asm` version 1; a component with layer 1.
fn wasmparser_says_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}
