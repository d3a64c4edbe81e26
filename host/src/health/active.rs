//! Active health checks: one task per upstream that has a `[health]`
//! section, probing every backend with `GET path` each interval.
//!
//! A backend goes unhealthy after `unhealthy_threshold` failed checks in a
//! row and returns after `healthy_threshold` passed ones. A check passes when
//! the status is in `expected_statuses` within `timeout`. Tasks are restarted
//! on every config change; the health state itself lives in the shared
//! backend state, so a restart forgets nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use metrics::Counter;
use tokio::task::JoinHandle;

use crate::balance::{Backend, HealthChange};
use crate::config::HealthSection;
use crate::proxy::{ProxyState, Upstream};
use crate::telemetry::names;

type CheckClient = Client<HttpConnector, Empty<Bytes>>;

/// The running checkers of one config; dropping it stops them.
#[derive(Debug, Default)]
pub struct HealthChecks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl HealthChecks {
    /// Starts a checker for every upstream with a `[health]` section.
    pub fn start(state: &ProxyState) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(state.timeouts.connect.get()));
        let client: CheckClient = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1)
            .build(connector);
        let tasks = state
            .upstreams
            .values()
            .filter(|u| u.health.is_some())
            .map(|u| tokio::spawn(run(u.clone(), client.clone())))
            .collect();
        HealthChecks { tasks }
    }
}

struct Probe {
    pass: Counter,
    fail: Counter,
}

async fn run(upstream: Arc<Upstream>, client: CheckClient) {
    let Some(health) = upstream.health.clone() else {
        return;
    };
    let probes: Vec<Probe> = upstream
        .backends
        .iter()
        .map(|b| {
            let labels = [
                ("upstream", upstream.name.clone()),
                ("backend", b.addr.to_string()),
            ];
            let with = |result: &'static str| {
                let mut l = labels.to_vec();
                l.push(("result", result.to_string()));
                metrics::counter!(names::HEALTH_CHECKS_TOTAL, &l)
            };
            Probe {
                pass: with("pass"),
                fail: with("fail"),
            }
        })
        .collect();
    let mut tick = tokio::time::interval(health.interval.get());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checks = upstream.backends.iter().map(|b| check(&client, b, &health));
        let results = futures_util::future::join_all(checks).await;
        for ((backend, probe), result) in upstream.backends.iter().zip(&probes).zip(results) {
            let passed = result.is_ok();
            if passed { &probe.pass } else { &probe.fail }.increment(1);
            let change = backend.state.record_check(
                passed,
                health.healthy_threshold,
                health.unhealthy_threshold,
            );
            match (change, result) {
                (HealthChange::BecameUnhealthy, Err(why)) => tracing::warn!(
                    upstream = %upstream.name, backend = %backend.addr,
                    "unhealthy after {} failed checks: {why}", health.unhealthy_threshold
                ),
                (HealthChange::BecameHealthy, _) => tracing::info!(
                    upstream = %upstream.name, backend = %backend.addr,
                    "healthy again after {} passed checks", health.healthy_threshold
                ),
                _ => {}
            }
        }
    }
}

/// One probe; `Err` says why it failed.
async fn check(
    client: &CheckClient,
    backend: &Backend,
    health: &HealthSection,
) -> Result<(), String> {
    let uri = format!("http://{}{}", backend.authority, health.path);
    let req = Request::get(uri)
        .header(header::HOST, backend.authority.as_str())
        .header(header::USER_AGENT, "switchyard-health-check")
        .body(Empty::new())
        .map_err(|e| format!("bad check request: {e}"))?;
    let probe = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        // Read (a bounded amount of) the body so the connection is reused.
        let _ = Limited::new(resp.into_body(), 64 * 1024).collect().await;
        if health.expected_statuses.iter().any(|r| r.contains(status)) {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(health.timeout.get(), probe).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(health.timeout.get())
        )),
    }
}
