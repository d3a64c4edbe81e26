//! Smooth weighted round robin, as nginx does it, precomputed.
//!
//! nginx's algorithm walks every backend on every pick under a lock. The
//! sequence it produces is periodic (period = sum of weights / their gcd), so
//! we compute one period when the upstream is built and a pick is one atomic
//! increment and an index: O(1), lock-free, same order as nginx.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arc_swap::ArcSwap;

use super::{BackendSet, Balancer, PickContext, scan_from};

#[derive(Debug)]
pub struct Weighted {
    /// Replaced whole when an optimizer moves a weight.
    schedule: ArcSwap<Box<[u32]>>,
    next: Arc<AtomicUsize>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn schedule_of(set: &BackendSet) -> Box<[u32]> {
    let weights: Vec<u64> = set.iter().map(|b| u64::from(b.weight().max(1))).collect();
    smooth_schedule(&weights)
}

impl Weighted {
    pub fn new(set: &BackendSet, rotation: Arc<AtomicUsize>) -> Self {
        Weighted {
            schedule: ArcSwap::from_pointee(schedule_of(set)),
            next: rotation,
        }
    }
}

/// One period of nginx's smooth weighted round robin.
fn smooth_schedule(weights: &[u64]) -> Box<[u32]> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| (w / g) as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        schedule.push(best as u32);
    }
    schedule.into_boxed_slice()
}

impl Balancer for Weighted {
    fn pick(&self, set: &BackendSet, ctx: &PickContext<'_>) -> Option<usize> {
        let schedule = self.schedule.load();
        let len = schedule.len();
        if len == 0 || set.is_empty() {
            return None;
        }
        // Skipped entries advance the counter again, so an unavailable
        // backend's share spreads over the others in proportion to weight.
        for _ in 0..set.len().min(len) * 2 {
            let i = schedule[self.next.fetch_add(1, Relaxed) % len] as usize;
            if i < set.len() && ctx.eligible(set, i) {
                return Some(i);
            }
        }
        scan_from(set, ctx, 0)
    }

    fn reweigh(&self, set: &BackendSet) {
        self.schedule.store(Arc::new(schedule_of(set)));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::set;
    use super::*;

    #[test]
    fn nginx_order_for_5_1_1() {
        // The sequence from nginx's commit introducing smooth weighting.
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(&*s, &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn proportional() {
        let backends = set(&[1, 2, 7]);
        let w = Weighted::new(&backends, Arc::default());
        let ctx = PickContext::new(1);
        let mut counts = [0; 3];
        for _ in 0..1000 {
            counts[w.pick(&backends, &ctx).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 200, 700]);
        backends[2].set_weight(1);
        w.reweigh(&backends);
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[w.pick(&backends, &ctx).unwrap()] += 1;
        }
        assert_eq!(
            counts,
            [100, 200, 100],
            "a new weight applies without a rebuild"
        );
    }
}
