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

use super::cache::{CacheOutcome, CompiledCache, FunctionCache};
use super::host_state::{HostState, LogCapture};
use super::{bindings, contract};
use crate::config::{PLUGIN_MEMORY_MAX, PluginKind};

/// How often the epoch advances; call deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Ticks without a call in progress after which the ticker parks.
const IDLE_TICKS: u32 = 50;

/// Which compiler turns a plugin into machine code: Cranelift optimises
/// (the proxy's choice); Winch, wasmtime's baseline compiler, compiles in a
/// single pass, much faster, to slower code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compiler {
    Cranelift,
    Winch,
}

impl Compiler {
    pub fn as_str(self) -> &'static str {
        match self {
            Compiler::Cranelift => "cranelift",
            Compiler::Winch => "winch",
        }
    }
}

pub struct PluginEngine {
    engine: Engine,
    compiler: Compiler,
    /// A Winch engine beside this one, made on first use: see
    /// [`PluginEngine::baseline`].
    baseline: std::sync::OnceLock<Option<Arc<PluginEngine>>>,
    fuel: bool,
    linker: Linker<HostState>,
    cache: CompiledCache,
    /// Compiled functions, reused by the next version's compile (Cranelift
    /// only).
    functions: Option<Arc<FunctionCache>>,
    ticker: Arc<Ticker>,
    ticker_thread: Thread,
    /// Where `host.log` lines also go, when someone asked to see them
    /// (`plugin test`).
    log_capture: std::sync::OnceLock<LogCapture>,
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
        Self::with_compiler(cache_dir, fuel, Compiler::Cranelift)
    }

    /// As [`PluginEngine::new`], compiling with `compiler`.
    pub fn with_compiler(
        cache_dir: Option<PathBuf>,
        fuel: bool,
        compiler: Compiler,
    ) -> anyhow::Result<Arc<Self>> {
        Self::build(cache_dir, fuel, compiler, true)
    }

    /// `pooled`: instances come from the pooling allocator, which reserves
    /// its address space up front; the baseline engine, which only runs a
    /// version until its optimised build is ready, allocates on demand.
    fn build(
        cache_dir: Option<PathBuf>,
        fuel: bool,
        compiler: Compiler,
        pooled: bool,
    ) -> anyhow::Result<Arc<Self>> {
        let allocation = if pooled {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_component_instances(128)
                .total_core_instances(512)
                .total_memories(128)
                .total_tables(256)
                .max_memory_size(PLUGIN_MEMORY_MAX as usize);
            InstanceAllocationStrategy::Pooling(pool)
        } else {
            InstanceAllocationStrategy::OnDemand
        };
        let cache_dir = cache_dir.unwrap_or_else(Self::default_cache_dir);
        let mut config = Config::new();
        config
            .strategy(match compiler {
                Compiler::Cranelift => wasmtime::Strategy::Cranelift,
                Compiler::Winch => wasmtime::Strategy::Winch,
            })
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .allocation_strategy(allocation);
        if compiler == Compiler::Winch {
            // Winch leaves the trampolines between host and wasm (one per
            // function a table or an export lets escape: thousands in an
            // interpreter) to Cranelift, which optimised them for as long
            // as Winch took over all the code. They are a few instructions
            // each: compile them without optimisation and with the
            // single-pass register allocator.
            config
                .cranelift_opt_level(wasmtime::OptLevel::None)
                .cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
        }
        let functions =
            (compiler == Compiler::Cranelift).then(|| Arc::new(FunctionCache::new(&cache_dir)));
        if let Some(functions) = &functions {
            config
                .enable_incremental_compilation(functions.clone())
                .map_err(|e| anyhow::anyhow!("cannot enable incremental compilation: {e:#}"))?;
        }
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

        let cache = CompiledCache::new(cache_dir, &engine);
        Ok(Arc::new(PluginEngine {
            engine,
            compiler,
            baseline: std::sync::OnceLock::new(),
            functions,
            fuel,
            linker,
            cache,
            ticker,
            ticker_thread,
            log_capture: std::sync::OnceLock::new(),
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

    /// From now on, every `host.log` line of every plugin this engine runs
    /// is also kept in the returned capture (as well as logged).
    pub fn capture_logs(&self) -> LogCapture {
        self.log_capture.get_or_init(LogCapture::default).clone()
    }

    pub(super) fn log_capture(&self) -> Option<LogCapture> {
        self.log_capture.get().cloned()
    }

    /// Whether fuel is metered (`plugin_runtime.fuel`).
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    pub fn compiler(&self) -> Compiler {
        self.compiler
    }

    /// An engine compiling with Winch, with this one's settings and cache
    /// directory, made the first time it is asked for: a hot swap serves the
    /// new version from a Winch build (a fraction of an optimising
    /// compile's time) while the Cranelift build is made. `None` when this
    /// engine is itself Winch, or Winch cannot be used here.
    pub fn baseline(&self) -> Option<Arc<PluginEngine>> {
        if self.compiler == Compiler::Winch {
            return None;
        }
        self.baseline
            .get_or_init(|| {
                let dir = self.cache.dir().to_path_buf();
                match Self::build(Some(dir), self.fuel, Compiler::Winch, false) {
                    Ok(engine) => {
                        if let Some(capture) = self.log_capture.get() {
                            let _ = engine.log_capture.set(capture.clone());
                        }
                        Some(engine)
                    }
                    Err(e) => {
                        tracing::warn!("swaps compile with Cranelift only: {e:#}");
                        None
                    }
                }
            })
            .clone()
    }

    /// Whether the compile cache holds this engine's build of the component
    /// with `content_hash` (a load would be a quick read).
    pub fn has_compiled(&self, content_hash: &str) -> bool {
        self.cache.has(content_hash)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache_dir(&self) -> &std::path::Path {
        self.cache.dir()
    }

    /// Functions the optimising compiler found in its incremental cache, and
    /// those it compiled, since this engine was made.
    pub fn function_cache_counts(&self) -> (u64, u64) {
        self.functions.as_ref().map_or((0, 0), |f| f.counts())
    }

    /// Epoch ticks for a deadline of `timeout` (rounded up, plus one so a
    /// tick landing right after the call starts does not cut it short).
    pub fn deadline_ticks(timeout: Duration) -> u64 {
        timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
    }

    /// Compiles `bytes`, whose content hash is `hash` (or loads the
    /// cached compilation), without checking what kind of plugin it is;
    /// says where it came from and how long that took.
    pub fn component(
        &self,
        bytes: &[u8],
        hash: &str,
    ) -> Result<(Component, CacheOutcome, Duration), String> {
        let started = Instant::now();
        if let Some(c) = self.cache.load(&self.engine, hash) {
            metrics::counter!("switchyard_plugin_compile_cache_total", "result" => "hit")
                .increment(1);
            return Ok((c, CacheOutcome::Hit, started.elapsed()));
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            if wasmparser_says_core_module(bytes) {
                "not a WebAssembly component: this is a core module; build it for the wasm32-wasip2 target".to_string()
            } else {
                format!("not a valid WebAssembly component: {}", e.to_string().lines().next().unwrap_or(""))
            }
        })?;
        metrics::counter!("switchyard_plugin_compile_cache_total", "result" => "miss").increment(1);
        // A Winch build only serves until the Cranelift one is ready, and a
        // later load of the same file takes that one: writing it would cost
        // the swap it is there to speed up.
        if self.compiler == Compiler::Cranelift {
            self.cache.store(hash, &component);
        }
        Ok((component, CacheOutcome::Miss, started.elapsed()))
    }

    /// Compiles `bytes`, whose content hash is `hash` (or loads from
    /// cache), checks the contract for `kind`, and pre-instantiates against
    /// the host's imports.
    pub fn compile(&self, bytes: &[u8], hash: &str, kind: PluginKind) -> Result<Compiled, String> {
        let (component, cache, compile_time) = self.component(bytes, hash)?;
        self.prepare(component, hash, cache, compile_time, kind)
    }

    /// Checks the contract of `component` (compiled by this engine from the
    /// file with `content_hash`) for `kind`, and pre-instantiates it.
    pub fn prepare(
        &self,
        component: Component,
        content_hash: &str,
        cache: CacheOutcome,
        compile_time: Duration,
        kind: PluginKind,
    ) -> Result<Compiled, String> {
        let content_hash = content_hash.to_string();
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
