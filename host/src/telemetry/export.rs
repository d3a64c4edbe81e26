//! `GET /admin/metrics?format=json|csv`: the series `/metrics` shows, as
//! rows a script or a spreadsheet reads directly. Counters and gauges give
//! their value; a histogram gives its count, sum and the 50th, 90th and
//! 99th percentiles estimated from its buckets (linear within a bucket,
//! as Prometheus's `histogram_quantile` does).

use std::collections::BTreeMap;

use serde::Serialize;

/// One series.
#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
}

/// `name{a="b",c="d"} value`, split; `None` for comments and blank lines.
fn sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (series, BTreeMap::new()),
    };
    Some((name, labels, value))
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// A series: its name and labels (without `le`).
type Series = (String, BTreeMap<String, String>);
/// A histogram's cumulative buckets (upper bound, count), sum and count.
type Gathered = (Vec<(f64, f64)>, f64, f64);

/// The rows of a text exposition.
pub fn rows(exposition: &str) -> Vec<Row> {
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            kinds.insert(name, kind.trim());
        }
    }
    let mut out: Vec<Row> = Vec::new();
    // Histograms gather their buckets, sum and count per label set.
    let mut histograms: BTreeMap<Series, Gathered> = BTreeMap::new();
    for line in exposition.lines() {
        let Some((name, mut labels, value)) = sample(line) else {
            continue;
        };
        let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (kinds.get(base) == Some(&"histogram")).then_some((base, *suffix))
        });
        match histogram {
            Some((base, suffix)) => {
                let le = labels.remove("le");
                let h =
                    histograms
                        .entry((base.to_string(), labels))
                        .or_insert((Vec::new(), 0.0, 0.0));
                match suffix {
                    "_bucket" => {
                        let bound = le
                            .as_deref()
                            .map_or(f64::INFINITY, |l| l.parse().unwrap_or(f64::INFINITY));
                        h.0.push((bound, value));
                    }
                    "_sum" => h.1 = value,
                    _ => h.2 = value,
                }
            }
            None => out.push(Row {
                name: name.to_string(),
                kind: kinds.get(name).unwrap_or(&"untyped").to_string(),
                labels,
                value: Some(value),
                count: None,
                sum: None,
                p50: None,
                p90: None,
                p99: None,
            }),
        }
    }
    for ((name, labels), (mut buckets, sum, count)) in histograms {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let q = |q: f64| quantile(&buckets, count, q);
        out.push(Row {
            name,
            kind: "histogram".into(),
            labels,
            value: None,
            count: Some(count),
            sum: Some(sum),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
        });
    }
    out.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    out
}

/// The `q` quantile from cumulative buckets (upper bound, count), linear
/// within the bucket it falls in; `None` without observations.
fn quantile(buckets: &[(f64, f64)], count: f64, q: f64) -> Option<f64> {
    if count <= 0.0 {
        return None;
    }
    let rank = q * count;
    let mut lower = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if bound.is_infinite() {
                // Above the last finite bound: that bound is all we know.
                return Some(lower.0);
            }
            let in_bucket = cumulative - lower.1;
            let share = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, cumulative);
    }
    Some(lower.0)
}

/// The rows as CSV: `name,type,labels,value,count,sum,p50,p90,p99`, with
/// labels as `key=value` pairs joined by `;`.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("name,type,labels,value,count,sum,p50,p90,p99\n");
    let field = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let labels = labels.join(";").replace('"', "\"\"");
        out.push_str(&format!(
            "{},{},\"{labels}\",{},{},{},{},{},{}\n",
            r.name,
            r.kind,
            field(r.value),
            field(r.count),
            field(r.sum),
            field(r.p50),
            field(r.p90),
            field(r.p99)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE reqs_total counter\n\
        reqs_total{route=\"*/\",status=\"200\"} 7\n\
        # TYPE up gauge\nup 1\n\
        # TYPE lat_seconds histogram\n\
        lat_seconds_bucket{route=\"a\",le=\"0.1\"} 50\n\
        lat_seconds_bucket{route=\"a\",le=\"0.2\"} 90\n\
        lat_seconds_bucket{route=\"a\",le=\"+Inf\"} 100\n\
        lat_seconds_sum{route=\"a\"} 12.5\n\
        lat_seconds_count{route=\"a\"} 100\n";

    #[test]
    fn counters_gauges_and_histogram_summaries() {
        let rows = rows(TEXT);
        assert_eq!(rows.len(), 3);
        let h = rows
            .iter()
            .find(|r| r.name == "lat_seconds")
            .expect("histogram");
        assert_eq!(h.labels.get("route").map(String::as_str), Some("a"));
        assert_eq!((h.count, h.sum), (Some(100.0), Some(12.5)));
        assert!((h.p50.unwrap() - 0.1).abs() < 1e-9);
        assert!((h.p90.unwrap() - 0.2).abs() < 1e-9);
        assert_eq!(h.p99, Some(0.2), "above the last bound: the bound");
        let c = rows
            .iter()
            .find(|r| r.name == "reqs_total")
            .expect("counter");
        assert_eq!((c.kind.as_str(), c.value), ("counter", Some(7.0)));
        assert_eq!(c.labels.get("status").map(String::as_str), Some("200"));
        let csv = csv(&rows);
        assert!(
            csv.contains("reqs_total,counter,\"route=*/;status=200\",7,,,,,\n"),
            "{csv}"
        );
    }
}
