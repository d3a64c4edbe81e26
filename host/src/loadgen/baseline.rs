//! Baselines: a run's figures saved under a name, and later runs compared
//! against them, per operation kind, with a verdict that accounts for noise.
//!
//! A baseline holds, per kind (and `all`), an exponential moving average
//! (weight [`ALPHA`] for the newest run) of p50, p99 and throughput, each
//! with the noise band around it:
//! - for a latency quantile, the band is the quantile's 95% confidence
//!   interval read from the run's HDR histogram: the values at the ranks
//!   `n·q ± 1.96·√(n·q·(1−q))` (distribution-free, from the binomial law of
//!   the rank), widened to the histogram's bucket edges;
//! - for throughput, it is the 95% interval of the mean of the run's
//!   per-second rates (or, with fewer than three seconds, the Poisson
//!   interval of the count);
//! - across saved runs, the band's edges are averaged the same way, and the
//!   mean absolute run-to-run change of the value (as TCP's RTT variance)
//!   widens it on both sides, so a machine that varies between runs gets a
//!   wider band.
//!
//! A comparison calls a figure *regressed* or *improved* only when the
//! run's own band lies wholly on one side of the baseline's band, and
//! *same* (within noise) otherwise. No fixed percentage decides; a
//! percentage only gates the exit code (`--fail-on-regression`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::{Report, Scope};

/// Weight of the newest run in the moving averages.
pub const ALPHA: f64 = 0.3;
/// Exit code when a figure regressed past `--fail-on-regression`.
pub const EXIT_REGRESSION: u8 = 98;
/// Where baselines live unless `--baseline-dir` says otherwise.
pub const DEFAULT_DIR: &str = ".switchyard/baselines";

/// A figure with its noise band.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    /// Mean absolute change of `value` from run to run (0 after one run).
    #[serde(default)]
    pub deviation: f64,
}

impl Estimate {
    /// The band a new run is judged against.
    fn band(&self) -> (f64, f64) {
        (
            (self.lo - 2.0 * self.deviation).max(0.0),
            self.hi + 2.0 * self.deviation,
        )
    }

    fn update(&mut self, run: &Estimate) {
        self.deviation = (1.0 - ALPHA) * self.deviation + ALPHA * (run.value - self.value).abs();
        self.value = (1.0 - ALPHA) * self.value + ALPHA * run.value;
        self.lo = (1.0 - ALPHA) * self.lo + ALPHA * run.lo;
        self.hi = (1.0 - ALPHA) * self.hi + ALPHA * run.hi;
    }
}

/// p50, p99 (µs) and throughput (operations/s) of one kind.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct KindFigures {
    pub p50_us: Estimate,
    pub p99_us: Estimate,
    pub rps: Estimate,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub name: String,
    /// Saved runs folded into the averages.
    pub runs: u32,
    /// When it was last saved (RFC 3339).
    pub updated: String,
    pub target: String,
    pub generator: String,
    pub kinds: BTreeMap<String, KindFigures>,
}

/// A latency quantile of `s` with its 95% confidence interval.
fn quantile(s: &Scope, q: f64) -> Estimate {
    let n = s.count as f64;
    let half = 1.96 * (n * q * (1.0 - q)).sqrt();
    let at = |rank: f64| s.quantile_us((rank / n).clamp(0.0, 1.0));
    let value = s.quantile_us(q);
    Estimate {
        value,
        lo: s.lowest_equivalent(at(n * q - half)),
        hi: s.highest_equivalent(at(n * q + half)),
        deviation: 0.0,
    }
}

/// Relative half-width of the throughput's 95% interval for `report`.
fn rate_noise(report: &Report) -> f64 {
    // The last sample is usually a part-second; leave it out.
    let full: Vec<f64> = report
        .timeline
        .iter()
        .take(report.timeline.len().saturating_sub(1))
        .map(|s| s.rps)
        .collect();
    if full.len() >= 3 {
        let k = full.len() as f64;
        let mean = full.iter().sum::<f64>() / k;
        let var = full.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (k - 1.0);
        if mean > 0.0 {
            return 1.96 * var.sqrt() / k.sqrt() / mean;
        }
    }
    let count = report.operations.count.max(1) as f64;
    1.96 / count.sqrt()
}

