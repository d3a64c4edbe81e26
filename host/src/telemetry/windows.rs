//! In-process sliding windows: what alert rules and optimizers see, from the
//! same measurements the proxy takes, without a scrape in between.
//!
//! The request path records into one-second slots with atomics only (a
//! request count, an error count, cache hits and misses, and a log-linear
//! latency histogram of about 6% resolution). The control plane folds whole
//! minutes into minute aggregates (six hours of them) and, when it needs a
//! window, merges slots or minutes into an HDR histogram for percentiles.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

use super::snapshot::{Trend, WindowStats};
use super::trend::{Sample, WINDOWS_MS, trends};

/// Latencies below this many microseconds get a bin each.
const LINEAR: u64 = 32;
/// Sub-bins per power of two above `LINEAR`.
const SUB: u64 = 16;
/// Up to 2^26 µs (67 s); slower requests land in the last bin.
const MAX_EXP: u64 = 26;
pub const BINS: usize = (LINEAR + (MAX_EXP - 4) * SUB) as usize;

#[inline]
pub fn bin_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros() as u64).min(MAX_EXP - 1);
    let sub = (us >> (exp - 4)) & (SUB - 1);
    ((LINEAR + (exp - 5) * SUB) + sub) as usize
}

/// The middle of a bin, in microseconds.
pub fn bin_value(bin: usize) -> u64 {
    let b = bin as u64;
    if b < LINEAR {
        return b;
    }
    let exp = (b - LINEAR) / SUB + 5;
    let sub = (b - LINEAR) % SUB;
    let low = (1 << exp) | (sub << (exp - 4));
    low + (1 << (exp - 4)) / 2
}

/// One second of measurements.
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            second: AtomicU64::new(u64::MAX),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            latency: (0..BINS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn reset(&self) {
        for c in [&self.requests, &self.errors, &self.hits, &self.misses] {
            c.store(0, Relaxed);
        }
        for b in self.latency.iter() {
            if b.load(Relaxed) != 0 {
                b.store(0, Relaxed);
            }
        }
    }
}

/// Sums over a span of slots or minutes.
#[derive(Clone)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub hits: u64,
    pub misses: u64,
    pub latency: Vec<u64>,
}

impl std::fmt::Debug for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Totals({} requests, {} errors)",
            self.requests, self.errors
        )
    }
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            requests: 0,
            errors: 0,
            hits: 0,
            misses: 0,
            latency: vec![0; BINS],
        }
    }
}

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.hits += other.hits;
        self.misses += other.misses;
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// Figures for a window of `window_ms`, of which `covered_ms` had data.
    pub fn stats(&self, window_ms: u32, covered_ms: u64) -> WindowStats {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 1 << 27, 2)
            .expect("static histogram bounds are valid");
        let mut sum = 0u128;
        for (bin, &n) in self.latency.iter().enumerate() {
            if n > 0 {
                let v = bin_value(bin).max(1);
                let _ = hist.record_n(v, n);
                sum += u128::from(v) * u128::from(n);
            }
        }
        let samples = hist.len();
        let q = |p: f64| {
            if samples == 0 {
                0
            } else {
                hist.value_at_quantile(p)
            }
        };
        let cacheable = self.hits + self.misses;
        WindowStats {
            window_ms,
            requests: self.requests,
            errors: self.errors,
            rps: self.requests as f64 / (covered_ms.max(1) as f64 / 1000.0),
            mean_us: if samples == 0 {
                0
            } else {
                (sum / u128::from(samples)) as u64
            },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            max_us: if samples == 0 { 0 } else { hist.max() },
            cache_hit_ratio: if cacheable == 0 {
                0.0
            } else {
                self.hits as f64 / cacheable as f64
            },
        }
    }
}

/// The `q` quantile of a log-linear histogram holding `total` samples.
fn bins_quantile(bins: impl Iterator<Item = u64>, total: u64, q: f64) -> Option<u64> {
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bin, n) in bins.enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bin_value(bin));
        }
    }
    None
}

/// A ring of one-second slots, written lock-free by the request path.
pub struct Series {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for Series {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Series({} s)", self.slots.len())
    }
}

