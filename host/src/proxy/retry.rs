//! Retries: idempotent requests without a body, on connect failure, timeout,
//! 502, 503 or 504, to a backend not tried yet, after an exponential backoff
//! with jitter, and only while the upstream's retry budget allows. gRPC
//! calls are retried when the backend did not process them: no connection,
//! a refused stream, or `UNAVAILABLE` in a trailers-only answer (Envoy's
//! `retry_on: unavailable`); their body (up to 64 KiB) is replayed.
//!
//! The budget (as Finagle and linkerd2-proxy do it) caps retries at a percent
//! of recent requests plus a small floor per second, so a sick cluster gets at
//! most that much extra load instead of a retry storm.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use std::sync::Arc;

use http::{Method, Response, StatusCode};

use super::headers::replaced_by_proxy;
use crate::http1::client::Outbound;
use http_body::Body;
use tower::Service;
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::util::rng::HasherRng;

use super::error::ProxyError;
use super::forward::{Attempt, Forwarded, forward, hash_of};
use super::grpc::Replayable;
use super::{Exchange, ProxyBody};
use crate::clock;

const SLOTS: usize = 10;

/// Lock-free sliding-window retry budget over the last 10 seconds. It is
/// kept per upstream across rebuilds and reloads (see `registry.rs`): a
/// fresh budget would hand out its whole floor at once.
#[derive(Debug)]
pub struct RetryBudget {
    /// `budget_percent` as f64 bits; settable when the config changes.
    percent: AtomicU64,
    floor_per_window: AtomicU64,
    slots: [Slot; SLOTS],
}

#[derive(Debug, Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new(percent: f64, min_per_second: u32) -> Self {
        let budget = RetryBudget {
            percent: AtomicU64::new(0),
            floor_per_window: AtomicU64::new(0),
            slots: Default::default(),
        };
        budget.configure(percent, min_per_second);
        budget
    }

    /// Sets the allowance from the config, keeping what was counted.
    pub fn configure(&self, percent: f64, min_per_second: u32) {
        self.percent.store(percent.to_bits(), Relaxed);
        self.floor_per_window
            .store(u64::from(min_per_second) * SLOTS as u64, Relaxed);
    }

    /// Retries spent over the window, for tests and the admin API.
    pub fn spent(&self) -> u64 {
        let now = clock::now_ms() / 1000;
        self.slots
            .iter()
            .filter(|s| now.saturating_sub(s.second.load(Relaxed)) < SLOTS as u64)
            .map(|s| s.retries.load(Relaxed))
            .sum()
    }

    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        if clock::claim_second(&slot.second, second) {
            slot.requests.store(0, Relaxed);
            slot.retries.store(0, Relaxed);
        }
        slot
    }

    /// Counts a request, received at clock time `now_ms`, towards the budget.
    pub fn deposit(&self, now_ms: u64) {
        self.slot(now_ms / 1000).requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget if there is room.
    pub fn withdraw(&self) -> bool {
        let now = clock::now_ms() / 1000;
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            if now.saturating_sub(s.second.load(Relaxed)) < SLOTS as u64 {
                requests += s.requests.load(Relaxed);
                retries += s.retries.load(Relaxed);
            }
        }
        let percent = f64::from_bits(self.percent.load(Relaxed));
        let allowed =
            (requests as f64 * percent / 100.0) as u64 + self.floor_per_window.load(Relaxed);
        if retries >= allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Relaxed);
        true
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

/// The last service of the stack: runs the attempts of a request, each
/// through [`forward`] directly (not through a boxed inner service, which
/// would cost an allocation per attempt).
#[derive(Clone, Copy, Debug, Default)]
pub struct Retry;

