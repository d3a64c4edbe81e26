//! Health: active HTTP checks with rise/fall thresholds, and passive outlier
//! detection that ejects backends after consecutive failures. The circuit
//! breaker (max in-flight per backend) is enforced at pick time, see
//! `balance::Backend::is_available`.

mod active;
mod outlier;

pub use active::HealthChecks;
pub use outlier::{Outcome, record_outcome};
