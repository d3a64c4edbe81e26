//! End-to-end tests of Switchyard live in `tests/e2e/`: they start the real
//! binary, real backends on loopback and real plugins. The backends that
//! speak more than plain HTTP (gRPC, WebSocket) live here, shared by the
//! tests and the benchmark binaries.

pub mod grpc;
pub mod ws;
