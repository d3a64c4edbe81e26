//! The plugin runtime with the real plugins built from `plugins/`: expected
//! outputs, hot swap under load, hostile plugins, the compile cache.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard::config::{Dur, PluginKind, PluginLimits, PluginRuntimeSection, PluginSection};
use switchyard::plugins::bindings::generate::{BatchContext, IdSource, OpKind, OpResult};
use switchyard::plugins::bindings::optimize::Adjustment;
use switchyard::plugins::bindings::types::Severity;
use switchyard::plugins::{
    AlertPlugin, Compiler, FailureCause, GeneratorPlugin, OptimizerPlugin, PluginEngine,
    PluginSnapshot, Reloaded,
};
use switchyard::telemetry::{BackendStats, QueueStats, Snapshot, Trend, TrendSeries, WindowStats};

use crate::support::{put_file, replace_file, wasm};

fn section(name: &str, kind: PluginKind, path: &Path, config: &str) -> PluginSection {
    PluginSection {
        name: name.into(),
        kind,
        path: path.to_path_buf(),
        config: (!config.is_empty())
            .then(|| serde_json::from_str(config).expect("test config is JSON")),
        limits: PluginLimits::default(),
    }
}

fn engine() -> Arc<PluginEngine> {
    PluginEngine::new(None, false).expect("engine")
}

fn runtime() -> PluginRuntimeSection {
    PluginRuntimeSection::default()
}

fn window(ms: u32, requests: u64, errors: u64) -> WindowStats {
    WindowStats {
        window_ms: ms,
        requests,
        errors,
        rps: requests as f64 / (f64::from(ms) / 1000.0),
        ..WindowStats::default()
    }
}

/// A proxy using all of its concurrency limit, at a steady 500 rps with
/// the given p50.
fn saturated(limit: u32, p50_ms: u64) -> Snapshot {
    let mut s = Snapshot {
        concurrency_limit: limit,
        in_flight: limit,
        ..Snapshot::default()
    };
    s.current = window(10_000, 5000, 0);
    s.current.p50_us = p50_ms * 1000;
    s
}

fn alert(name: &str, config: &str) -> AlertPlugin {
    alert_limited(name, config, PluginLimits::default())
}

