//! Round robin: each pick takes the next backend in turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{BackendSet, Balancer, PickContext, scan_from};

#[derive(Debug, Default)]
pub struct RoundRobin {
    /// The upstream's rotation, kept across rebuilds by the registry.
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    pub fn new(rotation: Arc<AtomicUsize>) -> Self {
        RoundRobin { next: rotation }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, set: &BackendSet, ctx: &PickContext<'_>) -> Option<usize> {
        let n = set.len();
        if n == 0 {
            return None;
        }
        // A skipped backend advances the shared counter again instead of
        // handing its turn to its neighbour, so the remaining backends share
        // its traffic evenly.
        for _ in 0..n {
            let i = self.next.fetch_add(1, Relaxed) % n;
            if ctx.eligible(set, i) {
                return Some(i);
            }
        }
        scan_from(set, ctx, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::set;
    use super::*;

    #[test]
    fn even_and_skips_unavailable_fairly() {
        let backends = set(&[1, 1, 1]);
        let rr = RoundRobin::default();
        let ctx = PickContext::new(1);
        let mut counts = [0i32; 3];
        for _ in 0..300 {
            counts[rr.pick(&backends, &ctx).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);

        backends[0].state.set_ejected_until(u64::MAX);
        let mut counts = [0i32; 3];
        for _ in 0..300 {
            counts[rr.pick(&backends, &ctx).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert!((counts[1] - counts[2]).abs() <= 1, "{counts:?}");
    }
}
