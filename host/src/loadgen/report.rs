//! The report of a finished run: a human-readable summary, JSON and CSV
//! (the HTML page is in `html`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::baseline::Comparison;
use super::stats::{ErrorCount, Tally};
use super::threshold::Verdict;

/// Figures for all operations, one kind of them, or attempts.
#[derive(Clone, Debug, Serialize)]
pub struct Scope {
    pub name: String,
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    /// Per second over the run.
    pub rps: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    #[serde(skip)]
    latency: Histogram<u64>,
}

impl Scope {
    pub fn new(name: &str, tally: &Tally, elapsed: Duration) -> Scope {
        let h = &tally.latency;
        let count = tally.ok + tally.failed;
        let q = |q: f64| {
            if count == 0 {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Scope {
            name: name.to_string(),
            count,
            ok: tally.ok,
            failed: tally.failed,
            rps: count as f64 / elapsed.as_secs_f64().max(1e-9),
            mean_us: if count == 0 { 0.0 } else { h.mean() },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if count == 0 { 0 } else { h.max() },
            latency: h.clone(),
        }
    }

    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.latency.value_at_quantile(q) as f64
        }
    }

    /// The smallest latency the histogram counts as equal to `us`.
    pub fn lowest_equivalent(&self, us: f64) -> f64 {
        self.latency.lowest_equivalent(us as u64) as f64
    }

    /// The largest latency the histogram counts as equal to `us`.
    pub fn highest_equivalent(&self, us: f64) -> f64 {
        self.latency.highest_equivalent(us as u64) as f64
    }

    /// Share of operations that succeeded; 0 when none ran.
    pub fn success_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.ok as f64 / self.count as f64
        }
    }
}

/// One second (or the last part of one) of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds from the start of the run to the end of this interval.
    pub t_s: f64,
    /// Operations that finished in the interval, and how many failed.
    pub ops: u64,
    pub errors: u64,
    /// Finished operations per second over the interval.
    pub rps: f64,
    /// Latency quantiles of the operations that finished in the interval
    /// (0 when none did).
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
}

impl Sample {
    pub fn new(t_s: f64, interval_s: f64, tally: &Tally) -> Sample {
        let ops = tally.ok + tally.failed;
        let q = |q: f64| {
            if ops == 0 {
                0
            } else {
                tally.latency.value_at_quantile(q)
            }
        };
        Sample {
            t_s,
            ops,
            errors: tally.failed,
            rps: ops as f64 / interval_s.max(1e-9),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
        }
    }
}

/// A phase of the schedule on the run's time axis.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseMark {
    /// `ramp`, `steady` or `spike`.
    pub kind: String,
    pub start_s: f64,
    pub end_s: f64,
    /// The level (operations/s, or workers) at its start and end.
    pub from: f64,
    pub to: f64,
}

/// A point of the percentile distribution, as HdrHistogram's plotter draws
/// it: the latency at or under which `percentile` % of operations finished.
#[derive(Clone, Debug, Serialize)]
pub struct Percentile {
    pub percentile: f64,
    pub value_us: u64,
}

/// Points of `h`'s percentile distribution, five per halving of the
/// remaining tail (as `HdrHistogram`'s percentile output), up to 100%.
pub fn distribution(h: &Histogram<u64>) -> Vec<Percentile> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Percentile> = h
        .iter_quantiles(5)
        .map(|v| Percentile {
            // To 10 decimals: 99.9, not 99.90000000000003.
            percentile: (v.quantile_iterated_to() * 1e12).round() / 1e10,
            value_us: h.highest_equivalent(v.value_iterated_to()),
        })
        .collect();
    out.dedup_by(|b, a| a.percentile == b.percentile);
    out
}