/// The figures of every kind of `report`, and of `all`.
fn figures(report: &Report) -> BTreeMap<String, KindFigures> {
    let noise = rate_noise(report);
    std::iter::once(&report.operations)
        .chain(&report.kinds)
        .filter(|s| s.count > 0)
        .map(|s| {
            let name = if std::ptr::eq(s, &report.operations) {
                "all".to_string()
            } else {
                s.name.clone()
            };
            let rps = Estimate {
                value: s.rps,
                lo: s.rps * (1.0 - noise).max(0.0),
                hi: s.rps * (1.0 + noise),
                deviation: 0.0,
            };
            let f = KindFigures {
                p50_us: quantile(s, 0.5),
                p99_us: quantile(s, 0.99),
                rps,
            };
            (name, f)
        })
        .collect()
}

/// A baseline name is a file name: letters, digits, `.`, `_`, `-`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid baseline name \"{name}\": use letters, digits, '.', '_' and '-'"
        ))
    }
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// The saved baseline `name` in `dir`.
pub fn load(dir: &Path, name: &str) -> Result<Baseline, String> {
    let path = file(dir, name);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no baseline \"{name}\" in {} (save one with --save-baseline {name})",
            dir.display()
        ),
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not a baseline: {e}", path.display()))
}

/// Folds `report` into the baseline `name` (creating it), and writes it.
pub fn save(dir: &Path, name: &str, report: &Report) -> Result<Baseline, String> {
    let mut baseline = match load(dir, name) {
        Ok(b) => b,
        Err(_) if !file(dir, name).exists() => Baseline {
            name: name.to_string(),
            runs: 0,
            updated: String::new(),
            target: report.target.clone(),
            generator: report.generator.clone(),
            kinds: BTreeMap::new(),
        },
        Err(e) => return Err(e),
    };
    for (kind, run) in figures(report) {
        match baseline.kinds.get_mut(&kind) {
            Some(b) => {
                b.p50_us.update(&run.p50_us);
                b.p99_us.update(&run.p99_us);
                b.rps.update(&run.rps);
            }
            None => {
                baseline.kinds.insert(kind, run);
            }
        }
    }
    baseline.runs += 1;
    baseline.updated = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    baseline.target = report.target.clone();
    baseline.generator = report.generator.clone();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let text = serde_json::to_string_pretty(&baseline)
        .map_err(|e| format!("cannot encode the baseline: {e}"))?;
    let path = file(dir, name);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(baseline)
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Improved,
    Regressed,
    /// Same within noise.
    Same,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "regressed",
            Verdict::Same => "same within noise",
        }
    }
}

/// One figure of one kind against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub kind: String,
    /// `p50`, `p99` or `throughput`.
    pub figure: String,
    pub baseline: f64,
    pub now: f64,
    /// The baseline's band and the run's, in the figure's unit.
    pub baseline_band: (f64, f64),
    pub now_band: (f64, f64),
    /// (now − baseline) / baseline, in percent.
    pub change_pct: f64,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub baseline: String,
    pub runs: u32,
    pub changes: Vec<Change>,
    /// Kinds the baseline has and the run has not, or the reverse.
    pub unmatched: Vec<String>,
}

fn judge(
    kind: &str,
    figure: &str,
    base: &Estimate,
    now: &Estimate,
    lower_is_better: bool,
) -> Change {
    let (b_lo, b_hi) = base.band();
    let worse = if lower_is_better {
        now.lo > b_hi
    } else {
        now.hi < b_lo
    };
    let better = if lower_is_better {
        now.hi < b_lo
    } else {
        now.lo > b_hi
    };
    let verdict = match (worse, better) {
        (true, _) => Verdict::Regressed,
        (_, true) => Verdict::Improved,
        _ => Verdict::Same,
    };
    Change {
        kind: kind.to_string(),
        figure: figure.to_string(),
        baseline: base.value,
        now: now.value,
        baseline_band: (b_lo, b_hi),
        now_band: (now.lo, now.hi),
        change_pct: if base.value > 0.0 {
            (now.value - base.value) / base.value * 100.0
        } else {
            0.0
        },
        verdict,
    }
}

/// `report` against `baseline`, kind by kind.
pub fn compare(baseline: &Baseline, report: &Report) -> Comparison {
    let now = figures(report);
    let mut changes = Vec::new();
    for (kind, n) in &now {
        let Some(b) = baseline.kinds.get(kind) else {
            continue;
        };
        changes.push(judge(kind, "p50", &b.p50_us, &n.p50_us, true));
        changes.push(judge(kind, "p99", &b.p99_us, &n.p99_us, true));
        changes.push(judge(kind, "throughput", &b.rps, &n.rps, false));
    }
    let unmatched = baseline
        .kinds
        .keys()
        .filter(|k| !now.contains_key(*k))
        .chain(now.keys().filter(|k| !baseline.kinds.contains_key(*k)))
        .cloned()
        .collect();
    Comparison {
        baseline: baseline.name.clone(),
        runs: baseline.runs,
        changes,
        unmatched,
    }
}

