//! The in-memory tier: stored responses by primary key (a key holds one
//! entry per `Vary` variant), bounded by bytes with a weigher, plus the
//! bookkeeping for request collapsing and background refreshes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use http_cache_semantics::CachePolicy;
use serde::Serialize;
use tokio::sync::watch;

use super::directives::stale_allowances;
use super::l2::L2;
use crate::config::{CacheEviction, CacheSection};

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub policy: CachePolicy,
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `Surrogate-Key` tags, for purging.
    pub tags: Vec<String>,
    /// Until when it is fresh, as of storing (or the last revalidation).
    pub fresh_until: SystemTime,
    /// `stale-while-revalidate` and `stale-if-error` of the response.
    pub swr: Duration,
    pub sie: Duration,
    /// The request headers the response's `Vary` names, with the values the
    /// request that fetched it had.
    pub vary: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    /// The method of the request that fetched it (GET or HEAD).
    pub method: http::Method,
    /// The policy decided by a view of the headers (a targeted field in
    /// place of `Cache-Control`, directive names lower-cased): served
    /// responses get `headers`' own `Cache-Control` and `Expires` back.
    pub rewritten: bool,
    /// Targeted cache-control fields it carries: for this cache, left out
    /// of what is served.
    pub strip: Box<[http::HeaderName]>,
}

/// What an entry is made of; the rest is derived from it.
pub struct Parts {
    pub key: String,
    pub policy: CachePolicy,
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub vary: Vec<(http::HeaderName, Option<http::HeaderValue>)>,
    pub method: http::Method,
    /// The headers the policy was built from, when not `headers`.
    pub view: Option<HeaderMap>,
    pub strip: Box<[http::HeaderName]>,
}

impl Entry {
    /// An entry as of now: freshness from the policy, stale allowances from
    /// `Cache-Control`, tags from `Surrogate-Key`.
    pub fn new(p: Parts) -> Entry {
        let now = SystemTime::now();
        let (swr, sie) = stale_allowances(p.view.as_ref().unwrap_or(&p.headers));
        let tags = p
            .headers
            .get_all("surrogate-key")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(str::split_whitespace)
            .map(str::to_string)
            .collect();
        Entry {
            fresh_until: now + p.policy.time_to_live(now),
            key: p.key,
            policy: p.policy,
            status: p.status,
            version: p.version,
            headers: p.headers,
            body: p.body,
            tags,
            swr,
            sie,
            vary: p.vary,
            method: p.method,
            rewritten: p.view.is_some(),
            strip: p.strip,
        }
    }

    /// Bytes the entry costs the store.
    pub fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + headers + self.key.len() + 512).min(u32::MAX as usize) as u32
    }

    /// Whether `req` may take this entry without consulting the policy: a
    /// plain GET or HEAD (no `Cache-Control`, `Pragma` or `Authorization`)
    /// whose `Vary`-named headers match, for an entry still fresh. Anything
    /// else goes through the full RFC 9111 check.
    pub fn plainly_fresh(&self, req: &http::Request<impl Sized>, now: SystemTime) -> bool {
        let h = req.headers();
        now < self.fresh_until
            && (req.method() == self.method || *req.method() == http::Method::HEAD)
            && !h.contains_key(http::header::CACHE_CONTROL)
            && !h.contains_key(http::header::PRAGMA)
            && !h.contains_key(http::header::AUTHORIZATION)
            && self.vary.iter().all(|(n, v)| h.get(n) == v.as_ref())
    }

    /// How long past its freshness it is at `now` (zero while fresh).
    pub fn stale_by(&self, now: SystemTime) -> Duration {
        now.duration_since(self.fresh_until).unwrap_or_default()
    }
}

/// The variants stored under one primary key.
pub type Variants = Arc<Vec<Arc<Entry>>>;

