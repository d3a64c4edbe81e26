//! Measurement during a run: HDR histograms of operation latency per kind
//! and overall, attempt latency, error causes, and short windows for the
//! live progress line and the report's timeline.
//!
//! Operations and attempts are kept apart: an operation's latency runs from
//! its start (closed model) or its intended start (open model) to its final
//! outcome, retries and backoff included, so retries never hide tail latency.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, 1 µs to 1 hour, 3 significant digits.
const MAX_US: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

/// Counts and latencies of one kind of operation (or of all of them).
#[derive(Clone)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    pub latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            ok: 0,
            failed: 0,
            latency: histogram(),
        }
    }
}

impl Tally {
    pub(super) fn record(&mut self, latency: Duration, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        let _ = self.latency.record(micros(latency));
    }
}

/// One cause of failed operations.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ErrorCount {
    pub count: u64,
    /// The first message seen for this cause.
    pub example: String,
}

#[derive(Default)]
pub struct Stats {
    pub overall: Tally,
    pub kinds: BTreeMap<String, Tally>,
    pub attempts: Tally,
    pub retries: u64,
    pub errors: BTreeMap<String, ErrorCount>,
    /// Since the progress line last looked.
    pub recent: Tally,
    /// Since the timeline's last sample.
    pub interval: Tally,
}

/// Shared by every task of a run.
#[derive(Default)]
pub struct Recorder(Mutex<Stats>);

impl Recorder {
    fn with<R>(&self, f: impl FnOnce(&mut Stats) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A finished operation; `error` is `(cause, message)` when it failed.
    pub fn operation(&self, kind: &str, latency: Duration, error: Option<(String, String)>) {
        self.with(|s| {
            let ok = error.is_none();
            s.overall.record(latency, ok);
            s.recent.record(latency, ok);
            s.interval.record(latency, ok);
            match s.kinds.get_mut(kind) {
                Some(t) => t.record(latency, ok),
                None => {
                    let mut t = Tally::default();
                    t.record(latency, ok);
                    s.kinds.insert(kind.to_string(), t);
                }
            }
            if let Some((cause, message)) = error {
                let e = s.errors.entry(cause).or_default();
                if e.count == 0 {
                    e.example = message;
                }
                e.count += 1;
            }
        });
    }

    /// One exchange with the target (or one refused by the breaker: not recorded).
    pub fn attempt(&self, latency: Duration, ok: bool, retry: bool) {
        self.with(|s| {
            s.attempts.record(latency, ok);
            s.retries += u64::from(retry);
        });
    }

    /// Operations, errors and p99 since the last call, for the progress line.
    pub fn take_recent(&self) -> (u64, u64, u64) {
        self.with(|s| {
            let recent = std::mem::take(&mut s.recent);
            (
                recent.ok + recent.failed,
                s.overall.failed,
                recent.latency.value_at_quantile(0.99),
            )
        })
    }

    /// Operations since the last call, for the report's timeline.
    pub fn take_interval(&self) -> Tally {
        self.with(|s| std::mem::take(&mut s.interval))
    }

    pub fn into_stats(self) -> Stats {
        self.0.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}
