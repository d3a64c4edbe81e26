//! Keeps each backend's learned state alive across reloads.
//!
//! Runtime builds ask the registry for the state of `(upstream, address)`; a
//! backend that stays in the config gets the same `Arc<BackendState>` back, so
//! its EWMA, in-flight count, health and ejection carry over. Entries of
//! removed backends are dropped once the last runtime using them is gone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::BackendState;
use crate::config::BackendAddr;

#[derive(Debug, Default)]
pub struct StateRegistry {
    states: Mutex<HashMap<(String, BackendAddr), Weak<BackendState>>>,
}

impl StateRegistry {
    /// The state for a backend, shared with earlier runtimes if it existed.
    pub fn state(&self, upstream: &str, addr: &BackendAddr) -> Arc<BackendState> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let key = (upstream.to_string(), addr.clone());
        if let Some(existing) = states.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let fresh = Arc::new(BackendState::default());
        states.insert(key, Arc::downgrade(&fresh));
        states.retain(|_, w| w.strong_count() > 0);
        fresh
    }
}
