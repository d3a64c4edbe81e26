//! Least connections and least response time.
//!
//! Both pick the backend with the lowest cost. Least connections' cost is
//! in-flight requests over weight; least response time's is Peak-EWMA latency
//! times (in-flight + 1) over weight, as linkerd2-proxy and Finagle do. With
//! few backends every one is compared, starting from a rotating offset so that
//! ties take turns; with many, two random ones are (power of two choices).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Backend, BackendSet, Balancer, PickContext, scan_from};

fn pick_least(
    set: &BackendSet,
    ctx: &PickContext<'_>,
    p2c: bool,
    rotation: &AtomicUsize,
    cost: impl Fn(&Backend) -> f64,
) -> Option<usize> {
    let n = set.len();
    if n == 0 {
        return None;
    }
    if p2c && n > 2 {
        for _ in 0..4 {
            let a = rand::random_range(0..n);
            let mut b = rand::random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            match (ctx.eligible(set, a), ctx.eligible(set, b)) {
                (true, true) => return Some(if cost(&set[b]) < cost(&set[a]) { b } else { a }),
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => continue,
            }
        }
        return scan_from(set, ctx, rand::random_range(0..n));
    }
    let start = rotation.fetch_add(1, Relaxed);
    let mut best: Option<(usize, f64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        if !ctx.eligible(set, i) {
            continue;
        }
        let c = cost(&set[i]);
        if best.is_none_or(|(_, bc)| c < bc) {
            best = Some((i, c));
        }
    }
    best.map(|(i, _)| i)
}

#[derive(Debug)]
pub struct LeastConnections {
    p2c: bool,
    rotation: Arc<AtomicUsize>,
}

impl LeastConnections {
    pub fn new(p2c: bool, rotation: Arc<AtomicUsize>) -> Self {
        LeastConnections { p2c, rotation }
    }
}

impl Balancer for LeastConnections {
    fn pick(&self, set: &BackendSet, ctx: &PickContext<'_>) -> Option<usize> {
        pick_least(set, ctx, self.p2c, &self.rotation, |b| {
            f64::from(b.state.in_flight.load(Relaxed)) / f64::from(b.weight().max(1))
        })
    }
}

#[derive(Debug)]
pub struct LeastResponseTime {
    p2c: bool,
    rotation: Arc<AtomicUsize>,
}

impl LeastResponseTime {
    pub fn new(p2c: bool, rotation: Arc<AtomicUsize>) -> Self {
        LeastResponseTime { p2c, rotation }
    }
}

impl Balancer for LeastResponseTime {
    fn pick(&self, set: &BackendSet, ctx: &PickContext<'_>) -> Option<usize> {
        let now = ctx.now_ns;
        pick_least(set, ctx, self.p2c, &self.rotation, |b| {
            let in_flight = b.state.in_flight.load(Relaxed);
            let pending = f64::from(in_flight) + 1.0;
            b.state.ewma.estimate_ns(now, in_flight) * pending / f64::from(b.weight().max(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::set;
    use super::*;

    #[test]
    fn least_connections_prefers_idle_and_rotates_ties() {
        let backends = set(&[1, 1, 1]);
        let lc = LeastConnections::new(false, Arc::default());
        let ctx = PickContext::new(1);
        let mut counts = [0; 3];
        for _ in 0..30 {
            counts[lc.pick(&backends, &ctx).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 10], "ties take turns");
        backends[0].state.in_flight.store(5, Relaxed);
        backends[2].state.in_flight.store(1, Relaxed);
        assert_eq!(lc.pick(&backends, &ctx), Some(1));
    }

    #[test]
    fn least_response_time_avoids_slow_backend() {
        let backends = set(&[1, 1, 1]);
        let now = 10_000_000_000;
        backends[0]
            .state
            .ewma
            .observe(Duration::from_millis(1), now);
        backends[1]
            .state
            .ewma
            .observe(Duration::from_millis(21), now);
        backends[2]
            .state
            .ewma
            .observe(Duration::from_millis(1), now);
        let lrt = LeastResponseTime::new(false, Arc::default());
        let ctx = PickContext::new(now);
        for _ in 0..100 {
            assert_ne!(lrt.pick(&backends, &ctx), Some(1));
        }
    }

    #[test]
    fn p2c_never_picks_the_worst_of_three_when_others_are_free() {
        let backends = set(&[1, 1, 1]);
        backends[1].state.in_flight.store(50, Relaxed);
        let lc = LeastConnections::new(true, Arc::default());
        let ctx = PickContext::new(1);
        for _ in 0..200 {
            assert_ne!(lc.pick(&backends, &ctx), Some(1));
        }
    }
}
