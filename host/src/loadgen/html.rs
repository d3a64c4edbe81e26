//! The HTML report of a run: one self-contained page (inline CSS and SVG,
//! no script, nothing fetched) that opens anywhere, offline, and can be
//! attached to a ticket or a CI artifact.
//!
//! It holds throughput and errors over time, latency percentiles over time,
//! the percentile distribution on HdrHistogram's log axis (1/(1 − p), so
//! 90%, 99%, 99.9% are evenly spaced), the table per operation kind, errors
//! by cause, thresholds and, when the run was compared to a baseline, the
//! verdicts. The schedule's phases are shaded on both time axes.
//!
//! Every plotted series carries its figures in `data-values` (`x:y` pairs,
//! seconds or percentiles against ms or operations/s), and table cells hold
//! the report's numbers, so a test or a script can read the page back.

use std::fmt::Write as _;

use super::report::{PhaseMark, Report, Scope};

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 40.0;

/// Text for HTML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e3)
}

/// A round upper bound for an axis holding `max`, and its tick step.
fn nice(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return (1.0, 0.25);
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// How x values are placed and labelled.
enum XAxis {
    /// Seconds into the run, from 0 to the run's length.
    Seconds(f64),
    /// Percentiles, placed at log10(1 / (1 − p/100)).
    Percentiles,
}

const PERCENTILE_TICKS: [f64; 7] = [0.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999];

fn percentile_x(p: f64) -> f64 {
    let tail = (1.0 - p / 100.0).max(1e-7);
    (1.0 / tail).log10()
}

/// One line chart as inline SVG.
fn chart(id: &str, y_unit: &str, axis: &XAxis, series: &[Series], phases: &[PhaseMark]) -> String {
    let (x_max, x_of): (f64, Box<dyn Fn(f64) -> f64>) = match axis {
        XAxis::Seconds(len) => (len.max(1e-3), Box::new(|x| x)),
        XAxis::Percentiles => {
            // 100% lies at infinity on this axis: the axis ends at the
            // decade after the last point below it, where 100% is drawn.
            let top = series
                .iter()
                .flat_map(|s| s.points.iter().filter(|p| p.0 < 100.0))
                .map(|p| percentile_x(p.0))
                .fold(1.0, f64::max);
            (top.ceil().max(1.0), Box::new(percentile_x))
        }
    };
    let y_top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice(y_top);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x_of(x) / x_max).clamp(0.0, 1.0) * plot_w;
    let py = |y: f64| TOP + plot_h - (y / y_max).clamp(0.0, 1.0) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{id}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    if let XAxis::Seconds(_) = axis {
        for (i, p) in phases.iter().enumerate() {
            let (x0, x1) = (px(p.start_s), px(p.end_s));
            let fill = if i % 2 == 0 { "#eef3fb" } else { "#f7f9fc" };
            let _ = write!(
                svg,
                r#"<rect class="phase" data-phase="{kind}" data-start="{s}" data-end="{e}" x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{plot_h}" fill="{fill}"/><text class="phase-label" x="{tx:.1}" y="{ty}">{kind} {from}→{to}</text>"#,
                kind = esc(&p.kind),
                s = p.start_s,
                e = p.end_s,
                w = (x1 - x0).max(0.0),
                tx = x0 + 4.0,
                ty = TOP + 12.0,
                from = label(p.from),
                to = label(p.to),
            );
        }
    }
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#dde3ea"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
            x2 = WIDTH - RIGHT,
            yy = py(y),
            tx = LEFT - 6.0,
            ty = py(y) + 4.0,
            l = label(y),
        );
        y += y_step;
    }
    let x_ticks: Vec<(f64, String)> = match axis {
        XAxis::Seconds(len) => {
            let (_, step) = nice(*len);
            let mut t = Vec::new();
            let mut x = 0.0;
            while x <= len + 1e-9 {
                t.push((x, format!("{}s", label(x))));
                x += step;
            }
            t
        }
        XAxis::Percentiles => PERCENTILE_TICKS
            .iter()
            .filter(|p| percentile_x(**p) <= x_max + 1e-9)
            .map(|p| (*p, format!("{p}%")))
            .collect(),
    };
    for (x, l) in &x_ticks {
        let _ = write!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{y2}" stroke="#eef1f4"/><text class="tick" x="{xx:.1}" y="{ty}" text-anchor="middle">{l}</text>"##,
            xx = px(*x),
            y2 = TOP + plot_h,
            ty = TOP + plot_h + 16.0,
        );
    }
    let _ = write!(
        svg,
        r#"<text class="unit" x="{x}" y="{y}">{u}</text>"#,
        x = 8.0,
        y = 16.0,
        u = esc(y_unit)
    );
    for s in series {
        let pixels: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let values: Vec<String> = s.points.iter().map(|(x, y)| format!("{x}:{y}")).collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-series="{n}" data-values="{v}" points="{p}" fill="none" stroke="{c}" stroke-width="2"><title>{n}</title></polyline>"#,
            n = esc(s.name),
            v = values.join(" "),
            p = pixels.join(" "),
            c = s.color,
        );
    }
    let mut lx = LEFT + 8.0;
    for s in series {
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="{ly}" width="10" height="10" fill="{c}"/><text class="legend" x="{tx:.1}" y="{ty}">{n}</text>"#,
            ly = HEIGHT - 14.0,
            c = s.color,
            tx = lx + 14.0,
            ty = HEIGHT - 5.0,
            n = esc(s.name),
        );
        lx += 24.0 + 7.0 * s.name.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

