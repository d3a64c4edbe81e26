//! The `switchyard` binary; see `switchyard --help`.

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
