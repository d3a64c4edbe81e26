//! `switchyard bench`: a load generator driven by operation-generator
//! plugins.
//!
//! A run resolves its plan from a profile's `[bench]` section and the
//! command line (flags win), checks everything before any load is sent
//! (profile, thresholds, plugin kind, target reachable — each failure one
//! line and exit code 2), then drives the target by the closed model (N
//! workers) or the open model (a constant arrival rate per phase, latency
//! measured from each operation's intended start so coordinated omission
//! cannot hide a stall). Results flow back to the generator so it can aim
//! reads, updates and deletes at entities it created.
//!
//! Exit codes: 0 done and every threshold held; 99 a threshold was violated
//! (as k6); 98 a figure regressed against `--baseline` by at least
//! `--fail-on-regression` percent; 2 bad input; 1 the run itself failed
//! (e.g. a report could not be written).

pub mod baseline;
mod engine;
pub mod html;
mod report;
mod stats;
mod threshold;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub use engine::{Schedule, Segment, Target};
pub use report::{Report, Scope};
pub use threshold::{Threshold, Verdict};

use crate::config::{
    BenchModel, BenchSection, Dur, PhaseKind, PhaseSection, PluginKind, PluginLimits,
    PluginRuntimeSection, PluginSection,
};
use crate::plugins::{GeneratorPlugin, PluginEngine};
use engine::{Engine, Policy};

/// Exit code when a threshold is violated.
pub const EXIT_THRESHOLD: u8 = 99;
/// Exit code for bad input, as the rest of the command line.
const EXIT_BAD_INPUT: u8 = 2;

/// The generator used when `--plugin` is not given.
pub const DEFAULT_PLUGIN: &str = "plugins/target/wasm32-wasip2/release/crud_mix.wasm";

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Where to send load: http://host:port, optionally with a base path
    /// that prefixes every operation's path.
    pub target: String,
    /// The operation-generator plugin (`.wasm` component).
    #[arg(long, default_value = DEFAULT_PLUGIN)]
    pub plugin: PathBuf,
    /// Handed to the generator's `init`: JSON, or a plain string. Overrides
    /// the profile's `[bench.generator]`.
    #[arg(long, value_name = "JSON")]
    pub generator_config: Option<String>,
    /// A run profile: the `[bench]` section of `PROFILES_DIR/NAME.toml`.
    #[arg(long, short)]
    pub profile: Option<String>,
    #[arg(long, default_value = "config/profiles")]
    pub profiles_dir: PathBuf,
    /// `closed` (N workers) or `open` (constant arrival rate).
    #[arg(long, value_parser = parse_model)]
    pub model: Option<BenchModel>,
    /// Closed model: workers. Open model: most operations in flight.
    #[arg(long, short)]
    pub concurrency: Option<u32>,
    /// Open model: operations per second.
    #[arg(long, short)]
    pub rate: Option<f64>,
    /// Length of a single steady phase (default: the profile's phases, else 10s).
    #[arg(long, short)]
    pub duration: Option<Dur>,
    /// A phase, `KIND:DURATION:LEVEL` with KIND ramp|steady|spike and LEVEL a
    /// rate (open) or a number of workers (closed); repeat for several.
    #[arg(long = "phase", value_name = "KIND:DURATION:LEVEL")]
    pub phases: Vec<String>,
    /// Stop after this many operations.
    #[arg(long, short = 'n')]
    pub operations: Option<u64>,
    /// Bound on each attempt (default 10s).
    #[arg(long)]
    pub timeout: Option<Dur>,
    /// Extra attempts for a retryable failure: no response, a timeout, 429,
    /// 502, 503 or 504 (default 0).
    #[arg(long)]
    pub retries: Option<u32>,
    /// First retry backoff; doubles per retry, with full jitter.
    #[arg(long, default_value = "50ms")]
    pub retry_backoff: Dur,
    #[arg(long, default_value = "2s")]
    pub retry_backoff_max: Dur,
    /// Also retry operations the generator did not mark idempotent.
    #[arg(long)]
    pub retry_non_idempotent: bool,
    /// Consecutive failed attempts that open the circuit breaker (0: off).
    #[arg(long)]
    pub breaker_failures: Option<u32>,
    /// How long the breaker stays open before one probe goes through.
    #[arg(long, default_value = "1s")]
    pub breaker_open_for: Dur,
    /// Pass/fail criterion, e.g. 'p99<250ms' or 'success>99%'; repeatable.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
    /// Write the JSON report here (`-`: stdout, the summary then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the CSV report here (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write a self-contained HTML report here: plots of throughput and
    /// latency over time and by percentile, the tables, errors, verdicts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Compare the run, per operation kind, with this saved baseline.
    #[arg(long, value_name = "NAME")]
    pub baseline: Option<String>,
    /// Fold this run into the baseline NAME (created if new), after any
    /// comparison.
    #[arg(long, value_name = "NAME")]
    pub save_baseline: Option<String>,
    /// Where baselines are kept.
    #[arg(long, value_name = "DIR", default_value = baseline::DEFAULT_DIR)]
    pub baseline_dir: PathBuf,
    /// With --baseline: exit with code 98 when a figure regressed by at
    /// least PCT percent (beyond the noise).
    #[arg(long, value_name = "PCT")]
    pub fail_on_regression: Option<f64>,
    /// Seed for the generator (default: random, printed in the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// No progress line.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_model(s: &str) -> Result<BenchModel, String> {
    match s {
        "closed" => Ok(BenchModel::Closed),
        "open" => Ok(BenchModel::Open),
        _ => Err(format!("unknown model \"{s}\" (known: closed, open)")),
    }
}

