//! Alerts: the host's side of alert rules. Rule plugins report findings;
//! this module runs the per-alert state machine, as Prometheus rules do:
//!
//! ```text
//! inactive ──active──▶ pending ──active for `for`──▶ firing
//!    ▲                    │                            │ inactive for
//!    └──────inactive──────┘                            ▼ `keep_firing_for`
//!                                                   resolved
//! ```
//!
//! An alert is one (rule, key) pair. Firing and resolved alerts go to the
//! log, `GET /admin/alerts`, the metric `switchyard_alerts_firing{rule,
//! severity}`, the next snapshot's `firing_alerts`, and an
//! Alertmanager-compatible webhook when one is configured.

pub mod webhook;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::plugins::bindings::alert::Finding;
use crate::plugins::bindings::types::Severity;

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

/// One rule's findings of one evaluation, with its timing.
pub struct Evaluation {
    pub rule: String,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

/// An alert as the admin API and the webhook see it.
#[derive(Clone, Debug, Serialize)]
pub struct AlertView {
    pub rule: String,
    pub key: String,
    pub state: AlertState,
    pub severity: &'static str,
    pub value: f64,
    pub threshold: f64,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    /// When it became pending (or firing, once firing).
    pub since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(skip)]
    pub(crate) started: SystemTime,
    #[serde(skip)]
    pub(crate) ended: Option<SystemTime>,
}

struct Tracked {
    view: AlertView,
    entered: Instant,
    last_active: Instant,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// What one update changed, for the sinks.
#[derive(Default)]
pub struct Transitions {
    pub fired: Vec<AlertView>,
    pub resolved: Vec<AlertView>,
}

#[derive(Default)]
struct Alerts {
    active: BTreeMap<(String, String), Tracked>,
    resolved: VecDeque<AlertView>,
}

#[derive(Default)]
pub struct AlertEngine {
    alerts: Mutex<Alerts>,
}

impl AlertEngine {
    /// Applies one round of evaluations; rules missing from `evaluations`
    /// (removed by a reload) have their alerts resolved.
    pub fn update(&self, evaluations: Vec<Evaluation>, retention: Duration) -> Transitions {
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut out = Transitions::default();
        let Ok(mut alerts) = self.alerts.lock() else {
            return out;
        };
        let mut seen: HashMap<(String, String), ()> = HashMap::new();
        let timing: HashMap<String, (Duration, Duration)> = evaluations
            .iter()
            .map(|e| (e.rule.clone(), (e.for_, e.keep_firing_for)))
            .collect();
        for eval in evaluations {
            for f in eval.findings.into_iter().filter(|f| f.active) {
                let id = (eval.rule.clone(), f.key.clone());
                seen.insert(id.clone(), ());
                let mut labels: BTreeMap<String, String> = f
                    .labels
                    .iter()
                    .map(|l| (l.key.clone(), l.value.clone()))
                    .collect();
                labels.insert("alertname".into(), f.key.clone());
                labels.insert("rule".into(), eval.rule.clone());
                labels.insert("severity".into(), severity_name(f.severity).into());
                let tracked = alerts.active.entry(id).or_insert_with(|| Tracked {
                    view: AlertView {
                        rule: eval.rule.clone(),
                        key: f.key.clone(),
                        state: AlertState::Pending,
                        severity: severity_name(f.severity),
                        value: f.value,
                        threshold: f.threshold,
                        labels: BTreeMap::new(),
                        summary: String::new(),
                        since: rfc3339(wall),
                        resolved_at: None,
                        started: wall,
                        ended: None,
                    },
                    entered: now,
                    last_active: now,
                });
                let v = &mut tracked.view;
                v.severity = severity_name(f.severity);
                v.value = f.value;
                v.threshold = f.threshold;
                v.labels = labels;
                v.summary = f.summary;
                tracked.last_active = now;
                if v.state == AlertState::Pending
                    && now.duration_since(tracked.entered) >= eval.for_
                {
                    v.state = AlertState::Firing;
                    v.since = rfc3339(wall);
                    v.started = wall;
                    tracked.entered = now;
                    out.fired.push(v.clone());
                }
            }
        }
        let mut finished = Vec::new();
        for (id, tracked) in alerts.active.iter_mut() {
            if seen.contains_key(id) {
                continue;
            }
            let keep = timing.get(&id.0).map_or(Duration::ZERO, |t| t.1);
            match tracked.view.state {
                // A pending alert whose finding cleared never fired.
                AlertState::Pending => finished.push((id.clone(), false)),
                AlertState::Firing if now.duration_since(tracked.last_active) >= keep => {
                    finished.push((id.clone(), true))
                }
                _ => {}
            }
        }
        for (id, fired) in finished {
            if let Some(mut tracked) = alerts.active.remove(&id)
                && fired
            {
                tracked.view.state = AlertState::Resolved;
                tracked.view.resolved_at = Some(rfc3339(wall));
                tracked.view.ended = Some(wall);
                out.resolved.push(tracked.view.clone());
                alerts.resolved.push_front(tracked.view);
            }
        }
        let cutoff = wall
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        alerts
            .resolved
            .retain(|v| v.ended.is_some_and(|e| e >= cutoff));
        alerts.resolved.truncate(1000);
        out
    }

