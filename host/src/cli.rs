//! The command line: `run`, `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigSource, Loaded};
use crate::logging;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Reverse proxy and load balancer with hot-swappable WebAssembly plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The config file.
    #[arg(long, short, default_value = "config/switchyard.toml")]
    config: PathBuf,
    /// A profile from `profiles/` next to the config file, layered on top.
    #[arg(long, short)]
    profile: Option<String>,
}

impl ConfigArgs {
    fn source(&self) -> ConfigSource {
        ConfigSource::new(self.config.clone(), self.profile.clone())
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy.
    Run(ConfigArgs),
    /// Validate a config and print a summary; exit 2 listing every problem.
    Check(ConfigArgs),
    /// Start three sample backends and the proxy on the default config.
    Demo(ConfigArgs),
}

/// Exit code for a config that does not validate (and other bad input).
pub const EXIT_BAD_INPUT: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Run(args) => serve(&args, |loaded| {
            Box::pin(async move {
                let running = crate::server::Running::start(loaded).await?;
                crate::server::shutdown_signal().await;
                running.shutdown().await;
                Ok(())
            })
        }),
        Command::Demo(args) => serve(&args, |loaded| Box::pin(crate::demo::run(loaded))),
    }
}

fn load_or_report(source: &ConfigSource) -> Result<Loaded, ExitCode> {
    config::load(source).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("error: {e}");
        }
        eprintln!(
            "{} problem(s) in config; nothing was started",
            errors.0.len()
        );
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

fn check(args: &ConfigArgs) -> ExitCode {
    let loaded = match load_or_report(&args.source()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    print!("{}", summary(&loaded));
    ExitCode::SUCCESS
}

/// What `check` prints for a valid config.
pub fn summary(loaded: &Loaded) -> String {
    use std::fmt::Write;
    let c = &loaded.config;
    let mut out = String::new();
    let files: Vec<String> = loaded
        .source
        .files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let _ = writeln!(
        out,
        "{}: OK (version {})",
        files.join(" + "),
        loaded.version
    );
    let _ = writeln!(
        out,
        "  listen {}, admin {}",
        c.listen.address, c.admin.address
    );
    for r in &c.routes {
        let _ = writeln!(out, "  route {}{} -> {}", r.host, r.path_prefix, r.upstream);
    }
    for (name, up) in &c.upstreams {
        let health = up
            .health
            .as_ref()
            .map_or("no active checks".to_string(), |h| {
                format!("checks {} every {}", h.path, h.interval)
            });
        let _ = writeln!(
            out,
            "  upstream {name}: {}, {} backend(s), {health}, {} attempt(s)",
            up.strategy.as_str(),
            up.backends.len(),
            up.retry.attempts
        );
    }
    out
}

type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

fn serve(args: &ConfigArgs, body: impl FnOnce(Loaded) -> BoxedRun) -> ExitCode {
    let loaded = match load_or_report(&args.source()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    logging::init(&loaded.config.log.level);
    let workers = match loaded.config.runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body(loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
