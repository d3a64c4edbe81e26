//! End-to-end tests: the real `switchyard` binary, real sockets, backends
//! written here with hyper.

mod support;

mod admin_auth;
mod admin_bench;
mod admission;
mod balance;
mod bench;
mod cache;
mod cli;
mod compress;
mod dashboard;
mod deploy;
mod exports;
mod failure;
mod grpc;
mod health;
mod lifecycle;
mod limits;
mod live;
mod plugins;
mod plugins_live;
mod ratelimit;
mod reload;
mod report;
mod retry;
mod scaffold;
mod tls;
mod upgrade;
mod wire;
