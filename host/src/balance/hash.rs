//! Consistent hashing: a ring with virtual nodes, optionally with bounded
//! loads (Mirrokni et al., as HAProxy's `hash-balance-factor`).
//!
//! Ring points are derived from each backend's address, not its position, so
//! removing a backend moves only the keys that were on it. A request's key
//! (header, cookie, path or client IP) is hashed with xxh3; the first point
//! clockwise whose backend is eligible (and, when bounded, under
//! `factor × average load`) serves it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arc_swap::ArcSwap;
use xxhash_rust::xxh3::xxh3_64;

use super::{BackendSet, Balancer, PickContext, scan_from};

/// The hash used for request keys; stable across processes and versions, so
/// several Switchyard instances place a key on the same backend.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

#[derive(Debug)]
pub struct HashRing {
    /// Replaced whole when an optimizer moves a weight.
    ring: ArcSwap<Ring>,
    virtual_nodes: u32,
    bounded_load: Option<f64>,
    /// For requests that carry no key: spreads them around the ring.
    keyless: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Ring {
    points: Box<[u64]>,
    owners: Box<[u32]>,
}

impl HashRing {
    pub fn new(
        set: &BackendSet,
        virtual_nodes: u32,
        bounded_load: Option<f64>,
        rotation: Arc<AtomicUsize>,
    ) -> Self {
        HashRing {
            ring: ArcSwap::from_pointee(Ring::new(set, virtual_nodes)),
            virtual_nodes,
            bounded_load,
            keyless: rotation,
        }
    }
}

impl Ring {
    fn new(set: &BackendSet, virtual_nodes: u32) -> Self {
        let mut ring: Vec<(u64, u32)> = Vec::new();
        for (i, b) in set.iter().enumerate() {
            let n = virtual_nodes.max(1) * b.weight().max(1);
            for v in 0..n {
                let point = hash_bytes(format!("{}#{v}", b.addr).as_bytes());
                ring.push((point, i as u32));
            }
        }
        // Ties between addresses are broken by address so the order does not
        // depend on config order.
        ring.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| set[a.1 as usize].addr.cmp(&set[b.1 as usize].addr))
        });
        let (points, owners): (Vec<u64>, Vec<u32>) = ring.into_iter().unzip();
        Ring {
            points: points.into_boxed_slice(),
            owners: owners.into_boxed_slice(),
        }
    }
}

impl Balancer for HashRing {
    fn pick(&self, set: &BackendSet, ctx: &PickContext<'_>) -> Option<usize> {
        let ring = self.ring.load();
        let len = ring.points.len();
        if len == 0 {
            return None;
        }
        let key = ctx.hash.unwrap_or_else(|| {
            hash_bytes(&(self.keyless.fetch_add(1, Relaxed) as u64).to_le_bytes())
        });
        let start = ring.points.partition_point(|&p| p < key);
        let capacity = self.bounded_load.map(|c| {
            // Everyone may take `c` times the average, counting this request.
            (c * f64::from(ctx.upstream_in_flight + 1) / set.len() as f64).ceil() as u32
        });
        let mut last = u32::MAX;
        for k in 0..len {
            let owner = ring.owners[(start + k) % len];
            if owner == last {
                continue;
            }
            last = owner;
            let i = owner as usize;
            if !ctx.eligible(set, i) {
                continue;
            }
            if let Some(cap) = capacity
                && set[i].state.in_flight.load(Relaxed) >= cap
            {
                continue;
            }
            return Some(i);
        }
        scan_from(set, ctx, 0)
    }

    fn reweigh(&self, set: &BackendSet) {
        self.ring
            .store(Arc::new(Ring::new(set, self.virtual_nodes)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::testing::set;
    use super::*;

    fn owner_of(ring: &HashRing, set: &BackendSet, key: u64) -> String {
        let mut ctx = PickContext::new(1);
        ctx.hash = Some(key);
        set[ring.pick(set, &ctx).unwrap()].addr.to_string()
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let four = set(&[1, 1, 1, 1]);
        let three: Vec<_> = set(&[1, 1, 1, 1])
            .into_iter()
            .filter(|b| b.addr != four[2].addr)
            .collect();
        let r4 = HashRing::new(&four, 160, None, Arc::default());
        let r3 = HashRing::new(&three, 160, None, Arc::default());
        let mut per_backend: HashMap<String, u32> = HashMap::new();
        for k in 0..10_000u64 {
            let key = hash_bytes(&k.to_le_bytes());
            let before = owner_of(&r4, &four, key);
            let after = owner_of(&r3, &three, key);
            *per_backend.entry(before.clone()).or_default() += 1;
            if before != four[2].addr.to_string() {
                assert_eq!(before, after, "key {k} moved although its backend stayed");
            }
        }
        for (addr, n) in per_backend {
            assert!((1800..3200).contains(&n), "{addr} got {n} of 10000 keys");
        }
    }

    #[test]
    fn bounded_load_spills_to_the_next_backend() {
        let backends = set(&[1, 1]);
        let ring = HashRing::new(&backends, 160, Some(1.25), Arc::default());
        let mut ctx = PickContext::new(1);
        ctx.hash = Some(42);
        let home = ring.pick(&backends, &ctx).unwrap();
        backends[home].state.in_flight.store(10, Relaxed);
        ctx.upstream_in_flight = 10;
        assert_ne!(ring.pick(&backends, &ctx), Some(home));
    }
}
