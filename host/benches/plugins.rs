//! Plugin runtime costs with the real plugins built from `plugins/`:
//! call overhead per kind with a realistic snapshot, generator throughput in
//! batches, instantiation with the pooling allocator, and hot-swap time from
//! file write to the new version serving.
//!
//! Build the plugins first, then run:
//! `cargo bench -p switchyard --bench plugins`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard::config::{
    self, ConfigSource, PluginKind, PluginLimits, PluginRuntimeSection, PluginSection,
};
use switchyard::plugins::bindings::generate::BatchContext;
use switchyard::plugins::{
    AlertPlugin, EngineSlot, GeneratorPlugin, OptimizerPlugin, PluginEngine, PluginSet,
    PluginSnapshot,
};
use switchyard::telemetry::{
    BackendStats, QueueClass, QueueStats, Snapshot, Trend, TrendDirection, TrendSeries, WindowStats,
};

fn wasm(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: build the plugins first",
        p.display()
    );
    p
}

fn section(kind: PluginKind, path: &Path) -> PluginSection {
    PluginSection {
        name: "bench".into(),
        kind,
        path: path.to_path_buf(),
        config: None,
        limits: PluginLimits::default(),
    }
}

/// What a proxy with ten backends and every window filled hands a plugin.
fn realistic_snapshot() -> Snapshot {
    let window = |ms: u32| WindowStats {
        window_ms: ms,
        requests: u64::from(ms) * 3,
        errors: u64::from(ms) / 100,
        rps: 3000.0,
        mean_us: 4200,
        p50_us: 3100,
        p90_us: 9000,
        p99_us: 25000,
        max_us: 90000,
        cache_hit_ratio: 0.62,
    };
    Snapshot {
        now_ms: 1_700_000_000_000,
        current: window(10_000),
        windows: [60_000, 300_000, 1_800_000, 3_600_000, 21_600_000]
            .map(window)
            .to_vec(),
        in_flight: 120,
        concurrency_limit: 400,
        cache_capacity_bytes: 256 << 20,
        cpu_utilization: 0.55,
        memory_rss_bytes: 300 << 20,
        memory_limit_bytes: 1 << 30,
        backends: (0..10)
            .map(|i| BackendStats {
                id: format!("app/10.0.0.{i}:8080"),
                healthy: true,
                ejected: false,
                weight: 100,
                in_flight: 12,
                ewma_latency_us: 3000 + i * 200,
                requests: 3000,
                errors: 3,
                p99_us: 20000 + i * 1000,
            })
            .collect(),
        firing_alerts: vec!["thresholds/high-response-time".into()],
        queue: QueueStats {
            depth: 40,
            capacity: 1024,
            window_ms: 10_000,
            admitted: 30_000,
            timeouts: 12,
            wait_mean_us: 2_000,
            wait_p50_us: 1_500,
            wait_p99_us: 9_000,
            classes: (0..8)
                .rev()
                .map(|priority| QueueClass {
                    priority,
                    depth: 5,
                    admitted: 3_750,
                    timeouts: 1,
                    wait_p50_us: 1_500,
                    wait_p99_us: 9_000,
                })
                .collect(),
        },
        trends: [TrendSeries::Rps, TrendSeries::ErrorRate, TrendSeries::P99]
            .into_iter()
            .flat_map(|series| {
                [60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000].map(|ms| Trend {
                    series,
                    window_ms: ms,
                    points: 60,
                    slope_per_s: 0.5,
                    mean: 3000.0,
                    value: 3100.0,
                    horizon_ms: ms,
                    predicted: 3200.0,
                    r_squared: 0.8,
                    direction: TrendDirection::Increasing,
                })
            })
            .collect(),
    }
}

