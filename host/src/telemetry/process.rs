//! The process's own CPU and memory use, for snapshots (alert rules on CPU
//! and memory, optimizers that target a memory share).

use std::time::Instant;

/// Samples CPU time between calls; memory on each call.
pub struct ProcessStats {
    last: Option<(Instant, f64)>,
    cores: f64,
}

impl Default for ProcessStats {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        ProcessStats { last: None, cores }
    }
}

/// Linux's USER_HZ, the unit of the CPU times in `/proc/self/stat`.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE: u64 = 4096;

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may contain spaces, in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

impl ProcessStats {
    /// CPU used since the last call, as a share of all cores (0.0 to 1.0).
    pub fn cpu_utilization(&mut self) -> f64 {
        let now = Instant::now();
        let Some(cpu) = cpu_seconds() else { return 0.0 };
        let share = match self.last {
            Some((then, before)) => {
                let wall = now.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    ((cpu - before) / wall / self.cores).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, cpu));
        share
    }

    /// Resident memory in bytes.
    pub fn rss_bytes() -> u64 {
        std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |pages| pages * PAGE)
    }

    /// The cgroup (v2) memory limit, 0 when there is none.
    pub fn memory_limit_bytes() -> u64 {
        std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// The standard `process_*` series of the Prometheus client libraries,
/// read from `/proc` at each scrape, in the text format; empty where
/// `/proc` is missing (not Linux).
pub fn exposition() -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut line = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    if let Some(cpu) = cpu_seconds() {
        line(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        );
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let mut fields = statm
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        let (virt, rss) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        line(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            (virt * PAGE) as f64,
        );
        line(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (rss * PAGE) as f64,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        line(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(max) = max_fds() {
        line(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    if let Some(start) = start_time_seconds() {
        line(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
    out
}

/// The soft limit on open files (`/proc/self/limits`).
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let row = limits.lines().find(|l| l.starts_with("Max open files"))?;
    row["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Boot time (`/proc/stat` btime) plus the process's start in ticks.
fn start_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / TICKS_PER_SECOND)
}