fn alert_limited(name: &str, config: &str, limits: PluginLimits) -> AlertPlugin {
    let file = wasm(&name.replace('-', "_"));
    let mut section = section(name, PluginKind::AlertRule, &file, config);
    section.limits = limits;
    AlertPlugin::load(&section, Path::new(""), &runtime(), engine())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn thresholds_reports_each_threshold_with_its_severity() {
    let rule = alert("thresholds", "");
    let meta = rule.describe().unwrap();
    assert_eq!(meta.name, "thresholds");
    let mut s = Snapshot {
        current: window(10_000, 100, 40),
        ..Snapshot::default()
    };
    s.current.mean_us = 1_500_000;
    let findings = rule.evaluate(&PluginSnapshot::from(&s)).unwrap();
    let get = |k: &str| {
        findings
            .iter()
            .find(|f| f.key == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let errors = get("high-error-rate");
    assert!(errors.active);
    assert_eq!(errors.severity, Severity::High);
    assert!((errors.value - 0.6).abs() < 1e-9);
    let latency = get("high-response-time");
    assert!(latency.active);
    assert_eq!(latency.severity, Severity::Medium);
    assert!(!get("low-throughput").active, "10 req/s is above 5");

    s.current = window(10_000, 100, 60);
    s.current.mean_us = 2_500_000;
    let findings = rule.evaluate(&PluginSnapshot::from(&s)).unwrap();
    let get = |k: &str| findings.iter().find(|f| f.key == k).unwrap();
    assert_eq!(
        get("high-error-rate").severity,
        Severity::Critical,
        "below 50% success is critical"
    );
    assert_eq!(
        get("high-response-time").severity,
        Severity::High,
        "above 2000 ms is high"
    );

    s.current = window(10_000, 30, 0);
    let findings = rule.evaluate(&PluginSnapshot::from(&s)).unwrap();
    assert!(
        findings
            .iter()
            .find(|f| f.key == "low-throughput")
            .unwrap()
            .active,
        "3 req/s is below 5"
    );
    assert!(
        !findings
            .iter()
            .find(|f| f.key == "high-error-rate")
            .unwrap()
            .active
    );

    let strict = alert("thresholds", r#"{"success_rate_high": 0.99}"#);
    s.current = window(10_000, 1000, 20);
    assert!(
        strict
            .evaluate(&PluginSnapshot::from(&s))
            .unwrap()
            .iter()
            .find(|f| f.key == "high-error-rate")
            .unwrap()
            .active
    );
}

#[test]
fn slo_burn_rate_fires_on_a_fast_burn_only() {
    let rule = alert("slo-burn-rate", r#"{"objective": 0.999}"#);
    let at = |rate_per_mille: u64| Snapshot {
        current: window(10_000, 1000, rate_per_mille),
        windows: [60_000u32, 300_000, 1_800_000, 3_600_000, 21_600_000]
            .iter()
            .map(|&ms| window(ms, 100_000, 100 * rate_per_mille))
            .collect(),
        ..Snapshot::default()
    };
    let fast = rule.evaluate(&PluginSnapshot::from(&at(50))).unwrap(); // 5% errors: 50x the budget
    let fast_burn = fast.iter().find(|f| f.key == "fast-burn").unwrap();
    assert!(fast_burn.active);
    assert_eq!(fast_burn.severity, Severity::Critical);
    let slow = rule.evaluate(&PluginSnapshot::from(&at(3))).unwrap(); // 0.3% errors: 3x the budget
    assert!(
        slow.iter().all(|f| !f.active),
        "a 3x burn is within both thresholds: {slow:?}"
    );
    let ticket = rule.evaluate(&PluginSnapshot::from(&at(10))).unwrap(); // 1%: 10x
    assert!(ticket.iter().find(|f| f.key == "slow-burn").unwrap().active);
    assert!(!ticket.iter().find(|f| f.key == "fast-burn").unwrap().active);
}

fn optimizer(name: &str, path: &Path, config: &str) -> OptimizerPlugin {
    OptimizerPlugin::load(
        &section(name, PluginKind::Optimizer, path, config),
        Path::new(""),
        &runtime(),
        engine(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn limit_of(adjustments: &[Adjustment]) -> Option<u32> {
    adjustments.iter().find_map(|a| match a {
        Adjustment::ConcurrencyLimit(l) => Some(*l),
        _ => None,
    })
}

#[test]
fn gradient_limit_grows_under_steady_latency_and_falls_when_it_rises() {
    let opt = optimizer(
        "gradient-limit",
        &wasm("gradient_limit"),
        r#"{"initial_limit": 50, "max_limit": 400}"#,
    );
    let mut state = Vec::new();
    let mut limit = 50u32;
    let step = |p50_ms: u64, limit: u32, state: &mut Vec<u8>| {
        let s = saturated(limit, p50_ms);
        let d = opt.decide(&PluginSnapshot::from(&s), state).unwrap();
        *state = d.state.clone();
        (limit_of(&d.adjustments).unwrap_or(limit), d.reason)
    };
    for _ in 0..10 {
        let (next, reason) = step(5, limit, &mut state);
        assert!(
            next >= limit,
            "steady latency never lowers the limit: {reason}"
        );
        limit = next;
    }
    assert!(
        limit > 60,
        "a busy proxy with steady latency earns a higher limit: {limit}"
    );
    let before = limit;
    for _ in 0..5 {
        let (next, reason) = step(60, limit, &mut state);
        assert!(
            next <= limit,
            "rising latency never raises the limit: {reason}"
        );
        limit = next;
    }
    assert!(
        limit < before * 3 / 4,
        "the limit fell from {before} to {limit}"
    );
    assert!(limit >= 4, "never below min_limit");
}

#[test]
fn gradient_limit_grows_faster_while_the_queue_holds_requests_back() {
    let opt = optimizer(
        "gradient-limit",
        &wasm("gradient_limit"),
        r#"{"initial_limit": 50, "max_limit": 1000}"#,
    );
    // Ten decisions at a steady 5 ms p50, with or without requests waiting
    // 20 ms (p99) in the admission queue.
    let run = |wait_ms: u64, p50_ms: u64| {
        let (mut state, mut limit) = (Vec::new(), 50u32);
        let mut reasons = Vec::new();
        for _ in 0..10 {
            let mut s = saturated(limit, p50_ms);
            if wait_ms > 0 {
                s.queue = QueueStats {
                    depth: 40,
                    capacity: 1024,
                    admitted: 2000,
                    wait_p50_us: wait_ms * 500,
                    wait_p99_us: wait_ms * 1000,
                    ..QueueStats::default()
                };
            }
            let d = opt.decide(&PluginSnapshot::from(&s), &state).unwrap();
            state = d.state.clone();
            limit = limit_of(&d.adjustments).unwrap_or(limit);
            reasons.push(d.reason);
        }
        (limit, reasons)
    };
    let (plain, _) = run(0, 5);
    let (queued, reasons) = run(20, 5);
    assert!(
        queued > plain + plain / 4,
        "a queue waiting 4 service times grows the limit faster: {queued} vs {plain}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("queue wait p99 20.0 ms")
                && r.contains("the limit holds requests back")),
        "{reasons:?}"
    );
    // A short wait (below one service time) changes nothing.
    assert_eq!(run(4, 5).0, plain);
    // Rising latency with a queue: the backend is the bottleneck, the
    // limit does not grow whatever the queue.
    let (mut state, limit) = (Vec::new(), 200u32);
    for p50_ms in [5, 5, 5, 40, 60, 80] {
        let s = Snapshot {
            queue: QueueStats {
                depth: 100,
                admitted: 5000,
                wait_p99_us: 500_000,
                ..QueueStats::default()
            },
            ..saturated(limit, p50_ms)
        };
        let d = opt.decide(&PluginSnapshot::from(&s), &state).unwrap();
        state = d.state.clone();
        if p50_ms >= 40 {
            let next = limit_of(&d.adjustments).unwrap_or(limit);
            assert!(next < limit, "{p50_ms} ms: {}", d.reason);
        }
    }
}

#[test]
fn cache_size_grows_on_misses_within_headroom_and_shrinks_under_memory_pressure() {
    let opt = optimizer(
        "cache-size",
        &wasm("cache_size"),
        r#"{"target_hit_ratio": 0.8, "min_requests": 50, "step": 0.25}"#,
    );
    const MIB: u64 = 1 << 20;
    let snapshot = |hit_ratio: f64, rss: u64, limit: u64| {
        let mut s = Snapshot {
            cache_capacity_bytes: 64 * MIB,
            memory_rss_bytes: rss,
            memory_limit_bytes: limit,
            ..Snapshot::default()
        };
        s.current = window(10_000, 1000, 0);
        s.current.cache_hit_ratio = hit_ratio;
        s
    };
    let decide = |s: &Snapshot| {
        let d = opt.decide(&PluginSnapshot::from(s), &[]).unwrap();
        let to = d.adjustments.iter().find_map(|a| match a {
            Adjustment::CacheCapacityBytes(n) => Some(*n),
            _ => None,
        });
        (to, d.reason)
    };
    let (to, why) = decide(&snapshot(0.3, 200 * MIB, 0));
    assert_eq!(to, Some(80 * MIB), "{why}");
    assert!(why.contains("hit ratio 0.30 below 0.80"), "{why}");
    let (to, why) = decide(&snapshot(0.95, 200 * MIB, 0));
    assert_eq!(to, None, "a good hit ratio holds: {why}");
    let (to, why) = decide(&snapshot(0.3, 50 * MIB, 150 * MIB));
    assert_eq!(to, None, "80 MiB would pass half of 150 MiB: {why}");
    let (to, why) = decide(&snapshot(0.3, 900 * MIB, 1000 * MIB));
    assert_eq!(to, Some(48 * MIB), "memory pressure shrinks: {why}");
    assert!(why.contains("above 85%"), "{why}");
    let mut few = snapshot(0.1, 200 * MIB, 0);
    few.current = window(10_000, 10, 0);
    assert_eq!(decide(&few).0, None, "too few requests to judge");

    let bad = OptimizerPlugin::load(
        &section(
            "cache-size",
            PluginKind::Optimizer,
            &wasm("cache_size"),
            r#"{"step": 0}"#,
        ),
        Path::new(""),
        &runtime(),
        engine(),
    );
    let e = bad.err().expect("a zero step is refused").to_string();
    assert!(e.contains("step must be within (0.0, 1.0], got 0"), "{e}");
}

#[test]
fn latency_weights_lowers_the_slow_backends_weight() {
    let opt = optimizer("latency-weights", &wasm("latency_weights"), "");
    let backend = |id: &str, ewma_ms: u64, weight: u32| BackendStats {
        id: id.into(),
        healthy: true,
        weight,
        ewma_latency_us: ewma_ms * 1000,
        p99_us: ewma_ms * 1000,
        requests: 100,
        ..BackendStats::default()
    };
    let s = Snapshot {
        backends: vec![
            backend("app/a:1", 2, 100),
            backend("app/b:1", 2, 100),
            backend("app/slow:1", 32, 100),
        ],
        ..Snapshot::default()
    };
    let d = opt.decide(&PluginSnapshot::from(&s), &[]).unwrap();
    let weights: Vec<(String, u32)> = d
        .adjustments
        .iter()
        .filter_map(|a| match a {
            Adjustment::BackendWeight(w) => Some((w.backend.clone(), w.weight)),
            _ => None,
        })
        .collect();
    assert_eq!(
        weights.len(),
        1,
        "only the slow backend changes: {weights:?} ({})",
        d.reason
    );
    assert_eq!(weights[0].0, "app/slow:1");
    assert!(weights[0].1 < 60, "{weights:?}");
    assert!(d.reason.contains("app/slow:1"), "{}", d.reason);
}

#[test]
fn crud_mix_honours_the_mix_and_targets_entities_it_created() {
    let g = GeneratorPlugin::load(
        &section(
            "crud-mix",
            PluginKind::OperationGenerator,
            &wasm("crud_mix"),
            r#"{"profile": "production"}"#,
        ),
        Path::new(""),
        &runtime(),
        engine(),
    )
    .unwrap();
    let mut counts = [0u32; 4];
    let mut created: std::collections::HashSet<String> = Default::default();
    let mut next_id = 0u64;
    for batch in 0..100 {
        let ctx = BatchContext {
            now_ms: 0,
            issued: batch * 100,
            in_flight: 0,
        };
        let ops = g.next_batch(ctx, 100).unwrap();
        assert_eq!(ops.len(), 100);
        let mut results = Vec::new();
        for op in ops {
            let i = match op.kind {
                OpKind::Create => 0,
                OpKind::Read => 1,
                OpKind::Update => 2,
                OpKind::Delete => 3,
                OpKind::Custom => panic!("crud-mix makes no custom operations"),
            };
            counts[i] += 1;
            let mut created_id = None;
            if op.kind == OpKind::Create {
                assert_eq!((op.method.as_str(), op.path.as_str()), ("POST", "/items"));
                assert!(matches!(op.capture_id, Some(IdSource::JsonField(ref f)) if f == "id"));
                next_id += 1;
                created_id = Some(format!("id{next_id}"));
                created.insert(format!("id{next_id}"));
            } else {
                let id = op.path.rsplit('/').next().unwrap();
                assert!(
                    created.contains(id),
                    "{} {} aims at an entity never created",
                    op.method,
                    op.path
                );
                if op.kind == OpKind::Delete {
                    created.remove(id);
                }
            }
            results.push(OpResult {
                kind: op.kind,
                path: op.path,
                status: if op.kind == OpKind::Create { 201 } else { 200 },
                latency_us: 100,
                created_id,
                error: None,
            });
        }
        g.observe(&results).unwrap();
    }
    let total: u32 = counts.iter().sum();
    for (i, want) in [30.0, 40.0, 25.0, 5.0].into_iter().enumerate() {
        let got = f64::from(counts[i]) * 100.0 / f64::from(total);
        assert!(
            (got - want).abs() <= 2.0,
            "kind {i}: {got:.1}% vs {want}% ({counts:?})"
        );
    }
}

#[test]
fn hot_swap_under_load_fails_no_call_and_keeps_optimizer_state() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("swapping.wasm");
    let (a, b) = (wasm("test_swap_a"), wasm("test_swap_b"));
    std::fs::copy(&a, &live).unwrap();
    let plugin = Arc::new(optimizer("swapping", &live, ""));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let last = Arc::new(Mutex::new(String::new()));
    let caller = {
        let (plugin, stop, calls, last) =
            (plugin.clone(), stop.clone(), calls.clone(), last.clone());
        std::thread::spawn(move || {
            let mut state = Vec::new();
            let snapshot = Snapshot::default();
            while !stop.load(SeqCst) {
                let d = plugin
                    .decide(&PluginSnapshot::from(&snapshot), &state)
                    .expect("no call fails during swaps");
                let n = calls.fetch_add(1, SeqCst) + 1;
                let count: u64 = String::from_utf8(d.state.clone()).unwrap().parse().unwrap();
                assert_eq!(count, n, "state carried through every call and swap");
                state = d.state;
                *last.lock().unwrap() = d.reason;
            }
        })
    };
    for i in 0..50 {
        let (file, reason) = if i % 2 == 0 {
            (&b, "version b")
        } else {
            (&a, "version a")
        };
        replace_file(file, &live);
        assert!(
            matches!(plugin.reload(false), Ok(Reloaded::Swapped { .. })),
            "swap {i}"
        );
        let seen_at = Instant::now();
        while *last.lock().unwrap() != reason {
            assert!(
                seen_at.elapsed() < Duration::from_secs(60),
                "swap {i}: new behaviour never seen"
            );
            std::thread::yield_now();
        }
    }
    stop.store(true, SeqCst);
    caller.join().expect("caller thread");
    let view = plugin.view();
    assert_eq!(view.failures, 0);
    assert_eq!(view.swaps, 50);
    assert!(calls.load(SeqCst) > 50);
}

#[test]
fn hostile_plugins_are_rejected_at_load_with_a_reason() {
    let load = |name: &str, kind: PluginKind, path: &Path, config: &str| {
        let s = section(name, kind, path, config);
        match kind {
            PluginKind::Optimizer => {
                OptimizerPlugin::load(&s, Path::new(""), &runtime(), engine()).map(|_| ())
            }
            PluginKind::AlertRule => {
                AlertPlugin::load(&s, Path::new(""), &runtime(), engine()).map(|_| ())
            }
            PluginKind::OperationGenerator => {
                GeneratorPlugin::load(&s, Path::new(""), &runtime(), engine()).map(|_| ())
            }
        }
        .expect_err("must be refused")
    };
    let wrong = load("x", PluginKind::Optimizer, &wasm("thresholds"), "");
    assert_eq!(
        wrong,
        "wrong kind: configured as kind = \"optimizer\" (expects export switchyard:plugins/optimize@0.2.0), \
         but this is an alert-rule plugin (exports switchyard:plugins/alert@0.2.0)"
    );
    let future = load("x", PluginKind::AlertRule, &wasm("test_future_version"), "");
    assert!(
        future.starts_with(
            "built for another contract version: exports switchyard:plugins/alert@0.3.0"
        ),
        "{future}"
    );
    assert!(
        future.ends_with(
            "implements switchyard:plugins@0.2.0 (and loads 0.1.0) and expects switchyard:plugins/alert@0.2.0"
        ),
        "{future}"
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    assert!(
        load("x", PluginKind::AlertRule, &junk, "")
            .starts_with("not a valid WebAssembly component")
    );
    let refused = load(
        "x",
        PluginKind::OperationGenerator,
        &wasm("crud_mix"),
        r#"{"profile": "nope"}"#,
    );
    assert!(
        refused.contains("init refused its config: unknown profile \"nope\""),
        "{refused}"
    );
    let init_trap = load(
        "x",
        PluginKind::AlertRule,
        &wasm("test_trap"),
        r#""trap-in-init""#,
    );
    assert!(
        init_trap.contains("init failed: trapped") && init_trap.contains("trap requested in init"),
        "{init_trap}"
    );
}

#[test]
fn init_has_its_own_deadline_longer_than_a_calls() {
    // An init that spins for 300 ms outlasts the 100 ms call deadline and
    // still loads: building an instance is held to `limits.init_timeout`.
    let slow_init = alert_limited("test-spin", r#""init-ms=300""#, PluginLimits::default());
    assert_eq!(slow_init.describe().unwrap().name, "test-spin");
    // One that never returns is refused, naming the init deadline.
    let mut section = section(
        "spin",
        PluginKind::AlertRule,
        &wasm("test_spin"),
        r#""init-forever""#,
    );
    section.limits.init_timeout = Dur::millis(200);
    let refused = AlertPlugin::load(&section, Path::new(""), &runtime(), engine())
        .map(|_| ())
        .expect_err("an init that never returns is refused");
    assert!(
        refused.contains("init failed: did not return within 200ms (limits.init_timeout)"),
        "{refused}"
    );
}

#[test]
fn hostile_plugins_are_contained_at_call_time() {
    let s = Snapshot::default();
    // Only the spinning rule is meant to meet its deadline: the others get
    // one that cannot come first, however slow the machine, so that each
    // fails for the cause it is built for.
    let generous = PluginLimits {
        timeout: Dur::secs(120),
        ..PluginLimits::default()
    };
    let cases = [
        (
            "test_trap",
            &generous,
            FailureCause::Trap,
            "this rule always traps",
        ),
        (
            "test_spin",
            &PluginLimits::default(),
            FailureCause::Timeout,
            "did not return within 100ms",
        ),
        (
            "test_memory_bomb",
            &generous,
            FailureCause::Memory,
            "growth past 64MiB refused",
        ),
        (
            "test_huge_output",
            &generous,
            FailureCause::Output,
            "returned 5000 findings; at most 1000 are accepted",
        ),
    ];
    for (name, limits, cause, text) in cases {
        let rule = alert_limited(name, "", limits.clone());
        let failure = rule.evaluate(&PluginSnapshot::from(&s)).expect_err(name);
        assert_eq!(failure.cause, cause, "{name}: {failure}");
        assert!(
            failure.message.contains(text),
            "{name}: {}",
            failure.message
        );
        // Fail open with a synthetic finding.
        let findings = rule.evaluate_or_report(&PluginSnapshot::from(&s));
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].key, "plugin-failed");
        assert!(
            findings[0]
                .labels
                .iter()
                .any(|l| l.key == "cause" && l.value == cause.as_str())
        );
        assert_eq!(
            rule.view()
                .last_error
                .as_deref()
                .map(|e| e.starts_with(cause.as_str())),
            Some(true)
        );
    }
}

/// The epoch ticker parks after 100 ms without a plugin call; a call that
/// starts later must wake it, or a spinning plugin would never be stopped.
#[test]
fn a_spinning_plugin_is_stopped_after_the_ticker_went_idle() {
    let rule = alert("test_spin", "");
    std::thread::sleep(Duration::from_millis(400));
    // On its own thread, so that a ticker that never wakes fails the test
    // instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rule.evaluate(&PluginSnapshot::from(&Snapshot::default())));
    });
    let failure = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the spinning call was never stopped")
        .expect_err("spins");
    assert_eq!(failure.cause, FailureCause::Timeout, "{failure}");
    assert!(
        failure.message.contains("did not return within 100ms"),
        "{}",
        failure.message
    );
}

#[test]
fn repeated_failures_quarantine_a_plugin_with_backoff() {
    let rule = alert("test_trap", "");
    for _ in 0..3 {
        assert_eq!(
            rule.evaluate(&PluginSnapshot::from(&Snapshot::default()))
                .unwrap_err()
                .cause,
            FailureCause::Trap
        );
    }
    let quarantined = rule
        .evaluate(&PluginSnapshot::from(&Snapshot::default()))
        .unwrap_err();
    assert_eq!(quarantined.cause, FailureCause::Quarantined);
    let view = rule.view();
    assert!(
        view.quarantined && view.quarantined_for_ms > 0 && view.quarantined_for_ms <= 1000,
        "{view:?}"
    );
    assert_eq!(view.failures_by_cause.get("trap"), Some(&3));
    assert_eq!(view.failures_by_cause.get("quarantined"), Some(&1));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        rule.evaluate(&PluginSnapshot::from(&Snapshot::default()))
            .unwrap_err()
            .cause,
        FailureCause::Trap,
        "tried again after the backoff"
    );
}

#[test]
fn compiled_components_are_cached_and_corrupt_entries_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let load = || {
        let engine = PluginEngine::new(Some(cache.path().to_path_buf()), false).unwrap();
        let s = section("thresholds", PluginKind::AlertRule, &wasm("thresholds"), "");
        AlertPlugin::load(&s, Path::new(""), &runtime(), engine).unwrap()
    };
    assert!(!load().view().compiled_from_cache, "first start compiles");
    assert!(
        load().view().compiled_from_cache,
        "second start loads the compiled cache"
    );
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let recompiled = load();
    assert!(
        !recompiled.view().compiled_from_cache,
        "a corrupt entry is a miss"
    );
    assert!(
        recompiled
            .evaluate(&PluginSnapshot::from(&Snapshot::default()))
            .is_ok()
    );
    assert!(load().view().compiled_from_cache, "and was rewritten");
}

/// A new version of a plugin (here: the same code under a new content
/// hash) is compiled from the functions the last one left in the
/// optimising compiler's cache; a corrupt function entry is compiled again.
#[test]
fn a_new_version_reuses_the_compiled_functions_of_the_last() {
    let cache = tempfile::tempdir().unwrap();
    let v1 = std::fs::read(wasm("thresholds")).unwrap();
    let v2 = new_version_of(&v1, 2);
    let load = |bytes: &[u8]| {
        let engine = PluginEngine::new(Some(cache.path().to_path_buf()), false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rule.wasm");
        std::fs::write(&file, bytes).unwrap();
        let s = section("thresholds", PluginKind::AlertRule, &file, "");
        let plugin = AlertPlugin::load(&s, Path::new(""), &runtime(), engine.clone()).unwrap();
        (plugin, engine.function_cache_counts())
    };
    // Into an empty cache: each distinct function compiled once (identical
    // ones, such as adapters, compiled once and found after).
    let (_, first) = load(&v1);
    assert!(first.1 > 10, "functions compiled: {first:?}");
    let functions = first.0 + first.1;
    let (plugin, (hits, misses)) = load(&v2);
    assert!(!plugin.view().compiled_from_cache, "a new content hash");
    assert_eq!(hits + misses, functions);
    // Most, not all: a few of wasmtime's own trampolines are keyed by where
    // they land in this compile.
    assert!(
        hits >= functions * 8 / 10 && misses < first.1 / 2,
        "most functions taken from the cache: {hits} found, {misses} compiled of {functions}"
    );
    assert!(
        plugin
            .evaluate(&PluginSnapshot::from(&Snapshot::default()))
            .is_ok()
    );
    // Corrupt every function entry and the component cache: all compiled
    // again, and the plugin still works.
    let mut dirs = vec![cache.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let (plugin, (hits, misses)) = load(&v2);
    assert!(
        misses > hits,
        "corrupt entries are misses, compiled again: {misses} compiled, {hits} found"
    );
    assert!(
        plugin
            .evaluate(&PluginSnapshot::from(&Snapshot::default()))
            .is_ok()
    );
}

/// `thresholds` with a custom section appended: the same code under a new
/// content hash, so a compile cache has never seen it.
fn new_version_of(bytes: &[u8], tag: u8) -> Vec<u8> {
    let name = b"switchyard-test-version";
    let mut v = bytes.to_vec();
    v.extend_from_slice(&[0, (1 + name.len() + 1) as u8, name.len() as u8]);
    v.extend_from_slice(name);
    v.push(tag);
    v
}

/// What compiled the version a reload swapped in.
fn swapped_by(reloaded: Result<Reloaded, String>) -> Compiler {
    match reloaded {
        Ok(Reloaded::Swapped { compiler, .. }) => compiler,
        other => panic!("not swapped: {other:?}"),
    }
}

/// A swap to a version the compile cache has not seen serves a Winch build
/// at once, and the Cranelift build replaces it when ready: same version,
/// not counted as another swap, calls answered all along. A version
/// already compiled, or `baseline_first = false`, swaps straight to
/// Cranelift.
#[test]
fn a_swap_serves_a_baseline_build_then_the_optimised_one() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("rule.wasm");
    let v1 = std::fs::read(wasm("thresholds")).unwrap();
    std::fs::write(&live, &v1).unwrap();
    let load = |runtime: &PluginRuntimeSection| {
        let engine = PluginEngine::new(Some(cache.path().to_path_buf()), false).unwrap();
        let s = section("thresholds", PluginKind::AlertRule, &live, "");
        Arc::new(AlertPlugin::load(&s, Path::new(""), runtime, engine).unwrap())
    };
    let evaluates = |plugin: &AlertPlugin| {
        plugin
            .evaluate(&PluginSnapshot::from(&Snapshot::default()))
            .is_ok()
    };
    let plugin = load(&runtime());
    assert_eq!(plugin.view().compiler, "cranelift");

    put_file(&new_version_of(&v1, 1), &live);
    assert_eq!(
        swapped_by(plugin.reload(false)),
        Compiler::Winch,
        "served from a baseline build"
    );
    let to = plugin.view().content_hash;
    assert!(evaluates(&plugin));
    let deadline = Instant::now() + Duration::from_secs(60);
    while plugin.view().compiler != "cranelift" {
        assert!(evaluates(&plugin), "calls answered meanwhile");
        assert!(Instant::now() < deadline, "the optimised build never came");
        std::thread::sleep(Duration::from_millis(10));
    }
    let view = plugin.view();
    assert_eq!((view.content_hash.as_str(), view.swaps), (to.as_str(), 1));
    assert_eq!(view.failures, 0, "{view:?}");
    assert!(evaluates(&plugin));

    // Compiled by Cranelift before (v1): straight to it.
    put_file(&v1, &live);
    assert_eq!(swapped_by(plugin.reload(false)), Compiler::Cranelift);

    // Turned off: an unseen version is compiled by Cranelift first.
    let plugin = load(&PluginRuntimeSection {
        baseline_first: false,
        ..runtime()
    });
    put_file(&new_version_of(&v1, 2), &live);
    assert_eq!(swapped_by(plugin.reload(false)), Compiler::Cranelift);
    assert_eq!(plugin.view().compiler, "cranelift");
}

#[test]
fn trend_fires_on_a_trusted_prediction_past_its_threshold() {
    let rule = alert(
        "trend",
        r#"{"predictions": [
            {"name": "slow", "series": "p99", "window_ms": 60000, "above": 600},
            {"name": "draining", "series": "rps", "window_ms": 300000, "below": 10, "horizon_ms": 60000}
        ]}"#,
    );
    // p99 at 100 ms and rising 10 ms a second: 700 ms in a minute.
    let line = |series, window_ms, value: f64, slope: f64, r_squared| Trend {
        series,
        window_ms,
        points: 30,
        value,
        slope_per_s: slope,
        horizon_ms: window_ms,
        r_squared,
        ..Trend::default()
    };
    let evaluate = |p99_r2: f64, rps_slope: f64| {
        let s = Snapshot {
            trends: vec![
                line(TrendSeries::P99, 60_000, 100_000.0, 10_000.0, p99_r2),
                line(TrendSeries::P99, 300_000, 100_000.0, 0.0, 1.0),
                line(TrendSeries::Rps, 300_000, 100.0, rps_slope, 0.9),
            ],
            ..Snapshot::default()
        };
        rule.evaluate(&PluginSnapshot::from(&s)).unwrap()
    };
    let findings = evaluate(0.95, -2.0);
    let slow = findings.iter().find(|f| f.key == "slow").unwrap();
    assert!(slow.active, "{slow:?}");
    assert!((slow.value - 700.0).abs() < 1e-6, "{slow:?}");
    assert_eq!(
        slow.summary,
        "p99 heading for 700.000 ms in 1m (now 100.000 ms, +10.000 ms per s, \
         R² 0.95 over 30 points of the 1m window); threshold 600 ms"
    );
    // 100 rps falling 2 a second is 0 within a minute: below 10.
    assert!(
        findings
            .iter()
            .find(|f| f.key == "draining")
            .unwrap()
            .active
    );
    // A scattered line predicts nothing; a slower fall stays above 10.
    let findings = evaluate(0.3, -1.0);
    assert!(findings.iter().all(|f| !f.active), "{findings:?}");

    let engine = engine();
    for (config, reason) in [
        (
            r#"{"predictions": [{"series": "p99", "above": 1, "below": 2}]}"#,
            "trend: p99: set exactly one of above and below",
        ),
        (
            r#"{"predictions": [{"series": "p95", "above": 1}]}"#,
            "trend: series \"p95\": expected \"rps\", \"error-rate\" or \"p99\"",
        ),
    ] {
        let s = section("t", PluginKind::AlertRule, &wasm("trend"), config);
        let e = AlertPlugin::load(&s, Path::new(""), &runtime(), engine.clone())
            .map(|_| ())
            .expect_err("must be refused")
            .to_string();
        assert!(e.ends_with(reason), "{e}");
    }
}
