//! The `switchyard` binary, built inside the test crate so end-to-end tests
//! can locate it.

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
