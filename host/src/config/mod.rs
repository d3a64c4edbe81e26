//! Configuration: schema, loading (figment: TOML + profile + environment),
//! validation with file and key path in every error, and the diff used by
//! reloads and `switchyard check --against`.

mod diff;
mod load;
mod schema;
mod types;
mod validate;

pub use diff::{Change, ChangeKind, diff};
pub use load::{
    ConfigError, ConfigErrors, ConfigSource, ENV_PREFIX, Loaded, available_profiles, load,
    load_bench_profile,
};
pub use schema::*;
pub use types::{BackendAddr, ByteSize, Dur, HashKey, ListenAddr, StatusRange};
pub use validate::{
    MAX_BENCH_CONCURRENCY, PLUGIN_MEMORY_MAX, PLUGIN_MEMORY_MIN, Problem, validate_bench,
};
