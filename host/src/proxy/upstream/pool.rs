//! Idle connections per backend address, reused last-in first-out (the most
//! recently used connection is the one least likely to have been closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::UpstreamConn;

/// Idle connections kept per backend.
const MAX_IDLE: usize = 512;
/// Connections whose last request was sent longer ago than this are closed
/// rather than reused; below the usual 60 s keep-alive of backends. Counted
/// from the send (a time the caller has already read), not from the end of
/// the response: a connection that carried a long response may be retired
/// early, never reused late.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

#[derive(Default)]
pub struct ConnPool {
    idle: Mutex<Vec<UpstreamConn>>,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("idle", &self.idle())
            .finish()
    }
}

impl ConnPool {
    /// A live idle connection, if any, for a request sent `now`.
    pub fn checkout(&self, now: Instant) -> Option<UpstreamConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut conn) = idle.pop() {
            if now.saturating_duration_since(conn.last_sent) > IDLE_TIMEOUT {
                continue;
            }
            // Without a syscall unless the reactor has seen the socket become
            // readable: then it was closed or sent garbage, either way unusable.
            let mut probe = [0u8; 1];
            match conn.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    conn.reused = true;
                    conn.last_sent = now;
                    return Some(conn);
                }
                _ => continue,
            }
        }
        None
    }

    /// Returns a connection that finished a response cleanly.
    pub fn checkin(&self, conn: UpstreamConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    pub fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}

/// Pools by backend address, shared across reloads like backend state: a
/// backend that stays in the config keeps its warm connections.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<String, Weak<ConnPool>>>,
}

impl Pools {
    pub fn pool(&self, authority: &str) -> Arc<ConnPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(authority).and_then(Weak::upgrade) {
            return p;
        }
        let fresh = Arc::new(ConnPool::default());
        pools.insert(authority.to_string(), Arc::downgrade(&fresh));
        pools.retain(|_, w| w.strong_count() > 0);
        fresh
    }
}
