//! Conveniences on the snapshot types.

use crate::{Snapshot, Trend, TrendSeries, WindowStats};

pub trait SnapshotExt {
    /// Errors / requests; 0 when there were no requests.
    fn error_rate(&self) -> f64;
    /// 1 − error rate; 1 when there were no requests.
    fn success_rate(&self) -> f64 {
        1.0 - self.error_rate()
    }
}

impl SnapshotExt for WindowStats {
    fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

impl Snapshot {
    /// The window closest in length to `ms` (the current one included).
    pub fn window(&self, ms: u32) -> &WindowStats {
        std::iter::once(&self.current)
            .chain(self.windows.iter())
            .min_by_key(|w| w.window_ms.abs_diff(ms))
            .unwrap_or(&self.current)
    }

    /// The trend of `series` over the trend window closest in length to
    /// `window_ms`; `None` only in a snapshot without trends.
    pub fn trend(&self, series: TrendSeries, window_ms: u32) -> Option<&Trend> {
        self.trends
            .iter()
            .filter(|t| t.series == series)
            .min_by_key(|t| t.window_ms.abs_diff(window_ms))
    }
}

impl Trend {
    /// The line's value `ahead_ms` from now (not below 0), as Prometheus's
    /// `predict_linear` would give it.
    pub fn at(&self, ahead_ms: u32) -> f64 {
        (self.value + self.slope_per_s * f64::from(ahead_ms) / 1000.0).max(0.0)
    }
}