/// Everything a run needs, checked.
pub struct Plan {
    pub target: Target,
    pub plugin: PathBuf,
    pub generator_config: Option<serde_json::Value>,
    pub model: BenchModel,
    pub schedule: Schedule,
    /// Open model: most operations in flight.
    pub max_in_flight: u32,
    pub operations: Option<u64>,
    pub policy: Policy,
    pub thresholds: Vec<Threshold>,
    pub seed: u64,
}

fn parse_phase(text: &str, model: BenchModel) -> Result<PhaseSection, String> {
    let bad = |why: String| format!("invalid phase \"{text}\": {why}");
    let mut parts = text.split(':');
    let (Some(kind), Some(duration), Some(level), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected KIND:DURATION:LEVEL, e.g. ramp:30s:500".into()));
    };
    let kind = match kind {
        "ramp" => PhaseKind::Ramp,
        "steady" => PhaseKind::Steady,
        "spike" => PhaseKind::Spike,
        k => {
            return Err(bad(format!(
                "unknown kind \"{k}\" (known: ramp, steady, spike)"
            )));
        }
    };
    let duration: Dur = duration.parse().map_err(bad)?;
    let mut phase = PhaseSection {
        kind,
        duration,
        rate: None,
        concurrency: None,
    };
    match model {
        BenchModel::Open => {
            phase.rate = Some(
                level
                    .parse()
                    .map_err(|_| bad("the level must be a rate".into()))?,
            )
        }
        BenchModel::Closed => {
            phase.concurrency = Some(
                level
                    .parse()
                    .map_err(|_| bad("the level must be a number of workers".into()))?,
            )
        }
    }
    Ok(phase)
}

/// Lays phases end to end; a ramp starts where the previous phase ended
/// (the first from 0 operations/s, or 1 worker).
fn schedule_of(phases: &[PhaseSection], model: BenchModel) -> Schedule {
    let mut prev = match model {
        BenchModel::Open => 0.0,
        BenchModel::Closed => 1.0,
    };
    let segments = phases
        .iter()
        .map(|p| {
            let level = match model {
                BenchModel::Open => p.rate.unwrap_or(0.0),
                BenchModel::Closed => f64::from(p.concurrency.unwrap_or(1)),
            };
            let from = if p.kind == PhaseKind::Ramp {
                prev
            } else {
                level
            };
            prev = level;
            Segment {
                kind: p.kind,
                duration: p.duration.get(),
                from,
                to: level,
            }
        })
        .collect();
    Schedule { segments }
}

