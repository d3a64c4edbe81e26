//! The `switchyard` binary, built inside the test crate so end-to-end tests
//! can locate it. Same allocator and entry point as `host/src/main.rs`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
