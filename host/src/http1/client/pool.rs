//! Idle connections per backend address, reused last-in first-out (the most
//! recently used connection is the one least likely to have been closed).
//!
//! A sweep ([`ConnPool::sweep`], run every few seconds by the server)
//! closes the idle connections the backend has closed, so they do not
//! linger in CLOSE_WAIT until the next request, and those idle too long;
//! the others it relieves of their buffers (see `http1::scratch`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{TlsTarget, UpstreamConn};
use crate::http1::scratch::IDLE_RELEASE;

/// Idle connections kept per backend: enough for the concurrency a backend
/// usually sees (nginx's `keepalive` is typically 32 to 64); beyond it a
/// burst's connections are closed as they finish rather than kept.
const MAX_IDLE: usize = 128;
/// Connections whose last request was sent longer ago than this are closed
/// rather than reused; below the usual 60 s keep-alive of backends. Counted
/// from the send (a time the caller has already read), not from the end of
/// the response: a connection that carried a long response may be retired
/// early, never reused late.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

#[derive(Default)]
pub struct ConnPool {
    idle: Mutex<Vec<UpstreamConn>>,
    /// How new connections speak TLS, for a backend that does.
    tls: Option<TlsTarget>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("idle", &self.idle())
            .field("tls", &self.tls)
            .finish()
    }
}

/// Whether an idle connection can carry a request sent `now`: not too old,
/// and nothing to read — which for an idle connection means the backend
/// closed it or sent garbage; either way it is unusable (see
/// `Stream::idle_usable`).
fn usable(conn: &mut UpstreamConn, now: Instant) -> bool {
    now.saturating_duration_since(conn.last_sent) <= IDLE_TIMEOUT && conn.stream.idle_usable()
}

impl ConnPool {
    /// A pool for a backend spoken to in TLS as `tls` says.
    pub fn with_tls(tls: TlsTarget) -> Self {
        ConnPool {
            idle: Mutex::default(),
            tls: Some(tls),
        }
    }

    /// How new connections of this pool speak TLS, if they do.
    pub fn tls(&self) -> Option<&TlsTarget> {
        self.tls.as_ref()
    }

    /// A live idle connection, if any, for a request sent `now`.
    pub fn checkout(&self, now: Instant) -> Option<UpstreamConn> {
        let mut idle = self.lock();
        while let Some(mut conn) = idle.pop() {
            if usable(&mut conn, now) {
                conn.reused = true;
                conn.last_sent = now;
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection that finished a response cleanly.
    pub fn checkin(&self, conn: UpstreamConn) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Closes the idle connections the backend closed or that sat too long,
    /// and frees the buffers of those idle a while; returns how many were
    /// closed.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut idle = self.lock();
        let before = idle.len();
        idle.retain_mut(|conn| usable(conn, now));
        for conn in idle.iter_mut() {
            if now.saturating_duration_since(conn.last_sent) >= IDLE_RELEASE {
                conn.rest();
            }
        }
        before - idle.len()
    }

    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<UpstreamConn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