impl Series {
    pub fn new(seconds: usize) -> Self {
        Series {
            slots: (0..seconds.max(2)).map(|_| Slot::new()).collect(),
        }
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % self.slots.len() as u64) as usize];
        if crate::clock::claim_second(&slot.second, second) {
            slot.reset();
        }
        slot
    }

    /// A finished request: whether it failed, and its latency when it is a
    /// latency worth measuring (not a rejection the proxy made at once).
    #[inline]
    pub fn record(&self, now_ms: u64, latency_us: Option<u64>, failed: bool) {
        let slot = self.slot(now_ms / 1000);
        slot.requests.fetch_add(1, Relaxed);
        if failed {
            slot.errors.fetch_add(1, Relaxed);
        }
        if let Some(us) = latency_us {
            slot.latency[bin_of(us)].fetch_add(1, Relaxed);
        }
    }

    #[inline]
    pub fn record_cache(&self, now_ms: u64, hit: bool) {
        let slot = self.slot(now_ms / 1000);
        if hit { &slot.hits } else { &slot.misses }.fetch_add(1, Relaxed);
    }

    /// One sample per second in `[from, to)` (seconds the ring no longer
    /// holds, or that saw nothing, count as empty), placed relative to
    /// `now_s`.
    pub fn samples(&self, from: u64, to: u64, now_s: f64) -> Vec<Sample> {
        let mut out: Vec<Sample> = (from..to)
            .map(|second| Sample {
                at_s: second as f64 - now_s,
                span_s: 1.0,
                ..Sample::default()
            })
            .collect();
        for slot in self.slots.iter() {
            let second = slot.second.load(Relaxed);
            if second < from || second >= to {
                continue;
            }
            let sample = &mut out[(second - from) as usize];
            sample.requests = slot.requests.load(Relaxed);
            sample.errors = slot.errors.load(Relaxed);
            let measured: u64 = slot.latency.iter().map(|b| b.load(Relaxed)).sum();
            sample.p99_us =
                bins_quantile(slot.latency.iter().map(|b| b.load(Relaxed)), measured, 0.99);
        }
        out
    }

    /// Totals of the seconds in `[from, to)`, as far as the ring holds them.
    pub fn totals(&self, from: u64, to: u64) -> Totals {
        let mut t = Totals::default();
        for slot in self.slots.iter() {
            let s = slot.second.load(Relaxed);
            if s >= from && s < to {
                t.requests += slot.requests.load(Relaxed);
                t.errors += slot.errors.load(Relaxed);
                t.hits += slot.hits.load(Relaxed);
                t.misses += slot.misses.load(Relaxed);
                for (a, b) in t.latency.iter_mut().zip(slot.latency.iter()) {
                    *a += b.load(Relaxed);
                }
            }
        }
        t
    }
}

/// The process-wide windows: seconds for the short ones, minute aggregates
/// for up to six hours.
#[derive(Debug)]
pub struct Windows {
    pub seconds: Series,
    minutes: Mutex<MinuteLog>,
    started_ms: u64,
}

#[derive(Debug)]
struct MinuteLog {
    /// (minute number, totals), oldest first.
    done: VecDeque<(u64, Totals)>,
    /// One trend sample per minute (24 hours of them), oldest first.
    points: VecDeque<(u64, Sample)>,
    next: u64,
}

/// Minute aggregates kept: six hours.
const MINUTES: usize = 360;
/// Minute trend samples kept: a day.
const POINTS: usize = 1440;

impl Windows {
    pub fn new(now_ms: u64) -> Self {
        Windows {
            seconds: Series::new(150),
            minutes: Mutex::new(MinuteLog {
                done: VecDeque::new(),
                points: VecDeque::new(),
                next: now_ms / 60_000,
            }),
            started_ms: now_ms,
        }
    }

    /// A cache lookup on the request path: a hit or a miss.
    #[inline]
    pub fn record_cache(&self, now_ms: u64, hit: bool) {
        self.seconds.record_cache(now_ms, hit);
    }

    /// Folds every finished minute not yet folded into the minute log.
    fn fold(&self, now_ms: u64) {
        let Ok(mut log) = self.minutes.lock() else {
            return;
        };
        let current = now_ms / 60_000;
        while log.next < current {
            let m = log.next;
            let totals = self.seconds.totals(m * 60, (m + 1) * 60);
            // The minute the process started in was not watched whole.
            if m * 60_000 >= self.started_ms {
                let sample = Sample {
                    at_s: 0.0,
                    span_s: 60.0,
                    requests: totals.requests,
                    errors: totals.errors,
                    p99_us: bins_quantile(
                        totals.latency.iter().copied(),
                        totals.latency.iter().sum(),
                        0.99,
                    ),
                };
                log.points.push_back((m, sample));
                if log.points.len() > POINTS {
                    log.points.pop_front();
                }
            }
            log.done.push_back((m, totals));
            if log.done.len() > MINUTES {
                log.done.pop_front();
            }
            log.next += 1;
        }
    }