/// Counters shown in `/admin/cache` (the same figures go to `/metrics`).
#[derive(Default, Debug, Serialize)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale_served: AtomicU64,
    pub revalidations: AtomicU64,
    pub collapsed: AtomicU64,
    pub stores: AtomicU64,
    pub evictions: AtomicU64,
    pub purged: AtomicU64,
}

/// What a collapsed request waits for: the leader's stored entry, or `None`
/// when the response was not stored.
pub type Flight = watch::Receiver<Option<Option<Arc<Entry>>>>;

pub struct CacheStore {
    /// Swapped whole by [`CacheStore::resize`]: moka fixes a cache's bound
    /// when it is built.
    mem: ArcSwap<Mem>,
    inflight: Mutex<HashMap<String, Flight>>,
    refreshing: Mutex<HashSet<String>>,
    pub counters: Arc<CacheCounters>,
    /// The bound in force: `cache.capacity`, or what an optimizer set.
    capacity: AtomicU64,
    eviction: CacheEviction,
    /// The shared Redis tier, when `cache.redis_url` is set.
    pub l2: Option<Arc<L2>>,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("entries", &self.mem.load().entry_count())
            .field("bytes", &self.mem.load().weighted_size())
            .finish()
    }
}

type Mem = moka::sync::Cache<String, Variants>;

/// What a key's variants count against the bound.
fn weight(v: &Variants) -> u32 {
    v.iter().map(|e| e.weight()).fold(0u32, u32::saturating_add)
}

/// An empty in-memory tier bounded to `capacity` bytes.
fn memory(capacity: u64, eviction: CacheEviction, counters: &Arc<CacheCounters>) -> Mem {
    let evicted = counters.clone();
    let policy = match eviction {
        CacheEviction::Tinylfu => moka::policy::EvictionPolicy::tiny_lfu(),
        CacheEviction::Lru => moka::policy::EvictionPolicy::lru(),
    };
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .eviction_policy(policy)
        .weigher(|_k: &String, v: &Variants| weight(v))
        .eviction_listener(move |_k, _v, cause| {
            if cause == moka::notification::RemovalCause::Size {
                evicted.evictions.fetch_add(1, Relaxed);
                metrics::counter!("switchyard_cache_evictions_total").increment(1);
            }
        })
        .build()
}

impl CacheStore {
    pub fn new(section: &CacheSection) -> CacheStore {
        let counters = Arc::new(CacheCounters::default());
        let mem = memory(section.capacity.0, section.eviction, &counters);
        CacheStore {
            mem: ArcSwap::from_pointee(mem),
            inflight: Mutex::default(),
            refreshing: Mutex::default(),
            counters,
            capacity: AtomicU64::new(section.capacity.0),
            eviction: section.eviction,
            l2: section.redis_url.as_deref().map(L2::new),
        }
    }

    /// Sets the byte bound while traffic flows, keeping entries as far as
    /// the new bound allows: those that stay fresh longest go first into the
    /// resized tier, and what no longer fits is evicted (and counted as
    /// evictions).
    /// A request racing the swap may store into the old tier and be lost,
    /// which costs one miss. Returns whether the bound changed.
    pub fn resize(&self, capacity: u64) -> bool {
        if self.capacity.swap(capacity, Relaxed) == capacity {
            return false;
        }
        let old = self.mem.load_full();
        let mut kept: Vec<(Arc<String>, Variants)> = old.iter().collect();
        kept.sort_by_key(|(_, v)| std::cmp::Reverse(v.iter().map(|e| e.fresh_until).max()));
        let fresh = memory(capacity, self.eviction, &self.counters);
        let mut room = capacity;
        for (k, v) in kept {
            let weight = u64::from(weight(&v));
            if weight > room {
                self.counters.evictions.fetch_add(1, Relaxed);
                metrics::counter!("switchyard_cache_evictions_total").increment(1);
                continue;
            }
            room -= weight;
            fresh.insert((*k).clone(), v);
        }
        fresh.run_pending_tasks();
        self.mem.store(Arc::new(fresh));
        true
    }

