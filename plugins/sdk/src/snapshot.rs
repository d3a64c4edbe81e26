//! Conveniences on the snapshot types.

use crate::{Snapshot, WindowStats};

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
}
