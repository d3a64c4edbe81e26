//! Optimizer version "a" for hot-swap tests.

const VERSION: &str = "a";

include!("../../swap-common.rs");