    /// Whether this store was built for `section`'s policy and shared tier
    /// (a new capacity is applied with [`CacheStore::resize`]).
    pub fn fits(&self, section: &CacheSection) -> bool {
        self.eviction == section.eviction
            && self.l2.as_ref().map(|l| l.url()) == section.redis_url.as_deref()
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Relaxed)
    }

    pub fn get(&self, key: &str) -> Option<Variants> {
        self.mem.load().get(key)
    }

    /// Stores `entry`, replacing the variant its request matched (same
    /// `Vary`-selected headers) if there was one.
    pub fn put(&self, entry: Arc<Entry>, replaces: Option<&Arc<Entry>>) {
        if let Some(l2) = self.l2.clone() {
            let written = entry.clone();
            tokio::spawn(async move { l2.put(&written).await });
        }
        self.put_local(entry, replaces);
    }

    /// Stores `entry` in memory only (it came from the shared tier).
    pub fn put_local(&self, entry: Arc<Entry>, replaces: Option<&Arc<Entry>>) {
        let key = entry.key.clone();
        let mut variants: Vec<Arc<Entry>> = self
            .mem
            .load()
            .get(&key)
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default();
        if let Some(old) = replaces {
            variants.retain(|e| !Arc::ptr_eq(e, old));
        }
        variants.retain(|e| e.policy.is_storable() && !same_variant(e, &entry));
        variants.push(entry);
        // A handful of variants per key at most; the oldest go first.
        while variants.len() > 8 {
            variants.remove(0);
        }
        self.mem.load().insert(key, Arc::new(variants));
        self.counters.stores.fetch_add(1, Relaxed);
        metrics::counter!("switchyard_cache_stores_total").increment(1);
    }

    /// Removes everything under `key`; whether there was anything.
    pub fn purge_key(&self, key: &str) -> bool {
        if let Some(l2) = self.l2.clone() {
            let key = vec![key.to_string()];
            tokio::spawn(async move { l2.delete(&key).await });
        }
        let removed = self.mem.load().remove(key).is_some();
        if removed {
            self.counted_purges(1);
        }
        removed
    }

    /// Removes every key that starts with `prefix`; how many.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        if let Some(l2) = self.l2.clone() {
            let prefix = prefix.to_string();
            tokio::spawn(async move { l2.delete_prefix(&prefix).await });
        }
        self.purge_where(|k, _| k.starts_with(prefix))
    }

    /// Removes every key with a variant tagged `tag`; how many.
    pub fn purge_tag(&self, tag: &str) -> u64 {
        if let Some(l2) = self.l2.clone() {
            let tag = tag.to_string();
            tokio::spawn(async move { l2.delete_tag(&tag).await });
        }
        self.purge_where(|_, v| v.iter().any(|e| e.tags.iter().any(|t| t == tag)))
    }

    fn purge_where(&self, doomed: impl Fn(&str, &Variants) -> bool) -> u64 {
        let mem = self.mem.load();
        let keys: Vec<String> = mem
            .iter()
            .filter(|(k, v)| doomed(k, v))
            .map(|(k, _)| (*k).clone())
            .collect();
        for k in &keys {
            mem.invalidate(k);
        }
        self.counted_purges(keys.len() as u64);
        keys.len() as u64
    }

    fn counted_purges(&self, n: u64) {
        self.counters.purged.fetch_add(n, Relaxed);
        metrics::counter!("switchyard_cache_purges_total").increment(n);
    }

    pub fn entries(&self) -> u64 {
        let mem = self.mem.load();
        mem.run_pending_tasks();
        mem.entry_count()
    }

    pub fn bytes(&self) -> u64 {
        let mem = self.mem.load();
        mem.run_pending_tasks();
        mem.weighted_size()
    }

    /// Joins the request already fetching `key`, or makes this one the
    /// leader (`Err` with the sender to publish the outcome on).
    pub fn join_flight(&self, key: &str) -> Result<Flight, FlightLeader<'_>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = inflight.get(key) {
            return Ok(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.to_string(), rx);
        Err(FlightLeader {
            store: self,
            key: key.to_string(),
            tx: Some(tx),
        })
    }

    /// The shared tier's entry for `key`, on a local miss.
    pub async fn l2_get(&self, key: &str) -> Option<Arc<Entry>> {
        self.l2.as_ref()?.get(key).await.map(Arc::new)
    }

    /// Claims the one background refresh of `key`; false when one runs.
    pub fn start_refresh(&self, key: &str) -> bool {
        self.refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string())
    }

    pub fn end_refresh(&self, key: &str) {
        self.refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Whether two entries answer the same `Vary`-selected request headers
/// with the same method: a bodiless HEAD answer never displaces a GET's.
fn same_variant(a: &Entry, b: &Entry) -> bool {
    a.vary == b.vary && a.method == b.method
}

/// The request fetching a key for everyone waiting on it. Dropping it
/// without publishing tells the waiters to fetch for themselves.
pub struct FlightLeader<'a> {
    store: &'a CacheStore,
    key: String,
    tx: Option<watch::Sender<Option<Option<Arc<Entry>>>>>,
}