/// How the open model kept to its schedule.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduleReport {
    /// Operations the schedule asked for.
    pub intended: u64,
    /// Started more than 10 ms behind their intended time.
    pub late: u64,
    pub max_lag_us: u64,
    /// Never started before the run ended; counted as failed operations.
    pub missed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BreakerReport {
    pub opened: u64,
    /// Attempts refused while it was open.
    pub rejected: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub generator: String,
    pub model: String,
    pub seed: u64,
    pub duration_s: f64,
    pub operations: Scope,
    pub kinds: Vec<Scope>,
    pub attempts: Scope,
    pub retries: u64,
    pub errors: BTreeMap<String, ErrorCount>,
    pub breaker: BreakerReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleReport>,
    pub thresholds: Vec<Verdict>,
    /// Per second over the run.
    pub timeline: Vec<Sample>,
    pub phases: Vec<PhaseMark>,
    /// The percentile distribution of all operations' latency.
    pub distribution: Vec<Percentile>,
    /// Against `--baseline`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1e3)
}

impl Report {
    pub fn passed(&self) -> bool {
        self.thresholds.iter().all(|v| v.passed)
    }

    /// All operations, each kind, then attempts: the rows of every table.
    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        std::iter::once(&self.operations)
            .chain(&self.kinds)
            .chain(std::iter::once(&self.attempts))
    }

    /// Retries and the breaker, in one line.
    pub fn recovery(&self) -> String {
        format!(
            "retries {}, breaker opened {} time(s) and refused {} attempt(s)",
            self.retries, self.breaker.opened, self.breaker.rejected
        )
    }

    /// The summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let o = &self.operations;
        let _ = writeln!(
            out,
            "{} operations in {:.1}s against {} ({} model, generator {}, seed {})",
            o.count, self.duration_s, self.target, self.model, self.generator, self.seed
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "count", "success", "rate/s", "p50", "p90", "p99", "p99.9", "max"
        );
        let row = |out: &mut String, s: &Scope| {
            let _ = writeln!(
                out,
                "{:<14} {:>9} {:>7.2}% {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>9}",
                s.name,
                s.count,
                s.success_rate() * 100.0,
                s.rps,
                ms(s.p50_us),
                ms(s.p90_us),
                ms(s.p99_us),
                ms(s.p999_us),
                ms(s.max_us)
            );
        };
        for s in self.scopes() {
            row(&mut out, s);
        }
        let _ = writeln!(out, "{}", self.recovery());
        if let Some(s) = &self.schedule {
            let _ = writeln!(
                out,
                "schedule: {} intended, {} late (>10ms), {} missed, max lag {}",
                s.intended,
                s.late,
                s.missed,
                ms(s.max_lag_us)
            );
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "errors:");
            for (cause, e) in &self.errors {
                let _ = writeln!(out, "  {cause:<18} {:>9}  e.g. {}", e.count, e.example);
            }
        }
        for v in &self.thresholds {
            let value = v.value.map_or("no data".to_string(), |x| format!("{x:.3}"));
            let mark = if v.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "threshold {mark} {} (measured {value})", v.threshold);
        }
        if let Some(c) = &self.comparison {
            out.push_str(&c.summary());
        }
        out
    }

    /// One row per scope: all operations, each kind, attempts.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "scope,count,ok,failed,success_rate,rps,mean_ms,p50_ms,p90_ms,p99_ms,p99_9_ms,max_ms\n",
        );
        let scopes = std::iter::once(("all", &self.operations))
            .chain(self.kinds.iter().map(|k| (k.name.as_str(), k)))
            .chain(std::iter::once(("attempts", &self.attempts)));
        for (name, s) in scopes {
            let f = |us: u64| us as f64 / 1e3;
            let _ = writeln!(
                out,
                "{name},{},{},{},{:.6},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3}",
                s.count,
                s.ok,
                s.failed,
                s.success_rate(),
                s.rps,
                s.mean_us / 1e3,
                f(s.p50_us),
                f(s.p90_us),
                f(s.p99_us),
                f(s.p999_us),
                f(s.max_us)
            );
        }
        out
    }
}