    /// Pending and firing alerts, then recently resolved ones.
    pub fn view(&self) -> (Vec<AlertView>, Vec<AlertView>) {
        match self.alerts.lock() {
            Ok(a) => (
                a.active.values().map(|t| t.view.clone()).collect(),
                a.resolved.iter().cloned().collect(),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }

    pub fn firing(&self) -> Vec<AlertView> {
        self.view()
            .0
            .into_iter()
            .filter(|v| v.state == AlertState::Firing)
            .collect()
    }

    /// `rule/key` of every firing alert, for snapshots.
    pub fn firing_names(&self) -> Vec<String> {
        self.firing()
            .into_iter()
            .map(|v| format!("{}/{}", v.rule, v.key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::bindings::types::Severity;

    fn finding(active: bool) -> Finding {
        Finding {
            key: "k".into(),
            active,
            severity: Severity::High,
            value: 1.0,
            threshold: 0.5,
            labels: vec![],
            summary: "s".into(),
        }
    }

    fn eval(active: bool, for_ms: u64, keep_ms: u64) -> Vec<Evaluation> {
        vec![Evaluation {
            rule: "r".into(),
            for_: Duration::from_millis(for_ms),
            keep_firing_for: Duration::from_millis(keep_ms),
            findings: vec![finding(active)],
        }]
    }

    #[test]
    fn pending_then_firing_then_kept_then_resolved() {
        let e = AlertEngine::default();
        let hour = Duration::from_secs(3600);
        assert!(e.update(eval(true, 50, 50), hour).fired.is_empty());
        assert_eq!(e.view().0[0].state, AlertState::Pending);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(e.update(eval(true, 50, 50), hour).fired.len(), 1);
        assert_eq!(e.firing_names(), ["r/k"]);
        // Cleared, but kept firing for `keep_firing_for`.
        assert!(e.update(eval(false, 50, 50), hour).resolved.is_empty());
        assert_eq!(e.firing().len(), 1);
        std::thread::sleep(Duration::from_millis(60));
        let t = e.update(eval(false, 50, 50), hour);
        assert_eq!(t.resolved.len(), 1);
        assert!(e.firing().is_empty());
        assert_eq!(e.view().1[0].state, AlertState::Resolved);
    }

    #[test]
    fn a_pending_alert_that_clears_never_fires() {
        let e = AlertEngine::default();
        let hour = Duration::from_secs(3600);
        e.update(eval(true, 10_000, 0), hour);
        let t = e.update(eval(false, 10_000, 0), hour);
        assert!(t.fired.is_empty() && t.resolved.is_empty());
        assert!(e.view().0.is_empty() && e.view().1.is_empty());
    }
}
