//! End-to-end tests of Switchyard live in `tests/e2e/`: they start the real
//! binary, real backends on loopback and, later, real plugins.