impl Service<Exchange> for Retry {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ProxyError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        let upstream = ex.route.upstream.clone();
        upstream
            .learned
            .budget
            .deposit(clock::ns_of(ex.received) / 1_000_000);
        let policy = &upstream.retry;
        let timeout = ex.state.timeouts.backend_response.get();
        let tunnel_idle = ex.state.timeouts.tunnel_idle.get();
        let hash = hash_of(&upstream, &ex.request, &ex.conn);
        let bodiless = ex.request.body().is_end_stream();
        // gRPC calls (all POSTs) are retried whatever the method, but only
        // when the backend did not process them (see below), with their
        // body recorded as it streams.
        let grpc = super::grpc::is_call(ex.request.method(), ex.request.headers());
        let retryable = policy.attempts > 1
            && (grpc
                || bodiless && (policy.retry_non_idempotent || is_idempotent(ex.request.method())));
        let retry_any = policy.retry_non_idempotent;
        let deadline = ex.deadline;
        let (parts, body) = ex.request.into_parts();
        let head = Arc::new(Outbound {
            parts,
            added: ex.added,
            replaced: replaced_by_proxy,
        });
        let attempt = move |upstream, body, tried| Attempt {
            head: head.clone(),
            body,
            upstream,
            tried,
            timeout,
            deadline,
            hash,
            tunnel_idle,
            replay: None,
        };

        if !retryable {
            let body = (!bodiless).then_some(body);
            let fut = forward(attempt(upstream, body, Vec::new()));
            return Box::pin(async move { fut.await.map(|f| f.response) });
        }

        let replay = (!bodiless).then(|| Replayable::new(body));
        Box::pin(async move {
            let attempts = upstream.retry.attempts;
            // Made at the first retry: most requests never need one.
            let mut backoff = None;
            let mut tried: Vec<usize> = Vec::new();
            let mut last: Option<Result<Forwarded, ProxyError>> = None;
            for n in 1..=attempts {
                let (body, reader) = match &replay {
                    None => (None, None),
                    Some(r) => match r.reader() {
                        Some((body, id)) => (Some(body), Some((r.clone(), id))),
                        // More was sent than could be kept.
                        None => break,
                    },
                };
                let mut this = attempt(upstream.clone(), body, tried.clone());
                this.replay = reader;
                let result = forward(this).await;
                let failed_on = match &result {
                    // UNAVAILABLE in the headers: the service never ran.
                    Ok(f) if grpc => super::grpc::unavailable(&f.response).then_some(f.backend),
                    Ok(f) if retryable_status(f.response.status()) => Some(f.backend),
                    Ok(_) | Err(ProxyError::RequestTimeout) => None,
                    Err(e) if grpc && !e.unprocessed() && !retry_any => None,
                    Err(e) => e.backend(),
                };
                let Some(backend) = failed_on else {
                    // Done: a success, the deadline, or no backend left to
                    // try, in which case the previous failure is the answer.
                    let nothing_left = n > 1
                        && matches!(&result, Err(e) if e.backend().is_none() && !matches!(e, ProxyError::RequestTimeout));
                    return match (nothing_left, last) {
                        (true, Some(previous)) => previous.map(|f| f.response),
                        _ => result.map(|f| f.response),
                    };
                };
                last = Some(result);
                if n == attempts {
                    break;
                }
                if !upstream.learned.budget.withdraw() {
                    upstream.metrics.budget_exhausted.increment(1);
                    break;
                }
                upstream.metrics.retries.increment(1);
                tried.push(backend);
                let backoff = backoff.get_or_insert_with(|| {
                    ExponentialBackoffMaker::new(
                        upstream.retry.backoff_base.get(),
                        upstream.retry.backoff_max.get(),
                        1.0,
                        HasherRng::default(),
                    )
                    .map(|mut m| m.make_backoff())
                    .ok()
                });
                if let Some(b) = backoff.as_mut()
                    && tokio::time::timeout_at(deadline.into(), b.next_backoff())
                        .await
                        .is_err()
                {
                    break;
                }
            }
            match last {
                Some(result) => result.map(|f| f.response),
                None => Err(ProxyError::NoHealthyBackend {
                    upstream: upstream.name.clone(),
                    retry_after_secs: 1,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_caps_retries_at_percent_plus_floor() {
        let b = RetryBudget::new(20.0, 0);
        for _ in 0..100 {
            b.deposit(clock::now_ms());
        }
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 20);

        let floor = RetryBudget::new(0.0, 3);
        assert_eq!(
            (0..100).filter(|_| floor.withdraw()).count(),
            30,
            "3/s over a 10 s window"
        );
    }
}