    /// Figures over the last `window_ms` (at most what has been recorded).
    pub fn window(&self, now_ms: u64, window_ms: u32) -> WindowStats {
        let covered = u64::from(window_ms).min(now_ms.saturating_sub(self.started_ms).max(1000));
        let now_s = now_ms / 1000;
        if window_ms <= 60_000 {
            let span = u64::from(window_ms).div_ceil(1000);
            return self
                .seconds
                .totals(now_s + 1 - span.min(now_s + 1), now_s + 1)
                .stats(window_ms, covered);
        }
        self.fold(now_ms);
        let minute = now_ms / 60_000;
        // Whole minutes from the log, the current minute from the seconds.
        let span = u64::from(window_ms) / 60_000;
        let mut t = self.seconds.totals(minute * 60, now_s + 1);
        if let Ok(log) = self.minutes.lock() {
            for (_, totals) in log
                .done
                .iter()
                .rev()
                .take_while(|(m, _)| *m + span > minute)
            {
                t.add(totals);
            }
        }
        t.stats(window_ms, covered)
    }
}

impl Windows {
    /// Every trend window's three trends. The 60 s window uses the
    /// seconds before the current one; longer ones the minutes before the
    /// current one.
    pub fn trends(&self, now_ms: u64) -> Vec<Trend> {
        self.fold(now_ms);
        let now_s = now_ms as f64 / 1000.0;
        let second = now_ms / 1000;
        let started = self.started_ms.div_ceil(1000);
        let minute = now_ms / 60_000;
        let log = self.minutes.lock().ok();
        WINDOWS_MS
            .iter()
            .flat_map(|&window_ms| {
                let samples = if window_ms <= 60_000 {
                    let from = second
                        .saturating_sub(u64::from(window_ms) / 1000)
                        .max(started);
                    self.seconds.samples(from.min(second), second, now_s)
                } else {
                    let span = u64::from(window_ms) / 60_000;
                    log.as_ref()
                        .map(|log| {
                            log.points
                                .iter()
                                .filter(|(m, _)| m + span >= minute && *m < minute)
                                .map(|&(m, s)| Sample {
                                    at_s: (m * 60) as f64 - now_s,
                                    ..s
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                trends(window_ms, &samples)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{TrendDirection, TrendSeries};

    #[test]
    fn bins_are_monotonic_and_close() {
        let mut last = 0;
        for us in [
            0u64, 1, 31, 32, 33, 100, 1000, 12_345, 250_000, 5_000_000, 60_000_000,
        ] {
            let b = bin_of(us);
            assert!(b >= last && b < BINS, "{us}");
            last = b;
            let v = bin_value(b);
            let err = (v as f64 - us as f64).abs() / (us.max(1) as f64);
            assert!(err <= 0.07 || us < LINEAR, "{us} -> {v}");
        }
    }

    #[test]
    fn windows_count_and_rank() {
        let w = Windows::new(1_000_000);
        for i in 0..100u64 {
            w.seconds.record(1_005_000, Some(1000 + i * 10), i % 4 == 0);
        }
        let s = w.window(1_005_500, 10_000);
        assert_eq!((s.requests, s.errors), (100, 25));
        assert!((1400..1600).contains(&s.p50_us), "{s:?}");
        assert!((1900..2100).contains(&s.p99_us), "{s:?}");
        assert!(
            (s.rps - 100.0 / 5.5).abs() < 1.0,
            "rps over the 5.5 s recorded: {}",
            s.rps
        );
        let old = w.window(1_030_000, 10_000);
        assert_eq!(old.requests, 0, "seconds older than the window are out");
        let long = w.window(1_030_000, 300_000);
        assert_eq!(long.requests, 100, "the 5-minute window still holds them");
    }

    #[test]
    fn trends_follow_a_rising_latency_and_a_flat_rate() {
        let start = 6_000_000;
        let w = Windows::new(start);
        // 40 s, 10 requests a second, p99 rising 1 ms a second from 10 ms.
        for s in 0..40u64 {
            for _ in 0..10 {
                w.seconds
                    .record(start + s * 1000 + 500, Some(10_000 + s * 1000), false);
            }
        }
        let trends = w.trends(start + 40_000);
        assert_eq!(trends.len(), 18, "six windows, three series");
        let minute = |series| {
            trends
                .iter()
                .find(|t| t.window_ms == 60_000 && t.series == series)
                .cloned()
                .expect("the 60 s trends")
        };
        let p99 = minute(TrendSeries::P99);
        assert_eq!(p99.points, 40);
        assert_eq!(p99.direction, TrendDirection::Increasing, "{p99:?}");
        assert!((800.0..1200.0).contains(&p99.slope_per_s), "{p99:?}");
        let rps = minute(TrendSeries::Rps);
        assert_eq!(rps.direction, TrendDirection::Stable, "{rps:?}");
        assert!((rps.mean - 10.0).abs() < 1e-9);
        let errors = minute(TrendSeries::ErrorRate);
        assert_eq!(
            (errors.mean, errors.direction),
            (0.0, TrendDirection::Stable)
        );
        let day = trends.iter().find(|t| t.window_ms == 86_400_000).cloned();
        assert_eq!(day.map(|t| t.points), Some(0), "no whole minute yet");
    }
}
