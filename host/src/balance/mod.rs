//! Load balancing: one [`Balancer`] trait, five strategies, and the set of
//! backends they pick from. What the strategies learn (backend state, the
//! rotation) is kept across reloads by the proxy's registry.
//!
//! A pick never blocks and takes no lock: strategies read atomics of the
//! backends and, where they keep state (a rotation counter), an atomic of
//! their own. Which backends may be picked is decided by [`PickContext`]:
//! healthy, not ejected, under the circuit-breaker limit, and not already
//! tried by this request.

mod backend;
mod hash;
mod least;
mod round_robin;
mod weighted;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

pub use backend::{
    Backend, BackendState, BackendView, DEFAULT_RTT, EWMA_DECAY, HealthChange, PeakEwma,
};
pub use hash::{HashRing, hash_bytes};
pub use least::{LeastConnections, LeastResponseTime};
pub use round_robin::RoundRobin;
pub use weighted::Weighted;

use crate::config::{Strategy, UpstreamSection};

/// Above this many backends, least-* strategies compare two random backends
/// (power of two choices) instead of scanning all, unless configured.
pub const P2C_THRESHOLD: usize = 16;

/// The backends of one upstream, in config order.
pub type BackendSet = [Backend];

/// Which backends a pick may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eligibility {
    /// Healthy, not ejected, under the breaker limit.
    Available,
    /// Panic mode: health and ejection are ignored, the breaker still holds.
    Any,
}

/// Per-pick inputs.
#[derive(Clone, Copy, Debug)]
pub struct PickContext<'a> {
    pub now_ms: u64,
    pub now_ns: u64,
    /// Hash of the request's key, for the `hash` strategy.
    pub hash: Option<u64>,
    /// Indices already tried by this request (retries go elsewhere).
    pub tried: &'a [usize],
    pub eligibility: Eligibility,
    /// In-flight requests over the whole upstream (bounded-load hashing).
    pub upstream_in_flight: u32,
}

impl<'a> PickContext<'a> {
    pub fn new(now_ns: u64) -> Self {
        PickContext {
            now_ms: now_ns / 1_000_000,
            now_ns,
            hash: None,
            tried: &[],
            eligibility: Eligibility::Available,
            upstream_in_flight: 0,
        }
    }

    #[inline]
    pub fn eligible(&self, set: &BackendSet, i: usize) -> bool {
        let b = &set[i];
        let ok = match self.eligibility {
            Eligibility::Available => b.is_available(self.now_ms),
            Eligibility::Any => b.under_limit(),
        };
        ok && !self.tried.contains(&i)
    }
}

/// A load-balancing strategy. Returns the index of the chosen backend in
/// `set`, or `None` when no backend is eligible.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    fn pick(&self, set: &BackendSet, ctx: &PickContext<'_>) -> Option<usize>;

    /// A backend's weight changed: strategies that precompute from weights
    /// redo it. Nothing else about the upstream is rebuilt.
    fn reweigh(&self, _set: &BackendSet) {}
}

/// Builds the balancer an upstream's config asks for. `rotation` is the
/// upstream's position (round robin's turn, tie-breaking offsets), kept by
/// the registry so a rebuild does not send the next request to the first
/// backend again.
pub fn build(
    section: &UpstreamSection,
    set: &BackendSet,
    rotation: Arc<AtomicUsize>,
) -> Arc<dyn Balancer> {
    let p2c = section
        .power_of_two_choices
        .unwrap_or(set.len() > P2C_THRESHOLD);
    match section.strategy {
        Strategy::RoundRobin => Arc::new(RoundRobin::new(rotation)),
        Strategy::Weighted => Arc::new(Weighted::new(set, rotation)),
        Strategy::LeastConnections => Arc::new(LeastConnections::new(p2c, rotation)),
        Strategy::LeastResponseTime => Arc::new(LeastResponseTime::new(p2c, rotation)),
        Strategy::Hash => {
            let (vnodes, bound) = section
                .hash
                .as_ref()
                .map_or((160, None), |h| (h.virtual_nodes, h.bounded_load));
            Arc::new(HashRing::new(set, vnodes, bound, rotation))
        }
    }
}

/// Any eligible backend, scanning from `start`; the fallback every strategy
/// uses when its fast path finds nothing.
#[inline]
fn scan_from(set: &BackendSet, ctx: &PickContext<'_>, start: usize) -> Option<usize> {
    let n = set.len();
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| ctx.eligible(set, i))
}

#[cfg(test)]
pub(crate) mod testing {
    //! Backend sets without a config, for unit tests.
    use super::*;

    pub fn set(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = format!("10.0.{}.{}:80", i / 250, i % 250 + 1);
                Backend::detached(addr.parse().expect("valid test address"), w)
            })
            .collect()
    }
}
