//! The WebAssembly plugin host: one wasmtime engine, the WIT contract
//! bindings, limits on every call, failure policy and quarantine, hot swap
//! with state handoff, a compiled-component cache, and file watching.
//!
//! | Kind | World | On failure |
//! |---|---|---|
//! | operation generator | `operation-generator` | fail closed: the operations fail |
//! | optimizer | `optimizer` | the last good parameters stay |
//! | alert rule | `alert-rule` | fail open, with a `plugin-failed` finding |

pub mod alert;
pub mod bindings;
mod cache;
mod compat;
pub mod contract;
mod engine;
pub mod generator;
mod host_state;
pub mod optimizer;
mod plugin;
pub mod scaffold;
mod set;
mod try_run;
mod watcher;

pub use alert::{AlertPlugin, plugin_failed};
/// The snapshot as plugins receive it; build it once per round with
/// `PluginSnapshot::from(&snapshot)`.
pub use bindings::types::Snapshot as PluginSnapshot;
pub use cache::{CacheOutcome, content_hash};
pub use engine::{Compiled, Compiler, EPOCH_TICK, EngineSlot, PluginEngine};
pub use generator::GeneratorPlugin;
pub use optimizer::OptimizerPlugin;
pub use plugin::{FailureCause, Plugin, PluginFailure, PluginView, Reloaded};
pub use set::{AnyPlugin, PluginSet};
pub use try_run::{TryRunError, expectation_diff, try_run};
pub use watcher::watch;
