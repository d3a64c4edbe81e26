//! The command line: `run`, `check`, `demo`, `bench`, `plugin new` and `plugin test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, ConfigErrors, ConfigSource};
use crate::logging;
use crate::server::Prepared;

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

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Also print what would change against a running instance, given its
    /// admin address, e.g. http://127.0.0.1:9090.
    #[arg(long, value_name = "ADMIN_URL")]
    against: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy.
    Run(ConfigArgs),
    /// Validate a config (and load its plugins) and print a summary; exit 2
    /// listing every problem.
    Check(CheckArgs),
    /// Start three sample backends and the proxy on the default config.
    Demo(ConfigArgs),
    /// Send load to a target with an operation-generator plugin and report
    /// latency, throughput and errors.
    Bench(Box<crate::loadgen::BenchArgs>),
    /// Work with plugins without a running proxy.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Write a new plugin project into DIR (named after DIR's last
    /// component): an example of the kind that acts, an input.json that
    /// shows it acting under `plugin test`, a switchyard.toml that loads
    /// it, and a README with the commands.
    New {
        /// What the plugin is.
        #[arg(long, value_enum)]
        kind: crate::config::PluginKind,
        /// What it is written in.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::plugins::scaffold::Lang,
        /// The project's directory; must not exist, or be empty.
        dir: PathBuf,
    },
    /// Run a plugin against a recorded input and print its output as JSON,
    /// with each call's time, its log lines and the memory it used. Exit 1
    /// when the plugin fails or its output lacks what the input's `expect`
    /// block names; 2 for an unusable file or input.
    Test {
        /// The plugin's `.wasm` component.
        file: PathBuf,
        /// A JSON input: a snapshot (alert rules, optimizers) or a generator
        /// run description, and optionally an `expect` block; see the README.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Deadline of each call (the proxy's default: 100ms).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<crate::config::Dur>,
        /// Linear memory the plugin may grow to (the proxy's default: 64MiB).
        #[arg(long, value_name = "SIZE")]
        memory: Option<crate::config::ByteSize>,
        /// Fuel per call, roughly wasm instructions (the proxy's default:
        /// unmetered).
        #[arg(long, value_name = "UNITS")]
        fuel: Option<u64>,
        /// The compiler: cranelift (the proxy's) or winch (wasmtime's
        /// baseline compiler: a much faster compile, slower code).
        #[arg(long, value_enum, default_value = "cranelift")]
        compiler: crate::plugins::Compiler,
    },
}