impl FlightLeader<'_> {
    pub fn publish(mut self, entry: Option<Arc<Entry>>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(entry));
        }
    }
}

impl Drop for FlightLeader<'_> {
    fn drop(&mut self) {
        self.store
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    /// A 100 KB entry at `key`, fresh for `max_age` seconds.
    fn entry(key: &str, max_age: u32) -> Arc<Entry> {
        let req = http::Request::get(format!("http://site{key}"))
            .body(())
            .expect("request");
        let resp = http::Response::builder()
            .header("cache-control", format!("max-age={max_age}"))
            .body(())
            .expect("response");
        let policy = CachePolicy::new(&req, &resp);
        Arc::new(Entry::new(Parts {
            key: key.to_string(),
            policy,
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers: resp.headers().clone(),
            body: Bytes::from(vec![b'x'; 100_000]),
            vary: Vec::new(),
            method: http::Method::GET,
            view: None,
            strip: Box::new([]),
        }))
    }

    #[test]
    fn a_resize_keeps_what_fits_longest_fresh_first_and_a_grown_store_keeps_all() {
        let store = CacheStore::new(&CacheSection {
            capacity: ByteSize(2 << 20),
            eviction: CacheEviction::Lru,
            ..CacheSection::default()
        });
        for i in 0..10u32 {
            store.put_local(entry(&format!("/k{i}"), 60 * (i + 1)), None);
        }
        assert_eq!(store.entries(), 10);
        assert!(store.resize(4 << 20), "a new bound is applied");
        assert!(!store.resize(4 << 20), "the same bound is no change");
        assert_eq!(store.capacity(), 4 << 20);
        assert_eq!(store.entries(), 10, "growing keeps every entry");

        let evicted = store.counters.evictions.load(Relaxed);
        assert!(store.resize(350_000));
        assert_eq!(store.capacity(), 350_000);
        let kept: Vec<bool> = (0..10)
            .map(|i| store.get(&format!("/k{i}")).is_some())
            .collect();
        assert_eq!(
            kept,
            [
                false, false, false, false, false, false, false, true, true, true
            ],
            "the three that stay fresh longest fit"
        );
        assert!(store.bytes() <= 350_000, "{}", store.bytes());
        assert_eq!(store.counters.evictions.load(Relaxed) - evicted, 7);

        store.put_local(entry("/new", 60), None);
        assert!(
            store.get("/new").is_some(),
            "the resized store takes new entries"
        );
        assert!(store.bytes() <= 350_000, "{}", store.bytes());
    }
}