impl Plan {
    /// Resolves the plan from the profile and the flags, or says in one line
    /// what is wrong.
    pub fn resolve(args: &BenchArgs) -> Result<Plan, String> {
        let target = Target::parse(&args.target)?;
        let profile = match &args.profile {
            Some(name) => crate::config::load_bench_profile(&args.profiles_dir, name)
                .map_err(|e| e.to_string().replace('\n', "; "))?,
            None => BenchSection::default(),
        };
        let model = args.model.unwrap_or(profile.model);
        let thresholds = args
            .thresholds
            .iter()
            .map(|t| t.parse())
            .collect::<Result<Vec<Threshold>, String>>()?;
        let single = |duration: Option<Dur>, level: (Option<f64>, Option<u32>)| PhaseSection {
            kind: PhaseKind::Steady,
            duration: duration.unwrap_or(Dur::secs(10)),
            rate: level.0,
            concurrency: level.1,
        };
        let profile_total = (!profile.phases.is_empty())
            .then(|| Dur(profile.phases.iter().map(|p| p.duration.get()).sum()));
        // Without a duration from anywhere, a run bounded by an operation
        // count may take up to an hour.
        let fallback = if args.operations.is_some() && profile_total.is_none() {
            Some(Dur::secs(3600))
        } else {
            profile_total
        };
        let phases = if !args.phases.is_empty() {
            args.phases
                .iter()
                .map(|p| parse_phase(p, model))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            match model {
                BenchModel::Closed
                    if args.duration.is_some()
                        || args.concurrency.is_some()
                        || profile.phases.is_empty() =>
                {
                    let profile_peak = profile.phases.iter().filter_map(|p| p.concurrency).max();
                    let workers = args
                        .concurrency
                        .or(profile.concurrency)
                        .or(profile_peak)
                        .unwrap_or(10);
                    vec![single(args.duration.or(fallback), (None, Some(workers)))]
                }
                BenchModel::Open if args.duration.is_some() || args.rate.is_some() => {
                    let rate = args
                        .rate
                        .ok_or("the open model needs --rate (or phases with a rate)".to_string())?;
                    vec![single(args.duration.or(fallback), (Some(rate), None))]
                }
                BenchModel::Open if profile.phases.is_empty() => {
                    return Err("the open model needs --rate (or phases with a rate)".into());
                }
                _ => profile.phases.clone(),
            }
        };
        let checked = BenchSection {
            model,
            concurrency: args.concurrency.or(profile.concurrency),
            phases,
            timeout: args.timeout.or(profile.timeout),
            ..BenchSection::default()
        };
        if let Some(p) = crate::config::validate_bench(&checked).into_iter().next() {
            let key = p
                .key
                .replace("bench.phases", "phase")
                .replace("bench.", "--");
            return Err(format!("{key}: {}", p.message));
        }
        let generator_config = match &args.generator_config {
            Some(text) => Some(
                serde_json::from_str(text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.clone())),
            ),
            None => profile.generator.clone(),
        };
        let max_in_flight = match model {
            BenchModel::Open => checked.concurrency.unwrap_or(1000),
            BenchModel::Closed => 0,
        };
        Ok(Plan {
            target,
            plugin: args.plugin.clone(),
            generator_config,
            model,
            schedule: schedule_of(&checked.phases, model),
            max_in_flight,
            operations: args.operations,
            policy: Policy {
                timeout: checked.timeout.unwrap_or(Dur::secs(10)).get(),
                retries: args.retries.or(profile.retries).unwrap_or(0),
                backoff: args.retry_backoff.get(),
                backoff_max: args.retry_backoff_max.get(),
                retry_non_idempotent: args.retry_non_idempotent,
                breaker_failures: args
                    .breaker_failures
                    .or(profile.breaker_failures)
                    .unwrap_or(0),
                breaker_open_for: args.breaker_open_for.get(),
            },
            thresholds,
            seed: args.seed.unwrap_or_else(rand::random),
        })
    }

    /// Loads the generator plugin; refuses anything but an operation generator.
    pub fn load_generator(&self) -> Result<GeneratorPlugin, String> {
        if !self.plugin.is_file() {
            return Err(format!(
                "cannot read plugin {}: no such file (build the plugins with `cargo build --release --manifest-path plugins/Cargo.toml --target wasm32-wasip2`)",
                self.plugin.display()
            ));
        }
        let engine = PluginEngine::new(None, false).map_err(|e| format!("{e:#}"))?;
        let section = PluginSection {
            name: self
                .plugin
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("generator")
                .to_string(),
            kind: PluginKind::OperationGenerator,
            path: self.plugin.clone(),
            config: self.generator_config.clone(),
            limits: PluginLimits::default(),
        };
        let runtime = PluginRuntimeSection {
            watch: false,
            ..PluginRuntimeSection::default()
        };
        let plugin = GeneratorPlugin::load(&section, Path::new(""), &runtime, engine)
            .map_err(|e| format!("plugin {}: {e}", self.plugin.display()))?;
        plugin.set_seed(self.seed);
        Ok(plugin)
    }
}

