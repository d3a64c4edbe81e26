//! Trends: a least-squares line through each main series (requests per
//! second, error rate, p99) over each trend window, with a prediction, its
//! confidence (R²) and a direction, the way Prometheus's `predict_linear`
//! extrapolates. Alert rules read them to fire before a threshold is
//! crossed; optimizers to act on where a figure is heading.
//!
//! The 60 s window is fitted to one point per second; the longer ones to
//! one point per minute, from the minute log. Seconds and minutes without
//! requests count as 0 requests per second but give no error-rate or p99
//! point. The prediction looks as far ahead as the window looks back.

use super::snapshot::{Trend, TrendDirection, TrendSeries};

/// The trend windows: 1 m, 5 m, 15 m, 1 h, 6 h, 24 h.
pub const WINDOWS_MS: [u32; 6] = [60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000];

/// Fewest points a line is fitted to.
const MIN_POINTS: usize = 3;
/// A line that moves less than this share of the mean across the window
/// is not a trend.
const MIN_CHANGE: f64 = 0.1;
/// A line explaining less than this share of the variance is no trend.
const MIN_R2: f64 = 0.5;
/// Points scattered by more than this coefficient of variation, with no
/// line to explain them, are volatile.
const VOLATILE_CV: f64 = 0.25;

/// One figure at one time: seconds relative to now (negative: the past).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub at_s: f64,
    pub value: f64,
}

