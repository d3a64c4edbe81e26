//! Admission: a limit on requests in flight through the proxy, set by
//! `[admission] max_concurrency` or moved by an optimizer, with a bounded
//! priority queue in front of it.
//!
//! Under the limit a request passes at once (two atomic operations). At
//! the limit it waits in a heap ordered by class (0–7, from its route's
//! `priority` or the `admission.priority_header`), higher first, and by
//! arrival within a class. Aging keeps low classes from starving: a
//! request gains one class per `admission.aging` waited. Since every
//! waiter ages at the same rate, the order by `class + waited / aging` is
//! the order by the fixed key `class × aging − arrival`, so the heap never
//! needs re-sorting. A place freed by a finishing request goes straight to
//! the top waiter; newcomers do not overtake a non-empty queue. A request
//! that waits longer than `queue_timeout` gets 503 with `Retry-After`; so
//! does one that finds the queue full, unless it outranks the lowest
//! waiter, which it then displaces (that one gets the 503).
//!
//! A request counts from admission until its response headers are sent on
//! (streaming bodies are not held against the limit). Cache hits are
//! answered above this layer and never queue. The queue lives in the
//! registry, so a reload keeps its waiters and its counts.

use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::Response;
use metrics::{Counter, Gauge, Histogram};
use tokio::sync::oneshot;
use tower::Service;

use super::error::ProxyError;
use super::{Exchange, ProxyBody};
use crate::telemetry::windows::Totals;
use crate::telemetry::{QueueClass, QueueStats, Series};

/// Priority classes: 0 (lowest) to 7.
pub const CLASSES: usize = 8;

/// Seconds of recent waits kept per class for the snapshot: the queue's
/// window is the current window, at most 15 s.
const RECENT_SECONDS: usize = 16;
const RECENT_MAX_MS: u32 = 15_000;

/// The queue's settings (`[admission]`), replaced on reload.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueSettings {
    /// Waiters at most; 0 turns the queue off (503 at the limit).
    pub size: u32,
    pub timeout: Duration,
    /// Waiting this long is worth one class; zero is strict priority.
    pub aging: Duration,
    /// A request header whose value (0–7) sets the class.
    pub header: Option<http::HeaderName>,
}

impl QueueSettings {
    pub fn from_config(a: &crate::config::AdmissionSection) -> QueueSettings {
        QueueSettings {
            size: a.queue_size,
            timeout: a.queue_timeout.get(),
            aging: a.aging.get(),
            header: a
                .priority_header
                .as_deref()
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
        }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            size: 1024,
            timeout: Duration::from_secs(1),
            aging: Duration::from_millis(100),
            header: None,
        }
    }
}

/// Per-class queue figures (`/metrics` and `/admin/snapshot`).
struct ClassFigures {
    depth: AtomicU32,
    timeouts: AtomicU64,
    admitted: AtomicU64,
    depth_gauge: Gauge,
    wait: Histogram,
    timeouts_counter: Counter,
    /// Recent waits, for the snapshot (timeouts count as failures).
    recent: Series,
}

impl ClassFigures {
    fn new(class: usize) -> ClassFigures {
        let class = class.to_string();
        ClassFigures {
            depth: AtomicU32::new(0),
            timeouts: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            depth_gauge: metrics::gauge!("switchyard_admission_queue_depth", "class" => class.clone()),
            wait: metrics::histogram!("switchyard_admission_queue_wait_seconds", "class" => class.clone()),
            timeouts_counter: metrics::counter!("switchyard_admission_queue_timeouts_total", "class" => class),
            recent: Series::new(RECENT_SECONDS),
        }
    }

    /// A wait that ended: let in, or timed out.
    fn waited(&self, waited: Duration, timed_out: bool) {
        self.wait.record(waited.as_secs_f64());
        self.recent.record(
            crate::clock::now_ms(),
            Some(waited.as_micros() as u64),
            timed_out,
        );
        if timed_out {
            self.timeouts.fetch_add(1, Relaxed);
            self.timeouts_counter.increment(1);
        }
    }

    fn queued(&self, delta: i32) {
        let now = if delta > 0 {
            self.depth.fetch_add(1, Relaxed) + 1
        } else {
            self.depth.fetch_sub(1, Relaxed).saturating_sub(1)
        };
        self.depth_gauge.set(f64::from(now));
    }
}

/// One class's queue state, as the admin API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClassView {
    pub class: u8,
    pub depth: u32,
    pub admitted_after_wait: u64,
    pub timeouts: u64,
}