/// `switchyard bench`.
pub fn main(args: &BenchArgs) -> ExitCode {
    let bad = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_BAD_INPUT)
    };
    let plan = match Plan::resolve(args) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let plugin = match plan.load_generator() {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let against = match check_baselines(args) {
        Ok(b) => b,
        Err(e) => return bad(e),
    };
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = runtime.block_on(plan.target.probe()) {
        return bad(e);
    }
    // The line is drawn on stderr; it stays off when either stream is
    // redirected, so logs and reports never fill with redraws.
    let show_progress =
        !args.quiet && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let mut report = runtime.block_on(run(&plan, plugin, show_progress));
    report.comparison = against.map(|b| baseline::compare(&b, &report));
    let saved = args
        .save_baseline
        .as_deref()
        .map(|name| baseline::save(&args.baseline_dir, name, &report));
    let written = write_outputs(&report, args);
    match saved {
        Some(Ok(b)) => eprintln!(
            "saved baseline \"{}\" ({} run(s)) in {}",
            b.name,
            b.runs,
            args.baseline_dir.display()
        ),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        None => {}
    }
    let regressed = report
        .comparison
        .as_ref()
        .zip(args.fail_on_regression)
        .is_some_and(|(c, pct)| c.regressed(Some(pct)));
    match written {
        Ok(()) if !report.passed() => ExitCode::from(EXIT_THRESHOLD),
        Ok(()) if regressed => ExitCode::from(baseline::EXIT_REGRESSION),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the baseline flags before any load: names, the flags' pairing,
/// and that the baseline to compare with exists.
fn check_baselines(args: &BenchArgs) -> Result<Option<baseline::Baseline>, String> {
    if let Some(name) = &args.save_baseline {
        baseline::check_name(name)?;
    }
    if let Some(pct) = args.fail_on_regression {
        if args.baseline.is_none() {
            return Err("--fail-on-regression needs --baseline NAME to compare with".into());
        }
        if !(pct >= 0.0 && pct.is_finite()) {
            return Err(format!(
                "invalid --fail-on-regression {pct}: a percentage, 0 or more"
            ));
        }
    }
    let Some(name) = &args.baseline else {
        return Ok(None);
    };
    baseline::check_name(name)?;
    baseline::load(&args.baseline_dir, name).map(Some)
}

fn write_outputs(report: &Report, args: &BenchArgs) -> Result<(), String> {
    let stdout_taken = [&args.json, &args.csv, &args.html]
        .iter()
        .any(|p| p.as_deref() == Some(Path::new("-")));
    if stdout_taken {
        eprint!("{}", report.summary());
    } else {
        print!("{}", report.summary());
    }
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| format!("cannot encode the JSON report: {e}"))?;
    let outputs = [
        (&args.json, json + "\n"),
        (&args.csv, report.csv()),
        (&args.html, html::page(report)),
    ];
    for (path, text) in outputs {
        match path.as_deref() {
            None => {}
            Some(p) if p == Path::new("-") => print!("{text}"),
            Some(p) => {
                std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?
            }
        }
    }
    Ok(())
}

/// Drives the plan to its end and reports.
pub async fn run(plan: &Plan, plugin: GeneratorPlugin, show_progress: bool) -> Report {
    let generator = plugin.view().name;
    let batch = match plan.model {
        BenchModel::Closed => (plan.schedule.peak() as u32).clamp(16, 256),
        BenchModel::Open => 64,
    };
    let engine = Engine::new(
        plan.target.clone(),
        plugin,
        plan.policy.clone(),
        batch,
        plan.operations,
    );
    let schedule = Arc::new(plan.schedule.clone());
    let t0 = Instant::now();
    let progress = show_progress.then(|| progress(engine.clone(), schedule.total(), t0));
    let samples: Arc<std::sync::Mutex<Vec<report::Sample>>> = Arc::default();
    let sampler = timeline(engine.clone(), samples.clone(), t0);
    match plan.model {
        BenchModel::Closed => {
            let workers = (schedule.peak().ceil() as u32).max(1);
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..workers {
                tasks.spawn(engine.clone().closed_worker(i, schedule.clone(), t0));
            }
            while tasks.join_next().await.is_some() {}
        }
        BenchModel::Open => {
            engine
                .clone()
                .open_dispatch(schedule.clone(), plan.max_in_flight, t0)
                .await;
        }
    }
    let elapsed = t0.elapsed();
    engine.stop();
    // Both tasks hold the engine: wait until they are gone, so its
    // recorder can be taken whole below.
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
    }
    sampler.abort();
    let _ = sampler.await;
    let mut timeline = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    close_timeline(
        &mut timeline,
        &engine.recorder.take_interval(),
        elapsed.as_secs_f64(),
    );
    if let Err(e) = engine.finish() {
        tracing::warn!("the generator failed to observe the last results: {e}");
    }
    let intended = match plan.model {
        BenchModel::Open => {
            let owed = plan.schedule.count_by(plan.schedule.total()).floor() as u64;
            Some(plan.operations.map_or(owed, |cap| owed.min(cap)))
        }
        BenchModel::Closed => None,
    };
    let breaker = report::BreakerReport {
        opened: engine.breaker.opened.load(Relaxed),
        rejected: engine.breaker.rejected.load(Relaxed),
    };
    let schedule_report = intended.map(|intended| report::ScheduleReport {
        intended,
        late: engine.late.load(Relaxed),
        max_lag_us: engine.max_lag_us.load(Relaxed),
        missed: engine.missed.load(Relaxed),
    });
    let engine = Arc::try_unwrap(engine).ok();
    let stats = engine.map(|e| e.recorder.into_stats()).unwrap_or_default();
    let operations = Scope::new("all", &stats.overall, elapsed);
    let kinds: Vec<Scope> = stats
        .kinds
        .iter()
        .map(|(name, t)| Scope::new(name, t, elapsed))
        .collect();
    let thresholds = plan
        .thresholds
        .iter()
        .map(|t| t.check(&operations, &kinds))
        .collect();
    Report {
        target: plan.target.url.clone(),
        generator,
        model: plan.model.as_str().to_string(),
        seed: plan.seed,
        duration_s: elapsed.as_secs_f64(),
        attempts: Scope::new("attempts", &stats.attempts, elapsed),
        operations,
        kinds,
        retries: stats.retries,
        errors: stats.errors,
        breaker,
        schedule: schedule_report,
        thresholds,
        timeline,
        phases: phase_marks(&plan.schedule),
        distribution: report::distribution(&stats.overall.latency),
        comparison: None,
    }
}

