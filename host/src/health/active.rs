//! Active health checks: one task per upstream that has a `[health]`
//! section, probing every backend with `GET path` each interval, through
//! the same client and connection pool as proxied traffic (HTTP/1.1, or
//! HTTP/2 for `protocol = "h2"`) — a backend cannot pass its checks on one
//! HTTP stack and fail on another.
//!
//! A backend goes unhealthy after `unhealthy_threshold` failed checks in a
//! row and returns after `healthy_threshold` passed ones. A check passes when
//! the status is in `expected_statuses` within `timeout`. Tasks are restarted
//! on every config change; the health state itself lives in the shared
//! backend state, so a restart forgets nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, header};
use http_body_util::{BodyExt, Limited};
use metrics::Counter;
use tokio::task::JoinHandle;

use crate::balance::HealthChange;
use crate::config::HealthSection;
use crate::http1::client::{self, Outbound};
use crate::proxy::{ProxyState, Upstream};
use crate::telemetry::names;

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
    /// Starts a checker for every upstream with a `[health]` section, and a
    /// success-rate sweep for every one with `outlier.success_rate`.
    pub fn start(state: &ProxyState) -> Self {
        let checks = state
            .upstreams
            .values()
            .filter(|u| u.health.is_some())
            .map(|u| tokio::spawn(run(u.clone())));
        let sweeps = state.upstreams.values().filter_map(|u| {
            let section = u.outlier.success_rate.clone()?;
            Some(tokio::spawn(super::outlier::sweep_success_rates(
                u.clone(),
                section,
            )))
        });
        HealthChecks {
            tasks: checks.chain(sweeps).collect(),
        }
    }
}

struct Probe {
    pass: Counter,
    fail: Counter,
}

async fn run(upstream: Arc<Upstream>) {
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
        let checks = (0..upstream.backends.len()).map(|i| check(&upstream, i, &health));
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

/// Most body bytes a check reads: enough for a status page, and the
/// connection stays reusable.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// One probe of backend `idx`; `Err` says why it failed.
async fn check(upstream: &Upstream, idx: usize, health: &HealthSection) -> Result<(), String> {
    let backend = &upstream.backends[idx];
    let uri = format!("http://{}{}", backend.authority, health.path);
    let req = Request::get(uri)
        .header(header::USER_AGENT, "switchyard-health-check")
        .body(())
        .map_err(|e| format!("bad check request: {e}"))?;
    let head = Outbound::plain(req.into_parts().0);
    let probe = async {
        let status = match upstream.h2.get(idx) {
            Some(pool) => {
                let request = crate::http2::to_h2(&head, upstream.tls, None)
                    .map_err(|e| format!("bad check request: {e}"))?;
                let (response, _stream) = pool
                    .send(&backend.authority, upstream.connect_timeout, request)
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                let status = response.status().as_u16();
                let _ = Limited::new(response.into_body(), MAX_CHECK_BODY)
                    .collect()
                    .await;
                status
            }
            None => {
                let pool = &upstream.pools[idx];
                let (conn, response) = client::send(
                    pool,
                    &backend.authority,
                    upstream.connect_timeout,
                    &head,
                    None,
                    Instant::now(),
                )
                .await
                .map_err(|e| format!("request failed: {e}"))?;
                let status = response.parts.status.as_u16();
                let body = client::upstream_body(
                    conn,
                    response.framing,
                    response.keep_alive,
                    pool.clone(),
                    (),
                );
                // Read (a bounded amount of) the body so the connection is reused.
                let _ = Limited::new(body, MAX_CHECK_BODY).collect().await;
                status
            }
        };
        if health.expected_statuses.iter().any(|r| r.contains(status)) {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    let limit: Duration = health.timeout();
    match tokio::time::timeout(limit, probe).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    }
}
