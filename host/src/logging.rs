//! Log setup: `tracing` to stderr, filtered by `RUST_LOG` or the config's
//! `log.level`; the level can be changed by a reload.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter_for(level: &str) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// Installs the global subscriber once.
pub fn init(level: &str) {
    let (filter, handle) = reload::Layer::new(filter_for(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Applies a new `log.level` (unless `RUST_LOG` is set, which wins).
pub fn set_level(level: &str) {
    if let Some(handle) = FILTER.get() {
        let _ = handle.reload(filter_for(level));
    }
}
