//! Admission: a limit on requests in flight through the proxy, set by
//! `[admission] max_concurrency` or moved by an optimizer. Requests over the
//! limit get 503 with `Retry-After` at once, before a backend sees them.
//!
//! A request counts from admission until its response headers are sent on
//! (streaming bodies are not held against the limit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::Response;
use metrics::Counter;
use tower::{Layer, Service};

use super::error::ProxyError;
use super::{Exchange, ProxyBody};

pub struct Admission {
    limit: AtomicU32,
    in_flight: AtomicU32,
    rejections: Counter,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            limit: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            rejections: metrics::counter!("switchyard_admission_rejections_total"),
        }
    }
}

impl Admission {
    /// The limit in force; 0 is none.
    pub fn limit(&self) -> u32 {
        self.limit.load(Relaxed)
    }

    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Relaxed);
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    fn try_enter(self: &Arc<Self>) -> Option<Admitted> {
        let n = self.in_flight.fetch_add(1, Relaxed) + 1;
        let limit = self.limit.load(Relaxed);
        if limit > 0 && n > limit {
            self.in_flight.fetch_sub(1, Relaxed);
            self.rejections.increment(1);
            return None;
        }
        Some(Admitted(self.clone()))
    }
}

/// Holds one place under the limit.
pub struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct AdmissionLayer;

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admit<S>;
    fn layer(&self, inner: S) -> Admit<S> {
        Admit { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Admit<S> {
    inner: S,
}

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

impl<S> Service<Exchange> for Admit<S>
where
    S: Service<Exchange, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = Either<Ready<Result<Response<ProxyBody>, ProxyError>>, WhileAdmitted<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange) -> Self::Future {
        match ex.state.admission.try_enter() {
            Some(place) => Either::Right(WhileAdmitted {
                inner: self.inner.call(ex),
                place,
            }),
            None => Either::Left(ready(Err(ProxyError::Overloaded))),
        }
    }
}