/// Samples the run once a second for the report's timeline, until aborted.
fn timeline(
    engine: Arc<Engine>,
    samples: Arc<std::sync::Mutex<Vec<report::Sample>>>,
    t0: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::from_std(t0) + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = 0.0;
        loop {
            tick.tick().await;
            let tally = engine.recorder.take_interval();
            let now = t0.elapsed().as_secs_f64();
            let sample = report::Sample::new(now, now - last, &tally);
            last = now;
            samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sample);
        }
    })
}

/// Adds what finished after the last whole second: as a sample of its own
/// when it lasted half a second or more, else counted into the last sample
/// (whose quantiles stay), so a few stragglers never plot as a cliff.
fn close_timeline(timeline: &mut Vec<report::Sample>, rest: &stats::Tally, end_s: f64) {
    let ops = rest.ok + rest.failed;
    let n = timeline.len();
    let since = timeline.last().map_or(0.0, |s| s.t_s);
    if ops == 0 || end_s <= since {
        return;
    }
    if n > 0 && end_s - since < 0.5 {
        let start = if n >= 2 { timeline[n - 2].t_s } else { 0.0 };
        let last = &mut timeline[n - 1];
        last.ops += ops;
        last.errors += rest.failed;
        last.rps = last.ops as f64 / (end_s - start);
        last.t_s = end_s;
    } else {
        timeline.push(report::Sample::new(end_s, end_s - since, rest));
    }
}

