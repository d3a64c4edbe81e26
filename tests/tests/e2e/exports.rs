//! Metrics exports: `/admin/metrics?format=json|csv` against what was
//! really sent, and the standard `process_*` series in `/metrics`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::backend::TestBackend;
use crate::support::proxy::Proxy;
use crate::support::{backends_toml, config, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_csv_exports_carry_what_was_served() {
    let b = TestBackend::start("b").await;
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\n{}\n",
        backends_toml(&[&b], &[])
    )));
    for _ in 0..25 {
        assert_eq!(get(&proxy.url("/x")).await.expect("proxied").status, 200);
    }
    let v = proxy.admin_json("/admin/metrics?format=json").await;
    let rows = v["metrics"].as_array().expect("rows");
    let find = |name: &str| {
        rows.iter()
            .filter(|r| r["name"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let requests: f64 = find("switchyard_requests_total")
        .iter()
        .filter(|r| r["labels"]["status_class"] == "2xx")
        .map(|r| r["value"].as_f64().unwrap_or(0.0))
        .sum();
    assert_eq!(requests, 25.0, "{v}");
    let duration = find("switchyard_request_duration_seconds");
    let h = duration
        .iter()
        .find(|r| r["labels"]["route"] == "*/")
        .expect("the route's request histogram");
    assert_eq!(h["type"], "histogram");
    assert_eq!(h["count"], 25.0);
    let (p50, p99) = (h["p50"].as_f64().unwrap(), h["p99"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99, "{h}");
    let rss = &find("process_resident_memory_bytes")[0];
    assert_eq!(rss["type"], "gauge");
    assert!(rss["value"].as_f64().unwrap() > 1e6);
    assert!(find("process_open_fds")[0]["value"].as_f64().unwrap() >= 3.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = find("process_start_time_seconds")[0]["value"]
        .as_f64()
        .unwrap();
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );

    let csv = get(&proxy.admin_url("/admin/metrics?format=csv"))
        .await
        .expect("csv");
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    let mut lines = csv.body.lines();
    assert_eq!(
        lines.next(),
        Some("name,type,labels,value,count,sum,p50,p90,p99")
    );
    assert!(
        csv.body.lines().any(
            |l| l.starts_with("switchyard_request_duration_seconds,histogram,")
                && l.contains(",25,")
        ),
        "{}",
        csv.body
    );
    let bad = get(&proxy.admin_url("/admin/metrics?format=xml"))
        .await
        .expect("answer");
    assert_eq!(bad.status, 400);

    let text = proxy.metrics().await;
    for series in [
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_start_time_seconds gauge",
    ] {
        assert!(text.contains(series), "{series}");
    }
}