impl Change {
    /// How much worse, in percent (0 when it is not worse).
    fn worse_by(&self) -> f64 {
        if self.figure == "throughput" {
            (-self.change_pct).max(0.0)
        } else {
            self.change_pct.max(0.0)
        }
    }

    fn show(&self, v: f64) -> String {
        if self.figure == "throughput" {
            format!("{v:.1}/s")
        } else {
            format!("{:.3}ms", v / 1e3)
        }
    }
}

impl Comparison {
    /// Whether a figure regressed, by at least `pct` percent when given.
    pub fn regressed(&self, pct: Option<f64>) -> bool {
        self.changes
            .iter()
            .any(|c| c.verdict == Verdict::Regressed && pct.is_none_or(|p| c.worse_by() >= p))
    }

    /// Lines for the end-of-run summary.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "against baseline \"{}\" ({} run(s)):\n",
            self.baseline, self.runs
        );
        for c in &self.changes {
            let _ = writeln!(
                out,
                "  {:<14} {:<10} {:>12} -> {:>12} {:>+8.1}%  {}",
                c.kind,
                c.figure,
                c.show(c.baseline),
                c.show(c.now),
                c.change_pct,
                c.verdict.as_str()
            );
        }
        for k in &self.unmatched {
            let _ = writeln!(out, "  {k:<14} in only one of the run and the baseline");
        }
        out
    }

    /// The report page's section.
    pub fn html(&self) -> String {
        let mut out = format!(
            "<h2>Against baseline “{}” ({} run(s))</h2><table id=\"baseline\"><thead><tr>\
             <th class=\"text\">kind</th><th class=\"text\">figure</th><th>baseline</th><th>now</th>\
             <th>change</th><th>verdict</th></tr></thead><tbody>",
            super::html::esc(&self.baseline),
            self.runs
        );
        for c in &self.changes {
            let cls = match c.verdict {
                Verdict::Improved => "pass",
                Verdict::Regressed => "fail",
                Verdict::Same => "same",
            };
            let _ = write!(
                out,
                r#"<tr data-kind="{k}" data-figure="{f}" data-verdict="{v}"><td class="text">{k}</td><td class="text">{f}</td><td>{b}</td><td>{n}</td><td>{p:+.1}%</td><td><span class="verdict {cls}">{v}</span></td></tr>"#,
                k = super::html::esc(&c.kind),
                f = c.figure,
                b = c.show(c.baseline),
                n = c.show(c.now),
                p = c.change_pct,
                v = c.verdict.as_str(),
            );
        }
        out.push_str("</tbody></table>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(value: f64, half: f64) -> Estimate {
        Estimate {
            value,
            lo: value - half,
            hi: value + half,
            deviation: 0.0,
        }
    }

    #[test]
    fn verdicts_need_bands_apart_and_run_to_run_change_widens_the_band() {
        let base = est(20_000.0, 100.0);
        let v =
            |now: Estimate, lower: bool, b: &Estimate| judge("k", "p50", b, &now, lower).verdict;
        assert_eq!(
            v(est(20_150.0, 100.0), true, &base),
            Verdict::Same,
            "bands overlap"
        );
        assert_eq!(v(est(20_400.0, 100.0), true, &base), Verdict::Regressed);
        assert_eq!(v(est(19_600.0, 100.0), true, &base), Verdict::Improved);
        assert_eq!(
            v(est(19_600.0, 100.0), false, &base),
            Verdict::Regressed,
            "throughput fell"
        );

        // Runs that differ by ~1,000 µs from one another make 1,400 µs noise.
        let mut noisy = est(20_000.0, 100.0);
        for value in [21_000.0, 20_000.0, 21_000.0, 20_000.0] {
            noisy.update(&est(value, 100.0));
        }
        assert!(noisy.deviation > 400.0, "{noisy:?}");
        assert_eq!(v(est(21_400.0, 100.0), true, &noisy), Verdict::Same);
        assert_eq!(v(est(25_000.0, 100.0), true, &noisy), Verdict::Regressed);

        let c = Comparison {
            baseline: "b".into(),
            runs: 1,
            changes: vec![judge("k", "p50", &base, &est(20_400.0, 100.0), true)],
            unmatched: Vec::new(),
        };
        assert!(c.regressed(None));
        assert!(c.regressed(Some(1.5)), "+2% passes a 1.5% gate");
        assert!(!c.regressed(Some(5.0)), "+2% is under a 5% gate");
    }

    #[test]
    fn baseline_names_are_plain_file_names() {
        assert!(check_name("main-2026.11_a").is_ok());
        for bad in ["", ".hidden", "../up", "a/b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
