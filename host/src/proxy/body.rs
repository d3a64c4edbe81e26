//! A response body that keeps its backend's in-flight count until the last
//! byte is sent, so least-connections and the breaker see streaming
//! responses as the load they are.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use super::state::Upstream;

/// Counts one request in flight on a backend (and its upstream) for as long
/// as it lives.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
    backend: usize,
}

impl InFlight {
    pub fn start(upstream: &Arc<Upstream>, backend: usize) -> Self {
        upstream.backends[backend]
            .state
            .in_flight
            .fetch_add(1, Relaxed);
        upstream.in_flight.fetch_add(1, Relaxed);
        InFlight {
            upstream: upstream.clone(),
            backend,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.backends[self.backend]
            .state
            .in_flight
            .fetch_sub(1, Relaxed);
        self.upstream.in_flight.fetch_sub(1, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// Wraps a body and holds an [`InFlight`] until the body ends or is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, guard: InFlight) -> Self {
        TrackedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