struct Waiter {
    key: i128,
    seq: u64,
    class: u8,
    tx: oneshot::Sender<Admitted>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// The greater is served first: higher key, then the earlier arrival.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

pub struct Admission {
    limit: AtomicU32,
    in_flight: AtomicU32,
    /// Waiters in the heap (read without the lock on the fast path).
    queued: AtomicU32,
    heap: Mutex<BinaryHeap<Waiter>>,
    seq: AtomicU64,
    settings: ArcSwap<QueueSettings>,
    /// Arrival times are measured from here.
    epoch: Instant,
    classes: [ClassFigures; CLASSES],
    rejections: Counter,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            limit: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            heap: Mutex::new(BinaryHeap::new()),
            seq: AtomicU64::new(0),
            settings: ArcSwap::from_pointee(QueueSettings::default()),
            epoch: Instant::now(),
            classes: std::array::from_fn(ClassFigures::new),
            rejections: metrics::counter!("switchyard_admission_rejections_total"),
        }
    }
}

/// How a request gets in.
enum Entry {
    Now(Admitted),
    Wait(oneshot::Receiver<Admitted>, Duration),
    Refused,
}

impl Admission {
    /// The limit in force; 0 is none.
    pub fn limit(&self) -> u32 {
        self.limit.load(Relaxed)
    }

    /// Sets the limit; waiters that now fit are let in.
    pub fn set_limit(self: &Arc<Self>, limit: u32) {
        self.limit.store(limit, SeqCst);
        self.drain();
    }

    pub fn set_queue(&self, settings: QueueSettings) {
        if **self.settings.load() != settings {
            self.settings.store(Arc::new(settings));
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    pub fn queued(&self) -> u32 {
        self.queued.load(Relaxed)
    }

    pub fn classes(&self) -> Vec<ClassView> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassView {
                class: i as u8,
                depth: c.depth.load(Relaxed),
                admitted_after_wait: c.admitted.load(Relaxed),
                timeouts: c.timeouts.load(Relaxed),
            })
            .collect()
    }

    /// The queue as plugins see it: depths now, waits over the last
    /// `window_ms` (at most 15 s).
    pub fn queue_stats(&self, now_ms: u64, window_ms: u32) -> QueueStats {
        let window_ms = window_ms.clamp(1000, RECENT_MAX_MS);
        let now_s = now_ms / 1000;
        let span = u64::from(window_ms).div_ceil(1000);
        let from = now_s + 1 - span.min(now_s + 1);
        let mut all = Totals::default();
        let mut classes = Vec::new();
        for (priority, figures) in self.classes.iter().enumerate().rev() {
            let totals = figures.recent.totals(from, now_s + 1);
            let depth = figures.depth.load(Relaxed);
            if depth == 0 && totals.requests == 0 {
                continue;
            }
            let waits = totals.stats(window_ms, u64::from(window_ms));
            classes.push(QueueClass {
                priority: priority as u8,
                depth,
                admitted: totals.requests - totals.errors,
                timeouts: totals.errors,
                wait_p50_us: waits.p50_us,
                wait_p99_us: waits.p99_us,
            });
            all.add(&totals);
        }
        let waits = all.stats(window_ms, u64::from(window_ms));
        QueueStats {
            depth: self.queued(),
            capacity: self.settings.load().size,
            window_ms,
            admitted: all.requests - all.errors,
            timeouts: all.errors,
            wait_mean_us: waits.mean_us,
            wait_p50_us: waits.p50_us,
            wait_p99_us: waits.p99_us,
            classes,
        }
    }

    /// One more in flight, if that stays within the limit.
    fn take_place(self: &Arc<Self>) -> Option<Admitted> {
        let mut n = self.in_flight.load(SeqCst);
        loop {
            let limit = self.limit.load(SeqCst);
            if limit > 0 && n >= limit {
                return None;
            }
            match self
                .in_flight
                .compare_exchange_weak(n, n + 1, SeqCst, SeqCst)
            {
                Ok(_) => return Some(Admitted(Some(self.clone()))),
                Err(now) => n = now,
            }
        }
    }

