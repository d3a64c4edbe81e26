//! The `switchyard` binary; see `switchyard --help`.

// mimalloc: markedly less time in malloc/free than glibc's on the request
// path, which allocates small, short-lived buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