fn scope_row(out: &mut String, s: &Scope) {
    let _ = write!(
        out,
        r#"<tr data-kind="{n}"><th>{n}</th><td data-k="count">{}</td><td data-k="ok">{}</td><td data-k="failed">{}</td><td data-k="success">{:.2}%</td><td data-k="rps">{:.1}</td><td data-k="mean_ms">{:.3}</td><td data-k="p50_ms">{}</td><td data-k="p90_ms">{}</td><td data-k="p99_ms">{}</td><td data-k="p99_9_ms">{}</td><td data-k="max_ms">{}</td></tr>"#,
        s.count,
        s.ok,
        s.failed,
        s.success_rate() * 100.0,
        s.rps,
        s.mean_us / 1e3,
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us),
        n = esc(&s.name),
    );
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:900px;color:#1c2430;background:#fff}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}\
.meta{color:#556;margin:0 0 12px}.verdict{display:inline-block;padding:2px 8px;border-radius:4px;font-weight:600}\
.pass{background:#e3f6e8;color:#17652f}.fail{background:#fde8e8;color:#9b1c1c}.same{background:#eef1f4;color:#334}\
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}\
th,td{padding:4px 8px;border-bottom:1px solid #e5e9ef;text-align:right}th:first-child,td.text{text-align:left}\
thead th{color:#556;font-weight:600}svg{width:100%;height:auto;background:#fbfcfd;border:1px solid #e5e9ef;border-radius:6px}\
.tick,.legend,.unit,.phase-label{font-size:11px;fill:#556}.phase-label{fill:#6a7f9c}";

/// The whole page for `report`, with the baseline verdicts when there are.
pub fn page(report: &Report) -> String {
    let comparison = report.comparison.as_ref();
    let o = &report.operations;
    let mut out = String::new();
    let passed = report.passed() && comparison.is_none_or(|c| !c.regressed(None));
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <title>switchyard bench: {target}</title><style>{STYLE}</style></head><body>\
         <h1>switchyard bench <span class=\"verdict {cls}\" id=\"verdict\">{word}</span></h1>\
         <p class=\"meta\">{count} operations in {dur:.1} s against <b>{target}</b> · {model} model · generator {gen} · seed {seed}</p>",
        target = esc(&report.target),
        cls = if passed { "pass" } else { "fail" },
        word = if passed { "passed" } else { "failed" },
        count = o.count,
        dur = report.duration_s,
        model = esc(&report.model),
        gen = esc(&report.generator),
        seed = report.seed,
    );
    let len = report
        .duration_s
        .max(report.phases.last().map_or(0.0, |p| p.end_s));
    let t = &report.timeline;
    out.push_str("<h2>Throughput</h2>");
    out.push_str(&chart(
        "throughput",
        "operations/s",
        &XAxis::Seconds(len),
        &[
            Series {
                name: "ops/s",
                color: "#2f6fdb",
                points: t.iter().map(|s| (s.t_s, s.rps)).collect(),
            },
            Series {
                name: "errors/s",
                color: "#d64545",
                points: t
                    .iter()
                    .map(|s| (s.t_s, s.errors as f64 * s.rps / (s.ops.max(1) as f64)))
                    .collect(),
            },
        ],
        &report.phases,
    ));
    out.push_str("<h2>Latency over time</h2>");
    let quantile = |f: fn(&super::report::Sample) -> u64| -> Vec<(f64, f64)> {
        t.iter()
            .filter(|s| s.ops > 0)
            .map(|s| (s.t_s, f(s) as f64 / 1e3))
            .collect()
    };
    out.push_str(&chart(
        "latency",
        "ms",
        &XAxis::Seconds(len),
        &[
            Series {
                name: "p50",
                color: "#2f9e6f",
                points: quantile(|s| s.p50_us),
            },
            Series {
                name: "p90",
                color: "#d08a1e",
                points: quantile(|s| s.p90_us),
            },
            Series {
                name: "p99",
                color: "#c23b6e",
                points: quantile(|s| s.p99_us),
            },
        ],
        &report.phases,
    ));
    out.push_str("<h2>Latency by percentile</h2>");
    out.push_str(&chart(
        "distribution",
        "ms",
        &XAxis::Percentiles,
        &[Series {
            name: "all operations",
            color: "#2f6fdb",
            points: report
                .distribution
                .iter()
                .map(|p| (p.percentile, p.value_us as f64 / 1e3))
                .collect(),
        }],
        &[],
    ));
    out.push_str(
        "<h2>Operations</h2><table id=\"kinds\"><thead><tr><th></th><th>count</th><th>ok</th>\
         <th>failed</th><th>success</th><th>ops/s</th><th>mean ms</th><th>p50 ms</th>\
         <th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr></thead><tbody>",
    );
    for s in report.scopes() {
        scope_row(&mut out, s);
    }
    let _ = write!(
        out,
        "</tbody></table><p class=\"meta\">{}</p>",
        report.recovery()
    );
    out.push_str("<h2>Errors by cause</h2>");
    if report.errors.is_empty() {
        out.push_str("<p class=\"meta\" id=\"errors\">none</p>");
    } else {
        out.push_str(
            "<table id=\"errors\"><thead><tr><th>cause</th><th>count</th><th class=\"text\">example</th></tr></thead><tbody>",
        );
        for (cause, e) in &report.errors {
            let _ = write!(
                out,
                r#"<tr data-cause="{c}"><th>{c}</th><td>{}</td><td class="text">{}</td></tr>"#,
                e.count,
                esc(&e.example),
                c = esc(cause)
            );
        }
        out.push_str("</tbody></table>");
    }
    if !report.thresholds.is_empty() {
        out.push_str("<h2>Thresholds</h2><table id=\"thresholds\"><tbody>");
        for v in &report.thresholds {
            let value = v.value.map_or("no data".to_string(), |x| format!("{x:.3}"));
            let (cls, word) = if v.passed {
                ("pass", "ok")
            } else {
                ("fail", "FAIL")
            };
            let _ = write!(
                out,
                r#"<tr><td class="text">{}</td><td>{value}</td><td><span class="verdict {cls}">{word}</span></td></tr>"#,
                esc(&v.threshold.to_string())
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(c) = comparison {
        out.push_str(&c.html());
    }
    out.push_str("</body></html>\n");
    out
}