    fn enter(self: &Arc<Self>, class: u8) -> Entry {
        // The fast path: nobody waiting and room under the limit.
        if self.queued.load(SeqCst) == 0
            && let Some(place) = self.take_place()
        {
            return Entry::Now(place);
        }
        let settings = self.settings.load();
        if settings.size == 0 {
            self.rejections.increment(1);
            return Entry::Refused;
        }
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        // Counted before the second look, so that a request finishing
        // meanwhile either leaves room for that look or sees a waiter.
        self.queued.fetch_add(1, SeqCst);
        if heap.is_empty()
            && let Some(place) = self.take_place()
        {
            self.queued.fetch_sub(1, SeqCst);
            return Entry::Now(place);
        }
        if heap.len() >= settings.size as usize {
            // Waiters that gave up still hold their slots: clear them out.
            let before = heap.len();
            heap.retain(|w| !w.tx.is_closed());
            for _ in heap.len()..before {
                self.queued.fetch_sub(1, SeqCst);
            }
            self.recount(&heap);
        }
        let arrival = self.epoch.elapsed().as_nanos() as i128;
        let weight = match settings.aging.as_nanos() as i128 {
            // No aging: a class outranks any wait.
            0 => 1 << 100,
            aging => aging,
        };
        let key = i128::from(class) * weight - arrival;
        if heap.len() >= settings.size as usize {
            // Full: the newcomer takes the place of the waiter it outranks
            // most (the lowest, which is then refused), or is refused.
            let lowest = heap.iter().min().map(|w| w.key);
            if lowest.is_none_or(|low| low >= key) {
                self.queued.fetch_sub(1, SeqCst);
                self.rejections.increment(1);
                return Entry::Refused;
            }
            let mut waiters = std::mem::take(&mut *heap).into_vec();
            if let Some(i) = waiters
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.cmp(b.1))
                .map(|(i, _)| i)
            {
                // Dropping its sender tells the waiter it was displaced.
                let displaced = waiters.swap_remove(i);
                self.classes[usize::from(displaced.class)].queued(-1);
                self.queued.fetch_sub(1, SeqCst);
                self.rejections.increment(1);
            }
            *heap = BinaryHeap::from(waiters);
        }
        let (tx, rx) = oneshot::channel();
        heap.push(Waiter {
            key,
            seq: self.seq.fetch_add(1, Relaxed),
            class,
            tx,
        });
        self.classes[usize::from(class)].queued(1);
        Entry::Wait(rx, settings.timeout)
    }

    /// Per-class depths from the heap itself (after clearing it out).
    fn recount(&self, heap: &BinaryHeap<Waiter>) {
        let mut depth = [0u32; CLASSES];
        for w in heap.iter() {
            depth[usize::from(w.class)] += 1;
        }
        for (c, d) in self.classes.iter().zip(depth) {
            c.depth.store(d, Relaxed);
            c.depth_gauge.set(f64::from(d));
        }
    }

    /// Hands free places to the top waiters.
    fn drain(self: &Arc<Self>) {
        if self.queued.load(SeqCst) == 0 {
            return;
        }
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        while !heap.is_empty() {
            let Some(place) = self.take_place() else {
                return;
            };
            let Some(waiter) = heap.pop() else {
                return;
            };
            self.queued.fetch_sub(1, SeqCst);
            let figures = &self.classes[usize::from(waiter.class)];
            figures.queued(-1);
            match waiter.tx.send(place) {
                Ok(()) => {
                    figures.admitted.fetch_add(1, Relaxed);
                }
                // It gave up (timed out, or the client left): the place
                // goes back without waking anyone, and the next one gets
                // it on the next turn of the loop.
                Err(place) => place.give_back(),
            }
        }
    }

    /// The class of a request: the header's value when configured and
    /// valid, else the route's.
    fn class_of(&self, ex: &Exchange) -> u8 {
        let route = ex.route.priority;
        let settings = self.settings.load();
        let Some(name) = &settings.header else {
            return route;
        };
        ex.request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u8>().ok())
            .filter(|&c| usize::from(c) < CLASSES)
            .unwrap_or(route)
    }
}

/// How long a response's request waited in the queue, carried in the
/// response's extensions: the sliding windows that optimizers and alert
/// rules read record latency without it, so a queue that fills because
/// the limit is low never reads as a slower backend (which would lower
/// the limit further).
#[derive(Clone, Copy, Debug)]
pub struct QueueWait(pub Duration);

/// Holds one place under the limit.
pub struct Admitted(Option<Arc<Admission>>);

impl Admitted {
    /// Frees the place without handing it on (the caller is the one
    /// handing places on).
    fn give_back(mut self) {
        if let Some(a) = self.0.take() {
            a.in_flight.fetch_sub(1, SeqCst);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.in_flight.fetch_sub(1, SeqCst);
            a.drain();
        }
    }
}

crate::proxy::layer!(AdmissionLayer, Admit);

pin_project_lite::pin_project! {
    /// The inner future, holding the request's place until it completes.
    pub struct WhileAdmitted<F> {
        #[pin]
        inner: F,
        place: Admitted,
    }
}

impl<F: Future> Future for WhileAdmitted<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

type Result<T> = std::result::Result<T, ProxyError>;

