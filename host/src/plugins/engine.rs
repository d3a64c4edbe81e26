//! The process's one wasmtime `Engine`: component model, pooling allocator,
//! epoch interruption driven by a ticker thread, fuel metering available;
//! plus the shared `Linker` and the compiled-component cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::cache::{CacheOutcome, CompiledCache, content_hash};
use super::host_state::HostState;
use super::{bindings, contract};
use crate::config::{PLUGIN_MEMORY_MAX, PluginKind};

/// How often the epoch advances; call deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

pub struct PluginEngine {
    engine: Engine,
    fuel: bool,
    linker: Linker<HostState>,
    cache: CompiledCache,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
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

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (ticking, stop) = (engine.clone(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the epoch ticker: {e}"))?;

        let cache = CompiledCache::new(cache_dir.unwrap_or_else(Self::default_cache_dir), &engine);
        Ok(Arc::new(PluginEngine {
            engine,
            fuel,
            linker,
            cache,
            stop_ticker,
        }))
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

/// A core module starts with `\0asm` version 1; a component with layer 1.
fn wasmparser_says_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}
