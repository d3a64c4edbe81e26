//! Optimizer version "b" for hot-swap tests.

const VERSION: &str = "b";

include!("../../swap-common.rs");