/// The schedule's phases on the run's time axis.
fn phase_marks(schedule: &Schedule) -> Vec<report::PhaseMark> {
    let mut start = 0.0;
    schedule
        .segments
        .iter()
        .map(|s| {
            let end = start + s.duration.as_secs_f64();
            let mark = report::PhaseMark {
                kind: s.kind.as_str().to_string(),
                start_s: start,
                end_s: end,
                from: s.from,
                to: s.to,
            };
            start = end;
            mark
        })
        .collect()
}

/// The live progress line on stderr: elapsed, rate, p99 and errors.
fn progress(engine: Arc<Engine>, total: Duration, t0: Instant) -> tokio::task::JoinHandle<()> {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total.as_millis() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    tokio::spawn(async move {
        let tick = Duration::from_millis(250);
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let (ops, errors, p99) = engine.recorder.take_recent();
            let rate = ops as f64 / last.elapsed().as_secs_f64();
            last = Instant::now();
            bar.set_position(t0.elapsed().as_millis() as u64);
            bar.set_message(format!(
                "{rate:>9.0} op/s  p99 {:>8.2}ms  errors {errors}",
                p99 as f64 / 1e3
            ));
            if t0.elapsed() >= total {
                bar.finish_and_clear();
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(ok: u64, failed: u64) -> stats::Tally {
        let mut t = stats::Tally::default();
        for i in 0..ok + failed {
            t.record(Duration::from_millis(2), i < ok);
        }
        t
    }

    #[test]
    fn a_short_tail_is_counted_into_the_last_second_and_a_long_one_stands_alone() {
        let mut timeline = vec![
            report::Sample::new(1.0, 1.0, &tally(100, 0)),
            report::Sample::new(2.0, 1.0, &tally(100, 10)),
        ];
        close_timeline(&mut timeline, &tally(5, 1), 2.2);
        assert_eq!(timeline.len(), 2);
        let last = &timeline[1];
        assert_eq!((last.t_s, last.ops, last.errors), (2.2, 116, 11));
        assert!((last.rps - 116.0 / 1.2).abs() < 1e-9, "{}", last.rps);

        close_timeline(&mut timeline, &tally(60, 0), 2.8);
        assert_eq!(timeline.len(), 3);
        assert_eq!((timeline[2].ops, timeline[2].t_s), (60, 2.8));
        assert!((timeline[2].rps - 100.0).abs() < 1e-6);

        let mut empty = Vec::new();
        close_timeline(&mut empty, &tally(3, 0), 0.3);
        assert_eq!(
            empty.len(),
            1,
            "a run shorter than a second still has a sample"
        );
        close_timeline(&mut empty, &tally(0, 0), 0.4);
        assert_eq!(empty.len(), 1, "nothing finished: nothing to add");
    }
}
