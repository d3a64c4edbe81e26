//! The Prometheus recorder behind the `metrics` facade, with histogram
//! buckets chosen for a proxy (100 µs to 30 s).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: fine below 10 ms where a proxy lives, coarse
/// up to the request timeout.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Tunnel lifetimes in seconds: from a refused handshake to a day-long
/// WebSocket.
pub const TUNNEL_BUCKETS: &[f64] = &[
    0.1,
    1.0,
    10.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    24.0 * 3600.0,
];

/// Renders the process's metrics in the Prometheus text format.
#[derive(Clone)]
pub struct PrometheusExport {
    handle: PrometheusHandle,
}

impl PrometheusExport {
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Installs the global recorder once per process and returns its exporter.
pub fn install() -> PrometheusExport {
    static EXPORT: OnceLock<PrometheusExport> = OnceLock::new();
    EXPORT
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    // A full name is matched before a suffix.
                    b.set_buckets_for_metric(
                        Matcher::Full(super::names::TUNNEL_DURATION.into()),
                        TUNNEL_BUCKETS,
                    )
                })
                .expect("static bucket list is non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(
                    "cannot start the metrics upkeep thread: {e}; histograms drain on scrape only"
                );
            }
            PrometheusExport { handle }
        })
        .clone()
}