/// Fits `points` (of a window of `window_ms`) and labels the line.
pub fn fit(series: TrendSeries, window_ms: u32, points: &[Point]) -> Trend {
    let n = points.len();
    let mut trend = Trend {
        series,
        window_ms,
        points: n as u32,
        horizon_ms: window_ms,
        ..Trend::default()
    };
    if n == 0 {
        return trend;
    }
    let nf = n as f64;
    let mean_x = points.iter().map(|p| p.at_s).sum::<f64>() / nf;
    let mean_y = points.iter().map(|p| p.value).sum::<f64>() / nf;
    trend.mean = mean_y;
    if n < MIN_POINTS {
        trend.value = mean_y;
        trend.predicted = mean_y.max(0.0);
        return trend;
    }
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for p in points {
        let (dx, dy) = (p.at_s - mean_x, p.value - mean_y);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let intercept = mean_y - slope * mean_x;
    // R² of a simple regression is the squared correlation; a series
    // without variance is explained perfectly by its flat line.
    let r2 = if syy == 0.0 {
        1.0
    } else if sxx == 0.0 {
        0.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    let horizon_s = f64::from(window_ms) / 1000.0;
    trend.slope_per_s = slope;
    trend.value = intercept;
    trend.predicted = (intercept + slope * horizon_s).max(0.0);
    trend.r_squared = r2;
    let scale = mean_y.abs().max(f64::MIN_POSITIVE);
    let change = (slope * horizon_s).abs() / scale;
    let cv = (syy / nf).sqrt() / scale;
    trend.direction = if change >= MIN_CHANGE && r2 >= MIN_R2 {
        if slope > 0.0 {
            TrendDirection::Increasing
        } else {
            TrendDirection::Decreasing
        }
    } else if cv >= VOLATILE_CV {
        TrendDirection::Volatile
    } else {
        TrendDirection::Stable
    };
    trend
}

/// One second's or one minute's figures, as the windows keep them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Start of the span, in seconds relative to now.
    pub at_s: f64,
    /// Length of the span in seconds.
    pub span_s: f64,
    pub requests: u64,
    pub errors: u64,
    /// `None` when nothing was measured.
    pub p99_us: Option<u64>,
}

/// The three trends of one window.
pub fn trends(window_ms: u32, samples: &[Sample]) -> [Trend; 3] {
    let rps: Vec<Point> = samples
        .iter()
        .map(|s| Point {
            at_s: s.at_s,
            value: s.requests as f64 / s.span_s.max(1e-9),
        })
        .collect();
    let errors: Vec<Point> = samples
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| Point {
            at_s: s.at_s,
            value: s.errors as f64 / s.requests as f64,
        })
        .collect();
    let p99: Vec<Point> = samples
        .iter()
        .filter_map(|s| {
            s.p99_us.map(|v| Point {
                at_s: s.at_s,
                value: v as f64,
            })
        })
        .collect();
    [
        fit(TrendSeries::Rps, window_ms, &rps),
        fit(TrendSeries::ErrorRate, window_ms, &errors),
        fit(TrendSeries::P99, window_ms, &p99),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize, f: impl Fn(f64) -> f64) -> Vec<Point> {
        (0..n)
            .map(|i| {
                let at_s = i as f64 - n as f64;
                Point {
                    at_s,
                    value: f(at_s),
                }
            })
            .collect()
    }

    #[test]
    fn a_rising_line_is_fitted_and_predicted() {
        // 100 ms now, rising 1 ms per second.
        let t = fit(
            TrendSeries::P99,
            60_000,
            &line(60, |x| 100_000.0 + 1000.0 * x),
        );
        assert!((t.slope_per_s - 1000.0).abs() < 1e-6, "{t:?}");
        assert!((t.value - 100_000.0).abs() < 1e-3, "{t:?}");
        assert!((t.predicted - 160_000.0).abs() < 1e-3, "{t:?}");
        assert!((t.r_squared - 1.0).abs() < 1e-9);
        assert_eq!(t.direction, TrendDirection::Increasing);
        // 100 rps a minute ago, 11.5 now.
        let down = fit(TrendSeries::Rps, 60_000, &line(60, |x| 10.0 - 1.5 * x));
        assert_eq!(down.direction, TrendDirection::Decreasing);
        assert!((down.value - 10.0).abs() < 1e-9, "{down:?}");
    }

    #[test]
    fn flat_scattered_and_short_series_are_labelled() {
        let flat = fit(TrendSeries::Rps, 60_000, &line(60, |_| 50.0));
        assert_eq!(flat.direction, TrendDirection::Stable);
        assert_eq!(flat.slope_per_s, 0.0);
        assert_eq!(flat.r_squared, 1.0);
        // Alternating 10 and 90: no slope, large scatter.
        let saw = fit(
            TrendSeries::Rps,
            60_000,
            &line(60, |x| if (x as i64) % 2 == 0 { 10.0 } else { 90.0 }),
        );
        assert_eq!(saw.direction, TrendDirection::Volatile, "{saw:?}");
        assert!(saw.r_squared < 0.1);
        // A small wobble around a level is stable.
        let wobble = fit(
            TrendSeries::P99,
            60_000,
            &line(60, |x| {
                1000.0 + if (x as i64) % 2 == 0 { 10.0 } else { -10.0 }
            }),
        );
        assert_eq!(wobble.direction, TrendDirection::Stable, "{wobble:?}");
        let short = fit(TrendSeries::Rps, 60_000, &line(2, |x| x + 10.0));
        assert_eq!((short.points, short.r_squared), (2, 0.0));
        assert_eq!(short.direction, TrendDirection::Stable);
        let none = fit(TrendSeries::Rps, 60_000, &[]);
        assert_eq!((none.points, none.predicted), (0, 0.0));
    }

    #[test]
    fn predictions_never_go_below_zero() {
        let t = fit(TrendSeries::ErrorRate, 60_000, &line(60, |x| -0.001 * x));
        assert_eq!(t.direction, TrendDirection::Decreasing);
        assert_eq!(t.predicted, 0.0);
    }

    #[test]
    fn samples_without_requests_give_no_error_or_latency_point() {
        let samples = [
            Sample {
                at_s: -3.0,
                span_s: 1.0,
                requests: 10,
                errors: 1,
                p99_us: Some(500),
            },
            Sample {
                at_s: -2.0,
                span_s: 1.0,
                ..Sample::default()
            },
            Sample {
                at_s: -1.0,
                span_s: 1.0,
                requests: 20,
                errors: 0,
                p99_us: Some(700),
            },
        ];
        let [rps, errors, p99] = trends(60_000, &samples);
        assert_eq!((rps.points, errors.points, p99.points), (3, 2, 2));
        assert!((rps.mean - 10.0).abs() < 1e-9);
    }
}
