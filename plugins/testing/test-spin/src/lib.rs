//! Never returns from `evaluate`, to test the host's call deadline.
//! `init` spins too when asked, to test the init deadline: config
//! `"init-forever"` never returns, `"init-ms=N"` returns after N ms.

use switchyard_sdk::{AlertRule, Finding, RuleMeta, Snapshot};

struct Spin;

impl AlertRule for Spin {
    fn init(config: &str) -> Result<Self, String> {
        if config == "init-forever" {
            spin(0, None);
        } else if let Some(ms) = config.strip_prefix("init-ms=") {
            let ms: u64 = ms.parse().map_err(|_| format!("bad init-ms: {ms}"))?;
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            spin(1, Some(until));
        }
        Ok(Spin)
    }
    fn describe(&self) -> RuleMeta {
        RuleMeta {
            name: "test-spin".into(),
            description: "loops forever".into(),
            for_ms: 0,
            keep_firing_for_ms: 0,
        }
    }
    fn evaluate(&mut self, s: &Snapshot) -> Vec<Finding> {
        spin(s.now_ms, None);
        vec![]
    }
}

/// Burns CPU until `until` (never, without one; the seed never reaches 42).
fn spin(seed: u64, until: Option<std::time::Instant>) {
    let mut x = seed;
    loop {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            if x == 42 {
                return;
            }
        }
        if until.is_some_and(|t| std::time::Instant::now() >= t) {
            return;
        }
    }
}

switchyard_sdk::export_alert_rule!(Spin);
