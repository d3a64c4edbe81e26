//! The live dashboard in a real headless Chromium, against a running proxy:
//! live figures that move under load, a failing backend shown unhealthy, a
//! firing alert listed, the confirmation step before a purge or a reload,
//! and a load test started from the page.

use std::time::Duration;

use crate::support::browser::{Browser, screenshot_path};
use crate::support::{Load, Proxy, TestBackend, backends_toml, config, plugin, wasm};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_traffic_a_failing_backend_and_a_firing_alert() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let proxy = Proxy::start(&format!(
        "{}[alerts]\ninterval = \"200ms\"\n[optimizer]\ninterval = \"500ms\"\n{}{}",
        config(&format!(
            "[upstreams.app]\n{}\n[upstreams.app.health]\npath = \"/healthz\"\n\
             interval = \"200ms\"\ntimeout = \"200ms\"\nunhealthy_threshold = 2\n",
            backends_toml(&[&a, &b], &[])
        )),
        // Fires as soon as any traffic arrives: no proxy does 10⁹ requests/s.
        plugin(
            "thresholds",
            "alert-rule",
            "thresholds",
            "{ throughput_medium_rps = 1e9, for_ms = 0 }"
        ),
        plugin("latency-weights", "optimizer", "latency_weights", "\"\""),
    ));
    let mut page = Browser::launch().await;
    page.navigate(&proxy.admin_url("/")).await;
    page.wait_for(
        LIMIT,
        "the event stream connects",
        "document.getElementById('status').textContent === 'live' && Number(document.body.dataset.events) >= 1",
    )
    .await;
    let version = proxy.admin_json("/admin/config").await["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(page.text("#version").await, Some(version.clone()));

    // Live figures appear, and move with the traffic.
    let load = Load::start(proxy.url("/work"), 2);
    page.wait_for(
        LIMIT,
        "requests per second shows traffic",
        "parseFloat(document.getElementById('rps').textContent.replace(/,/g, '')) > 0",
    )
    .await;
    let requests = |backend: &TestBackend| {
        format!(
            "Number(document.querySelector('tr[data-backend=\"app/{}\"] .requests').textContent.replace(/,/g, ''))",
            backend.addr
        )
    };
    let before = page.eval(&requests(&a)).await.as_f64().unwrap();
    page.wait_for(
        LIMIT,
        "backend a's request count rises",
        &format!("{} > {before}", requests(&a)),
    )
    .await;

    // A firing alert is listed.
    page.wait_for(
        LIMIT,
        "the firing alert is listed",
        "(() => { const r = document.querySelector('tr[data-alert=\"thresholds/low-throughput\"] .state'); return !!r && r.textContent === 'firing'; })()",
    )
    .await;

    // An injected backend failure shows.
    b.set_health(500);
    let state = format!("tr[data-backend=\"app/{}\"] .state", b.addr);
    page.wait_for(
        LIMIT,
        "backend b shows unhealthy",
        &format!(
            "(() => {{ const s = document.querySelector('{}'); return !!s && /^(unhealthy|ejected)/.test(s.textContent); }})()",
            state.replace('\'', "\\'")
        ),
    )
    .await;
    assert_eq!(
        page.text(&format!("tr[data-backend=\"app/{}\"] .state", a.addr))
            .await
            .as_deref(),
        Some("healthy")
    );
    let log = load.stop().await;
    assert!(log.iter().all(|(_, _, status)| *status == 200));

    let dir = tempfile::tempdir().unwrap();
    let shot = screenshot_path(&dir, "dashboard.png");
    assert!(page.screenshot(&shot).await > 20_000, "a rendered page");

    // A purge waits for its confirmation; Cancel does nothing.
    page.click("#purge").await;
    assert_eq!(
        page.text("#confirm-text").await.as_deref(),
        Some("Purge every cached response?")
    );
    page.click("#confirm-no").await;
    assert_eq!(page.text("#action-result").await.as_deref(), Some(""));
    page.click("#purge").await;
    page.click("#confirm-yes").await;
    page.wait_for(
        LIMIT,
        "the purge is reported",
        "document.getElementById('action-result').textContent.startsWith('Cache purged: ')",
    )
    .await;
    page.click("#reload").await;
    page.click("#confirm-yes").await;
    page.wait_for(
        LIMIT,
        "the reload is reported",
        &format!(
            "document.getElementById('action-result').textContent === 'Config unchanged, version {version}'"
        ),
    )
    .await;

    // A load test started from the page runs, and its report shows.
    page.eval(&format!(
        "document.getElementById('bench-target').value = '/bench'; \
         document.getElementById('bench-plugin').value = {}; \
         document.getElementById('bench-duration').value = '2'; \
         document.getElementById('bench-rate').value = '50'",
        serde_json::Value::from(wasm("fixed_request").display().to_string())
    ))
    .await;
    page.click("#bench-start").await;
    page.click("#confirm-yes").await;
    page.wait_for(
        Duration::from_secs(60),
        "the load test finishes on the page",
        "document.getElementById('bench-state').textContent.startsWith('finished') && document.querySelectorAll('#bench-result tr').length >= 2",
    )
    .await;
    let ok = page
        .eval("Number(document.querySelector('#bench-result tr:nth-child(2) td:nth-child(2)').textContent.replace(/,/g, ''))")
        .await;
    assert!(ok.as_f64().unwrap() >= 50.0, "{ok}");
    assert!(b.requests() + a.requests() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_page_is_public_but_its_data_needs_the_token() {
    let a = TestBackend::start("a").await;
    let token_config = config(&format!("[upstreams.app]\n{}\n", backends_toml(&[&a], &[])))
        .replace(
            "[admin]\naddress = \"127.0.0.1:0\"\n",
            "[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"s3cret-token-for-tests\"\n",
        );
    let proxy = Proxy::start(&token_config);
    let page = crate::support::get(&proxy.admin_url("/")).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>Switchyard</title>"));
    for path in ["/admin/events", "/admin/dashboard"] {
        let r = crate::support::get(&proxy.admin_url(path)).await.unwrap();
        assert_eq!(r.status, 401, "{path}");
    }

    let mut browser = Browser::launch().await;
    browser.navigate(&proxy.admin_url("/")).await;
    browser
        .wait_for(
            LIMIT,
            "the page asks for the token",
            "document.getElementById('token-form').classList.contains('open')",
        )
        .await;
    browser
        .eval("document.getElementById('token').value = 's3cret-token-for-tests'")
        .await;
    browser.click("#token-form button").await;
    browser
        .wait_for(
            LIMIT,
            "with the token the stream connects",
            "document.getElementById('status').textContent === 'live' && Number(document.body.dataset.events) >= 1",
        )
        .await;
}
