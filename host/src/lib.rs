//! Switchyard: a reverse proxy and load balancer that hosts hot-swappable
//! WebAssembly plugins.
//!
//! The binary is a thin wrapper over [`cli::main`]. The modules follow the
//! request path (`proxy`, `balance`, `health`) and the control plane
//! (`config`, `telemetry`, `admin`); `server` wires them together.

pub mod admin;
pub mod alerts;
pub mod balance;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod compress;
pub mod config;
pub mod demo;
pub mod health;
pub mod http1;
pub mod http2;
pub mod loadgen;
pub mod logging;
pub mod optimize;
pub mod plugins;
pub mod proxy;
pub mod ratelimit;
pub mod redis_link;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod watch;