/// Exit code for a config that does not validate (and other bad input).
pub const EXIT_BAD_INPUT: u8 = 2;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_t`, the same
/// in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

pub fn main() -> ExitCode {
    // Memory freed goes back to the system 10 ms after its page empties
    // (mimalloc's own default, set here to say so): soon enough for an
    // idle proxy's RSS to come back down (the pool sweep also collects, see
    // `server::loops`), late enough that a page emptied and refilled by the
    // next requests is not returned and faulted back in each time — with
    // no delay, that cost a page fault every few requests and 10% of the
    // requests per second (tests/bench/proxy.sh). `MIMALLOC_PURGE_DELAY`
    // in the environment still wins, as it does for mimalloc's other
    // options (a longer delay trims a plugin compile's page faults).
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option of the process's allocator, with a valid
        // option id and value, before any thread but this one exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Run(args) => serve(&args, |prepared| {
            Box::pin(async move {
                crate::server::Running::start(prepared)
                    .await?
                    .run_until_signalled()
                    .await;
                Ok(())
            })
        }),
        Command::Demo(args) => serve(&args, |prepared| Box::pin(crate::demo::run(prepared))),
        Command::Bench(args) => crate::loadgen::main(&args),
        Command::Plugin(PluginCommand::New { kind, lang, dir }) => {
            match crate::plugins::scaffold::create(kind, lang, &dir) {
                Ok(files) => {
                    println!("wrote a new {kind} plugin in {}:", dir.display());
                    for f in files.iter().filter(|f| !f.starts_with("switchyard-sdk")) {
                        println!("  {}", f.display());
                    }
                    if files.iter().any(|f| f.starts_with("switchyard-sdk")) {
                        println!("  switchyard-sdk/ (the SDK, contract 0.2.0)");
                    }
                    println!("next: cd {} and follow README.md", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_BAD_INPUT)
                }
            }
        }
        Command::Plugin(PluginCommand::Test {
            file,
            input,
            timeout,
            memory,
            fuel,
            compiler,
        }) => {
            let defaults = crate::config::PluginLimits::default();
            let limits = crate::config::PluginLimits {
                timeout: timeout.unwrap_or(defaults.timeout),
                init_timeout: defaults.init_timeout,
                memory: memory.unwrap_or(defaults.memory),
                fuel: fuel.or(defaults.fuel),
            };
            plugin_test(&file, input.as_deref(), limits, compiler)
        }
    }
}

fn plugin_test(
    file: &Path,
    input: Option<&Path>,
    limits: crate::config::PluginLimits,
    compiler: crate::plugins::Compiler,
) -> ExitCode {
    use crate::plugins::TryRunError;
    let print = |report: &serde_json::Value| match serde_json::to_string_pretty(report) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print the report: {e}"),
    };
    match crate::plugins::try_run(file, input, limits, compiler) {
        Ok(report) => {
            print(&report);
            ExitCode::SUCCESS
        }
        Err(TryRunError::BadInput(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(TryRunError::PluginFailed(report)) => {
            print(&report);
            eprintln!("error: the plugin failed; see \"error\" in the report");
            ExitCode::FAILURE
        }
        Err(TryRunError::ExpectationFailed(report)) => {
            print(&report);
            eprint!("{}", crate::plugins::expectation_diff(&report));
            eprintln!("error: the output does not hold what \"expect\" names");
            ExitCode::FAILURE
        }
    }
}

/// Prints every problem of a config; exit code 2.
fn report(errors: ConfigErrors) -> ExitCode {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} problem(s) in config; nothing was started",
        errors.0.len()
    );
    ExitCode::from(EXIT_BAD_INPUT)
}

fn check(args: &CheckArgs) -> ExitCode {
    let prepared = match config::load(&args.config.source()).and_then(Prepared::new) {
        Ok(prepared) => prepared,
        Err(errors) => return report(errors),
    };
    // The running instance is asked with this config's admin token, if any.
    let token = prepared
        .loaded
        .config
        .admin
        .token
        .as_ref()
        .map(|t| t.0.clone());
    let running = args
        .against
        .as_deref()
        .map(|url| fetch_running_config(url, token.as_deref()));
    let running_config = match &running {
        Some(Ok(r)) => Some(&r["config"]),
        _ => None,
    };
    if let Err(errors) = try_binding(&prepared.loaded, running_config) {
        return report(errors);
    }
    print!("{}", summary(&prepared));
    let (Some(url), Some(running)) = (&args.against, running) else {
        return ExitCode::SUCCESS;
    };
    match running {
        Ok(running) => {
            let local = serde_json::to_value(&prepared.loaded.config).unwrap_or_default();
            let version = running["version"].as_str().unwrap_or("?");
            let changes = config::diff(&running["config"], &local);
            if changes.is_empty() {
                println!("no changes against {url} (running version {version})");
            } else {
                println!(
                    "{} change(s) against {url} (running version {version}, this config {}):",
                    changes.len(),
                    prepared.loaded.version
                );
                for c in changes {
                    println!("  {c}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot read the running config from {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the listen and admin addresses and releases them at once, so that
/// `check` notices a port in use or an address that is not this machine's.
/// An address the running instance (`--against`) already listens on is
/// expected to be in use.
fn try_binding(
    loaded: &config::Loaded,
    running: Option<&serde_json::Value>,
) -> Result<(), ConfigErrors> {
    let c = &loaded.config;
    let mut errors = Vec::new();
    let tls = c.tls.as_ref().map(|t| ("tls.address", "tls", t.address.0));
    let listeners = [
        ("listen.address", "listen", c.listen.address.0),
        ("admin.address", "admin", c.admin.address.0),
    ];
    for (key, section, addr) in listeners.into_iter().chain(tls) {
        let Err(e) = std::net::TcpListener::bind(addr) else {
            continue;
        };
        let its_own = running
            .and_then(|r| r[section]["address"].as_str())
            .is_some_and(|a| a == addr.to_string());
        if e.kind() == std::io::ErrorKind::AddrInUse && its_own {
            continue;
        }
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (if a running Switchyard holds it, give its admin URL with --against)"
        } else {
            ""
        };
        errors.push(loaded.error_at(key, format!("cannot bind {addr}: {e}{hint}")));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `GET {admin}/admin/config` of a running instance.
fn fetch_running_config(admin: &str, token: Option<&str>) -> Result<serde_json::Value, String> {
    use http_body_util::BodyExt;
    let url = format!("{}/admin/config", admin.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let fetch = async {
            let mut req = http::Request::get(uri);
            if let Some(token) = token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(http_body_util::Empty::new())
                .map_err(|e| e.to_string())?;
            let resp = client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("status {status}"));
            }
            serde_json::from_slice(&body).map_err(|e| format!("not the admin API's JSON: {e}"))
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), fetch)
            .await
            .map_err(|_| "no answer within 10s".to_string())?
    })
}

/// What `check` prints for a valid config.
pub fn summary(prepared: &Prepared) -> String {
    use std::fmt::Write;
    let loaded = &prepared.loaded;
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
            up.retry().attempts
        );
    }
    for p in prepared.plugins.iter() {
        let v = p.view();
        let origin = if v.compiled_from_cache {
            "from the compile cache"
        } else {
            "compiled"
        };
        let _ = writeln!(
            out,
            "  plugin {}: {}, {} ({origin})",
            v.name, v.kind, v.path
        );
    }
    out
}

type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

fn serve(args: &ConfigArgs, body: impl FnOnce(Prepared) -> BoxedRun) -> ExitCode {
    let loaded = match config::load(&args.source()) {
        Ok(l) => l,
        Err(errors) => return report(errors),
    };
    // Logging and the metrics recorder before plugins load, so that loading
    // can log and plugin metrics are registered with the real recorder.
    logging::init(&loaded.config.log.level);
    crate::telemetry::install();
    let prepared = match Prepared::new(loaded) {
        Ok(p) => p,
        Err(errors) => return report(errors),
    };
    let workers = match prepared.loaded.config.runtime.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker: a current-thread runtime, which skips the work-stealing
    // machinery entirely; more: the multi-threaded scheduler.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(body(prepared)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast::<ConfigErrors>() {
            Ok(errors) => report(errors),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