fn bench_calls(c: &mut Criterion) {
    let engine = PluginEngine::new(None, false).expect("engine");
    let rt = PluginRuntimeSection::default();
    let snapshot = PluginSnapshot::from(&realistic_snapshot());
    let optimizer = OptimizerPlugin::load(
        &section(PluginKind::Optimizer, &wasm("gradient_limit")),
        Path::new(""),
        &rt,
        engine.clone(),
    )
    .expect("gradient-limit");
    let weights = OptimizerPlugin::load(
        &section(PluginKind::Optimizer, &wasm("latency_weights")),
        Path::new(""),
        &rt,
        engine.clone(),
    )
    .expect("latency-weights");
    let rule = AlertPlugin::load(
        &section(PluginKind::AlertRule, &wasm("thresholds")),
        Path::new(""),
        &rt,
        engine.clone(),
    )
    .expect("thresholds");
    let noop_rule = AlertPlugin::load(
        &section(PluginKind::AlertRule, &wasm("test_noop")),
        Path::new(""),
        &rt,
        engine.clone(),
    )
    .expect("test-noop");
    let noop_optimizer = OptimizerPlugin::load(
        &section(PluginKind::Optimizer, &wasm("test_swap_a")),
        Path::new(""),
        &rt,
        engine.clone(),
    )
    .expect("test-swap-a");
    let generator = GeneratorPlugin::load(
        &section(PluginKind::OperationGenerator, &wasm("crud_mix")),
        Path::new(""),
        &rt,
        engine,
    )
    .expect("crud-mix");

    let mut g = c.benchmark_group("plugin-call");
    // Overhead: plugins that do (almost) nothing, given the realistic snapshot.
    g.bench_function("overhead/alert-rule.evaluate", |b| {
        b.iter(|| black_box(noop_rule.evaluate(black_box(&snapshot)).expect("evaluate")))
    });
    g.bench_function("overhead/optimizer.decide", |b| {
        b.iter(|| {
            black_box(
                noop_optimizer
                    .decide(black_box(&snapshot), b"1")
                    .expect("decide"),
            )
        })
    });
    let mut state = Vec::new();
    g.bench_function("optimizer/gradient-limit.decide", |b| {
        b.iter(|| {
            let d = optimizer
                .decide(black_box(&snapshot), &state)
                .expect("decide");
            state = d.state;
        })
    });
    g.bench_function("optimizer/latency-weights.decide", |b| {
        b.iter(|| black_box(weights.decide(black_box(&snapshot), &[]).expect("decide")))
    });
    g.bench_function("alert-rule/thresholds.evaluate", |b| {
        b.iter(|| black_box(rule.evaluate(black_box(&snapshot)).expect("evaluate")))
    });
    g.bench_function("alert-rule/thresholds.instantiate", |b| {
        b.iter(|| rule.instantiate_check().expect("instantiate"))
    });
    g.finish();

    let mut g = c.benchmark_group("generator");
    let batch = 1000u32;
    g.throughput(Throughput::Elements(u64::from(batch)));
    g.bench_function("crud-mix.next-batch/1000", |b| {
        b.iter(|| {
            let ctx = BatchContext {
                now_ms: 0,
                issued: 0,
                in_flight: 0,
            };
            black_box(generator.next_batch(ctx, batch).expect("batch"))
        })
    });
    g.finish();
}

/// Appends a custom section so the component's content (and so its cache
/// key) differs while its code does not: every swap compiles afresh.
fn variant(bytes: &[u8], n: u64) -> Vec<u8> {
    let name = b"switchyard-bench";
    let payload = n.to_le_bytes();
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(section.len() as u8);
    out.extend_from_slice(&section);
    out
}

fn bench_swap(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rule.wasm");
    let original = std::fs::read(wasm("thresholds")).expect("read plugin");
    std::fs::write(&file, &original).expect("write plugin");
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"a\"\n[upstreams.a]\nbackends = [{{ address = \"127.0.0.1:9\" }}]\n\
             [plugin_runtime]\ncache_dir = \"{}\"\n[[plugins]]\nname = \"rule\"\nkind = \"alert-rule\"\npath = \"rule.wasm\"\n",
            dir.path().join("cache").display()
        ),
    )
    .expect("write config");
    let loaded = config::load(&ConfigSource::new(&cfg, None)).expect("config");
    let engine = EngineSlot::new(
        loaded.config.plugin_runtime.cache_dir.clone(),
        loaded.config.plugin_runtime.fuel,
    );
    let set = Arc::new(ArcSwap::from_pointee(
        PluginSet::load_config(&loaded, &engine, None).expect("plugins"),
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let debounce = loaded.config.plugin_runtime.debounce.get();
    let _watcher = runtime
        .block_on(async { switchyard::plugins::watch(set.clone(), debounce) })
        .expect("watch");
    let hash = |set: &ArcSwap<PluginSet>| {
        set.load()
            .get("rule")
            .map(|p| p.view().content_hash)
            .unwrap_or_default()
    };

    let mut g = c.benchmark_group("hot-swap");
    g.sample_size(10);
    let mut n = 0u64;
    g.bench_function(
        format!("file-write-to-serving/debounce-{}ms", debounce.as_millis()),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let before = hash(&set);
                    let tmp = dir.path().join("incoming.wasm");
                    std::fs::write(&tmp, variant(&original, n)).expect("write variant");
                    let started = Instant::now();
                    std::fs::rename(&tmp, &file).expect("rename into place");
                    runtime.block_on(async {
                        while hash(&set) == before {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    });
                    total += started.elapsed();
                }
                total
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench_calls, bench_swap);
criterion_main!(benches);