impl<S> Service<Exchange> for Admit<S>
where
    S: crate::proxy::Downstream,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<
        Either<Ready<Result<Response<ProxyBody>>>, WhileAdmitted<S::Future>>,
        BoxFuture<'static, Result<Response<ProxyBody>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        let admission = ex.state.admission.clone();
        let class = admission.class_of(&ex);
        match admission.enter(class) {
            Entry::Now(place) => Either::Left(Either::Right(WhileAdmitted {
                inner: self.inner.call(ex),
                place,
            })),
            Entry::Refused => Either::Left(Either::Left(ready(Err(ProxyError::Overloaded)))),
            Entry::Wait(rx, timeout) => {
                let mut inner = self.inner.clone();
                Either::Right(Box::pin(async move {
                    let start = Instant::now();
                    let figures = &admission.classes[usize::from(class)];
                    match tokio::time::timeout(timeout, rx).await {
                        Ok(Ok(place)) => {
                            let waited = start.elapsed();
                            figures.waited(waited, false);
                            let mut response = WhileAdmitted {
                                inner: inner.call(ex),
                                place,
                            }
                            .await?;
                            response.extensions_mut().insert(QueueWait(waited));
                            Ok(response)
                        }
                        // Displaced from a full queue by a higher class.
                        Ok(Err(_)) => {
                            figures.wait.record(start.elapsed().as_secs_f64());
                            Err(ProxyError::Overloaded)
                        }
                        Err(_) => {
                            figures.waited(start.elapsed(), true);
                            Err(ProxyError::QueueTimeout { waited: timeout })
                        }
                    }
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(limit: u32, aging: Duration) -> Arc<Admission> {
        let a = Arc::new(Admission::default());
        a.set_queue(QueueSettings {
            size: 16,
            timeout: Duration::from_secs(60),
            aging,
            header: None,
        });
        a.set_limit(limit);
        a
    }

    fn waiting(e: Entry) -> oneshot::Receiver<Admitted> {
        match e {
            Entry::Wait(rx, _) => rx,
            _ => panic!("expected to wait"),
        }
    }

    #[test]
    fn a_freed_place_goes_to_the_highest_class_then_the_earliest() {
        let a = admission(1, Duration::ZERO);
        let Entry::Now(first) = a.enter(0) else {
            panic!("room for one")
        };
        let mut low = waiting(a.enter(1));
        let mut high = waiting(a.enter(6));
        let mut high2 = waiting(a.enter(6));
        assert_eq!(a.queued(), 3);
        drop(first);
        let place = high.try_recv().expect("the high class goes first");
        assert!(high2.try_recv().is_err() && low.try_recv().is_err());
        drop(place);
        let place = high2.try_recv().expect("then the next of its class");
        drop(place);
        let _place = low.try_recv().expect("then the low class");
        assert_eq!(a.queued(), 0);
        assert_eq!(a.in_flight(), 1);
    }

    #[test]
    fn aging_lets_an_old_low_request_pass_a_new_high_one() {
        let a = admission(1, Duration::from_millis(1));
        let Entry::Now(first) = a.enter(0) else {
            panic!("room for one")
        };
        let mut old_low = waiting(a.enter(0));
        // Seven classes' worth of waiting, and some.
        std::thread::sleep(Duration::from_millis(20));
        let mut new_high = waiting(a.enter(7));
        drop(first);
        let _place = old_low.try_recv().expect("aged past the high class");
        assert!(new_high.try_recv().is_err());
    }

    #[test]
    fn newcomers_do_not_overtake_waiters_and_gave_up_waiters_are_skipped() {
        let a = admission(1, Duration::ZERO);
        let Entry::Now(first) = a.enter(3) else {
            panic!("room for one")
        };
        let gave_up = waiting(a.enter(7));
        let mut waiter = waiting(a.enter(3));
        drop(gave_up);
        drop(first);
        let _place = waiter
            .try_recv()
            .expect("the place skips the one that left");
        assert_eq!(a.in_flight(), 1);
        // Raising the limit lets the queue in at once.
        let mut next = waiting(a.enter(0));
        a.set_limit(2);
        let _second = next.try_recv().expect("room for a second");
        assert_eq!(a.in_flight(), 2);
    }

    #[test]
    fn a_full_queue_refuses_or_displaces_its_lowest_waiter() {
        let a = admission(1, Duration::ZERO);
        let Entry::Now(_first) = a.enter(0) else {
            panic!("room for one")
        };
        let mut waiters: Vec<_> = (0..16).map(|_| waiting(a.enter(3))).collect();
        // No higher than those waiting: refused.
        assert!(matches!(a.enter(3), Entry::Refused));
        assert!(matches!(a.enter(1), Entry::Refused));
        // Higher: it takes the place of the latest of the lowest class.
        let _high = waiting(a.enter(7));
        assert_eq!(a.queued(), 16);
        let last = waiters.pop().expect("a waiter");
        assert!(last.blocking_recv().is_err(), "displaced");
        for w in &mut waiters {
            assert!(matches!(
                w.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ));
        }
        drop(waiters);
        // Those that left make room again.
        assert!(matches!(a.enter(0), Entry::Wait(..)));
    }
}
