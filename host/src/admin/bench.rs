//! Load tests started through the admin API: `POST /admin/bench` runs the
//! built-in load generator (the same plan, plugin and report as
//! `switchyard bench`) inside the proxy's process, on a thread and runtime
//! of its own so the proxy's workers are not shared; `GET
//! /admin/bench/ID` gives its state and, once done, its report as JSON or
//! CSV. One run at a time; the last few finished runs are kept.
//!
//! The body is JSON with the command line's options: `target` (a path,
//! sent to this proxy's own listener, or an `http://` URL), `plugin`
//! (relative to the config file's directory), `generator_config`,
//! `model`, `concurrency`, `rate`, `duration`, `phases`, `operations`,
//! `timeout`, `retries`, `thresholds`, `seed`. A run is bounded: by its
//! `operations`, or else by a schedule of at most `MAX_RUN`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use serde::Serialize;
use serde_json::Value;

use crate::loadgen::{BenchArgs, Plan, Report};

/// The longest schedule a run started here may have.
pub const MAX_RUN: Duration = Duration::from_secs(600);
/// Finished runs kept for `GET /admin/bench/ID`.
const KEPT: usize = 16;

#[derive(Parser)]
struct Argv {
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Finished,
    Failed,
}

#[derive(Clone, Serialize)]
pub struct Run {
    pub id: u64,
    pub state: State,
    pub target: String,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    pub planned_s: f64,
    pub elapsed_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    started: Instant,
}

impl Run {
    /// A copy, with the time elapsed so far if it is still running.
    fn as_it_stands(&self) -> Run {
        let mut r = self.clone();
        if matches!(r.state, State::Running) {
            r.elapsed_s = r.started.elapsed().as_secs_f64();
        }
        r
    }
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string())
}

#[derive(Default)]
pub struct Runs {
    next: AtomicU64,
    runs: Mutex<VecDeque<Run>>,
}

/// Why a run cannot start.
pub enum Refused {
    Busy(u64),
    Bad(String),
}

/// The command line the body stands for.
fn argv(
    body: &Value,
    own: Option<std::net::SocketAddr>,
    base: &std::path::Path,
) -> Result<Vec<String>, String> {
    let obj = body.as_object().ok_or("the body must be a JSON object")?;
    let target = obj
        .get("target")
        .and_then(Value::as_str)
        .ok_or("\"target\" is required: a path on this proxy, or an http:// URL")?;
    let target = if target.starts_with('/') {
        let addr = own.ok_or("the proxy's listener is not bound")?;
        let host = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        format!("http://{host}{}", target.trim_end_matches('/'))
    } else {
        target.to_string()
    };
    let mut argv = vec!["bench".to_string(), target, "--quiet".into()];
    for (key, value) in obj {
        let flag = match key.as_str() {
            "target" => continue,
            "plugin" => {
                let path = value.as_str().ok_or("\"plugin\" must be a string")?;
                argv.push("--plugin".into());
                argv.push(base.join(path).display().to_string());
                continue;
            }
            "generator_config" => {
                argv.push("--generator-config".into());
                argv.push(match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                continue;
            }
            "thresholds" | "phases" => {
                let flag = if key == "thresholds" {
                    "--threshold"
                } else {
                    "--phase"
                };
                for item in value
                    .as_array()
                    .ok_or(format!("\"{key}\" must be a list"))?
                {
                    argv.push(flag.into());
                    argv.push(
                        item.as_str()
                            .ok_or(format!("\"{key}\" holds strings"))?
                            .into(),
                    );
                }
                continue;
            }
            "model" | "concurrency" | "rate" | "duration" | "operations" | "timeout"
            | "retries" | "seed" => key.replace('_', "-"),
            other => return Err(format!("unknown option \"{other}\"")),
        };
        argv.push(format!("--{flag}"));
        argv.push(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    }
    Ok(argv)
}

impl Runs {
    /// Starts a run, or says why not.
    pub fn start(
        self: &Arc<Self>,
        body: &Value,
        own: Option<std::net::SocketAddr>,
        base: &std::path::Path,
    ) -> Result<u64, Refused> {
        let argv = argv(body, own, base).map_err(Refused::Bad)?;
        let args = Argv::try_parse_from(&argv)
            .map_err(|e| Refused::Bad(e.to_string().lines().next().unwrap_or("").to_string()))?
            .args;
        let plan = Plan::resolve(&args).map_err(Refused::Bad)?;
        let planned = plan.schedule.total();
        if planned > MAX_RUN && plan.operations.is_none() {
            return Err(Refused::Bad(format!(
                "the schedule lasts {planned:?}; runs started here last at most {MAX_RUN:?}"
            )));
        }
        let plugin = plan.load_generator().map_err(Refused::Bad)?;
        let id = {
            let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = runs.iter().find(|r| matches!(r.state, State::Running)) {
                return Err(Refused::Busy(r.id));
            }
            let id = self.next.fetch_add(1, Relaxed) + 1;
            runs.push_back(Run {
                id,
                state: State::Running,
                target: args.target.clone(),
                started_at: SystemTime::now(),
                planned_s: planned.as_secs_f64(),
                elapsed_s: 0.0,
                report: None,
                error: None,
                started: Instant::now(),
            });
            while runs.len() > KEPT {
                runs.pop_front();
            }
            id
        };
        let runs = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("admin-bench-{id}"))
            .spawn(move || {
                let outcome = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the async runtime: {e}"))
                    .and_then(|rt| {
                        rt.block_on(async {
                            plan.target.probe().await?;
                            Ok(crate::loadgen::run(&plan, plugin, false).await)
                        })
                    });
                runs.finish(id, outcome);
            });
        if let Err(e) = spawned {
            self.finish(id, Err(format!("cannot start the run's thread: {e}")));
        }
        Ok(id)
    }

    fn finish(&self, id: u64, outcome: Result<Report, String>) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(run) = runs.iter_mut().find(|r| r.id == id) {
            run.elapsed_s = run.started.elapsed().as_secs_f64();
            match outcome {
                Ok(report) => {
                    run.state = State::Finished;
                    run.report = Some(report);
                }
                Err(e) => {
                    run.state = State::Failed;
                    run.error = Some(e);
                }
            }
        }
    }

    /// A run as it stands.
    pub fn get(&self, id: u64) -> Option<Run> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().find(|r| r.id == id).map(Run::as_it_stands)
    }

    /// The run started last, as it stands.
    pub fn latest(&self) -> Option<Run> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().max_by_key(|r| r.id).map(Run::as_it_stands)
    }
}
