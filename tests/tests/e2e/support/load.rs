//! A closed-loop HTTP load for live tests, and plugin config entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use super::{Http, wasm};

/// Loops of GETs until stopped; records (latency, status) of each.
pub struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<Vec<(Instant, Duration, u16)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, loops: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<std::sync::Mutex<Vec<(Instant, Duration, u16)>>> = Arc::default();
        let tasks = (0..loops)
            .map(|_| {
                let (stop, log, url) = (stop.clone(), log.clone(), url.clone());
                tokio::spawn(async move {
                    let http = Http::default();
                    while !stop.load(SeqCst) {
                        let started = Instant::now();
                        let status = http.get(&url).await.map_or(0, |r| r.status);
                        log.lock()
                            .unwrap()
                            .push((started, started.elapsed(), status));
                        if status == 503 {
                            // Rejected by admission: back off a little, as clients do.
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, log, tasks }
    }

    /// p99 latency of successful requests started in `[from, to)`.
    pub fn p99_between(&self, from: Instant, to: Instant) -> Duration {
        let mut l: Vec<Duration> = self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, s)| *t >= from && *t < to && *s == 200)
            .map(|(_, d, _)| *d)
            .collect();
        l.sort();
        l.get(l.len() * 99 / 100).copied().unwrap_or_default()
    }

    pub async fn stop(self) -> Vec<(Instant, Duration, u16)> {
        self.stop.store(true, SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        Arc::try_unwrap(self.log)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

pub fn plugin(name: &str, kind: &str, file: &str, config: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\nkind = \"{kind}\"\npath = \"{}\"\nconfig = {config}\n",
        wasm(file).display()
    )
}
