//! Config reloads: nothing dropped, learned state kept, bad configs refused,
//! listeners moved with a drain, and `check --against`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::proxy::run_cli;
use crate::support::{Http, Proxy, TestBackend, backends_toml, config, eventually, free_port, get};

/// A JSON list of strings as lines.
fn lines(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Loops of GETs until stopped; counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, loops: usize) -> Load {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let tasks = (0..loops)
            .map(|_| {
                let (stop, ok, failed, url) =
                    (stop.clone(), ok.clone(), failed.clone(), url.clone());
                tokio::spawn(async move {
                    let http = Http::default();
                    while !stop.load(SeqCst) {
                        match http.get(&url).await {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, SeqCst),
                            Ok(r) => {
                                eprintln!("failed request: {} {}", r.status, r.body);
                                failed.fetch_add(1, SeqCst)
                            }
                            Err(e) => {
                                eprintln!("failed request: {e}");
                                failed.fetch_add(1, SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.ok.load(SeqCst), self.failed.load(SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_drop_nothing_and_traffic_follows() {
    let backends: Vec<TestBackend> = vec![
        TestBackend::start("b0").await,
        TestBackend::start("b1").await,
        TestBackend::start("b2").await,
        TestBackend::start("b3").await,
    ];
    let subsets: [&[usize]; 3] = [&[0, 1, 2], &[1, 2, 3], &[0, 3]];
    let strategies = [
        "round_robin",
        "weighted",
        "least_connections",
        "least_response_time",
        "hash",
    ];
    let variant = |i: usize| {
        let members: Vec<&TestBackend> = subsets[i % 3].iter().map(|&b| &backends[b]).collect();
        let weights: Vec<u32> = (0..members.len())
            .map(|k| 1 + ((i + k) % 4) as u32)
            .collect();
        let strategy = strategies[i % strategies.len()];
        let hash = if strategy == "hash" {
            "[upstreams.app.hash]\nkey = \"path\"\n"
        } else {
            ""
        };
        let cfg = config(&format!(
            "[upstreams.app]\nstrategy = \"{strategy}\"\n{}\n{hash}",
            backends_toml(&members, &weights)
        ));
        (cfg, subsets[i % 3])
    };
    let proxy = Proxy::start(&variant(0).0);
    let load = Load::start(proxy.url("/load"), 4);
    for i in 1..=100 {
        let (cfg, members) = variant(i);
        let before = proxy.version().await;
        proxy.write_config(&cfg);
        match i % 10 {
            // Every tenth reload by SIGHUP, the next by the file watch, the
            // rest through the admin API.
            0 => proxy.signal(Signal::SIGHUP),
            1 => {}
            _ => {
                let (status, body) = proxy.reload().await;
                assert_eq!(status, 200, "reload {i}: {body}");
            }
        }
        eventually(
            Duration::from_secs(10),
            &format!("reload {i} takes effect"),
            || async { (proxy.version().await != before).then_some(()) },
        )
        .await;
        // Traffic follows: backends outside the new config get no new requests.
        let idle: Vec<&TestBackend> = (0..4)
            .filter(|b| !members.contains(b))
            .map(|b| &backends[b])
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let counts: Vec<u64> = idle.iter().map(|b| b.requests()).collect();
        tokio::time::sleep(Duration::from_millis(60)).await;
        for (b, before) in idle.iter().zip(counts) {
            assert_eq!(
                b.requests(),
                before,
                "reload {i}: {} is out of the config but got traffic",
                b.name
            );
        }
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(
        failed, 0,
        "no request failed across 100 reloads ({ok} succeeded)"
    );
    assert!(ok > 1000, "the load kept flowing: {ok}");
    let successes = proxy
        .metric("switchyard_config_reload_total", &[("result", "success")])
        .await;
    assert_eq!(successes, 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_backend_lets_its_requests_in_flight_complete() {
    let (stays, leaves) = (
        TestBackend::start("stays").await,
        TestBackend::start("leaves").await,
    );
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n[upstreams.app.retry]\nattempts = 1\n",
        backends_toml(&[&stays, &leaves], &[])
    )));
    leaves.hold(true);
    let in_flight: Vec<_> = (0..6)
        .map(|_| {
            let url = proxy.url("/slow");
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    eventually(
        Duration::from_secs(5),
        "requests held on the leaving backend",
        || async { (leaves.ctl.active.load(SeqCst) == 3).then_some(()) },
    )
    .await;
    proxy
        .apply(&config(&format!(
            "[upstreams.app]\n{}\n",
            backends_toml(&[&stays], &[])
        )))
        .await;
    let before = leaves.requests();
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/new")).await.unwrap().backend(), "stays");
    }
    assert_eq!(leaves.requests(), before);
    leaves.hold(false);
    for r in in_flight {
        let r = r.await.unwrap().expect("in-flight request completed");
        assert_eq!(r.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_leaves_the_running_one_serving() {
    let b = TestBackend::start("b").await;
    let good = config(&format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[])));
    let proxy = Proxy::start(&good);
    let running = proxy.version().await;
    let junk = proxy.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let cases: Vec<(String, &str)> = vec![
        (format!("{good}\n[listen\n"), "TOML parse error"),
        (
            good.replace("weight = 1", "weight = 0"),
            "upstreams.app.backends[0].weight: must be at least 1",
        ),
        (
            format!("{good}\n[timeouts]\nconect = \"1s\"\n"),
            "timeouts.conect: unknown key",
        ),
        (
            format!(
                "{good}\n[[plugins]]\nname = \"x\"\nkind = \"alert-rule\"\npath = \"{}\"\n",
                junk.display()
            ),
            "plugins[0].path: cannot load plugin \"x\": not a valid WebAssembly component",
        ),
        (
            good.replacen(
                "address = \"127.0.0.1:0\"",
                &format!("address = \"{busy}\""),
                1,
            ),
            "listen.address: cannot bind",
        ),
    ];
    for (n, (cfg, expected)) in cases.iter().enumerate() {
        proxy.write_config(cfg);
        let (status, body) = proxy.reload().await;
        assert_eq!(status, 422, "case {n}: {body}");
        let errors = lines(&body["errors"]);
        assert!(
            errors.contains(expected),
            "case {n}: want {expected:?} in {errors}"
        );
        let view = proxy.admin_json("/admin/config").await;
        assert_eq!(
            view["version"],
            running.as_str(),
            "case {n}: the running config stays"
        );
        assert_eq!(view["last_reload"]["result"], "failure");
        assert!(lines(&view["last_reload"]["errors"]).contains(expected));
        assert_eq!(
            get(&proxy.url("/still")).await.unwrap().status,
            200,
            "case {n}: still serving"
        );
    }
    // The file watch reports a broken file the same way.
    let failures_before = proxy
        .metric("switchyard_config_reload_total", &[("result", "failure")])
        .await;
    proxy.write_config(&good.replace("weight = 1", "weight = 0"));
    eventually(
        Duration::from_secs(10),
        "the watched broken file is refused",
        || async {
            let now = proxy
                .metric("switchyard_config_reload_total", &[("result", "failure")])
                .await;
            (now > failures_before).then_some(())
        },
    )
    .await;
    proxy.wait_log("the running config stays").await;
    drop(taken);
    proxy.write_config(&good);
    let (status, body) = proxy.reload().await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_state_of_backends_that_stay_survives_a_reload() {
    let (slow, flaky, other) = (
        TestBackend::start("slow").await,
        TestBackend::start("flaky").await,
        TestBackend::start("other").await,
    );
    slow.set_latency(30);
    flaky.set_drop_connections(true);
    let upstream = |extra: &TestBackend| {
        config(&format!(
            "[upstreams.app]\nstrategy = \"round_robin\"\n{}\n\
             [upstreams.app.retry]\nattempts = 1\n\
             [upstreams.app.outlier]\nconsecutive_failures = 2\nbase_ejection_time = \"60s\"\nmax_ejection_percent = 50\n",
            backends_toml(&[&slow, &flaky, extra], &[])
        ))
    };
    let proxy = Proxy::start(&upstream(&other));
    let http = Http::default();
    for _ in 0..12 {
        let _ = http.get(&proxy.url("/warm")).await;
    }
    let slow_before = proxy.backend_view(slow.addr).await;
    let flaky_before = proxy.backend_view(flaky.addr).await;
    assert!(
        slow_before["ewma_latency_us"].as_u64().unwrap() >= 25_000,
        "{slow_before}"
    );
    assert_eq!(flaky_before["ejected"], true, "{flaky_before}");

    let newcomer = TestBackend::start("newcomer").await;
    proxy.apply(&upstream(&newcomer)).await;
    let slow_after = proxy.backend_view(slow.addr).await;
    let flaky_after = proxy.backend_view(flaky.addr).await;
    assert_eq!(
        slow_after["requests"], slow_before["requests"],
        "counters carried over"
    );
    let (b, a) = (
        slow_before["ewma_latency_us"].as_u64().unwrap(),
        slow_after["ewma_latency_us"].as_u64().unwrap(),
    );
    assert!(a * 2 >= b, "EWMA carried over: {b} then {a}");
    assert_eq!(
        flaky_after["ejected"], true,
        "still ejected after the reload"
    );
    assert_eq!(flaky_after["ejections"], flaky_before["ejections"]);
    let new = proxy.backend_view(newcomer.addr).await;
    assert_eq!(
        (new["healthy"].as_bool(), new["requests"].as_u64()),
        (Some(true), Some(0)),
        "new backends start healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_listeners_drains_the_old_addresses() {
    let b = TestBackend::start("b").await;
    let upstream = format!("[upstreams.app]\n{}\n", backends_toml(&[&b], &[]));
    let (old_port, old_admin) = (free_port(), free_port());
    let at = |port: u16, admin: u16| {
        format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [timeouts]\ndrain = \"10s\"\n[[routes]]\nupstream = \"app\"\n{upstream}"
        )
    };
    let proxy = Proxy::start(&at(old_port, old_admin));
    b.set_latency(800);
    let old_url = format!("http://127.0.0.1:{old_port}/slow");
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = old_url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (new_port, new_admin) = (free_port(), free_port());
    // Moved by the file watch: the admin address moves too.
    proxy.write_config(&at(new_port, new_admin));
    eventually(
        Duration::from_secs(10),
        "the new admin address serves",
        || async {
            get(&format!("http://127.0.0.1:{new_admin}/admin/config"))
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await;
    b.set_latency(0);
    let r = get(&format!("http://127.0.0.1:{new_port}/new"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "the new address serves");
    for r in in_flight {
        assert_eq!(
            r.await
                .unwrap()
                .expect("in flight on the old address")
                .status,
            200
        );
    }
    eventually(
        Duration::from_secs(10),
        "the old address stops accepting",
        || async {
            get(&format!("http://127.0.0.1:{old_port}/gone"))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_a_running_instance_prints_the_diff() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let proxy = Proxy::start(&config(&format!(
        "[upstreams.app]\n{}\n",
        backends_toml(&[&a, &b], &[1, 1])
    )));
    let next = proxy.dir.path().join("next.toml");
    std::fs::write(
        &next,
        config(&format!(
            "[upstreams.app]\nstrategy = \"weighted\"\n{}\n",
            backends_toml(&[&a, &b], &[1, 5])
        )),
    )
    .unwrap();
    let admin = format!("http://{}", proxy.admin);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_cli(&[
            "check",
            "--config",
            &next.display().to_string(),
            "--against",
            &admin,
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 change(s) against"), "{out}");
    assert!(
        out.contains("~ upstreams.app.backends[1].weight: 1 -> 5"),
        "{out}"
    );
    assert!(
        out.contains("~ upstreams.app.strategy: \"least_response_time\" -> \"weighted\""),
        "{out}"
    );
}

#[test]
fn every_shipped_profile_checks_out_on_the_default_config() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/switchyard.toml");
    let mut seen = HashMap::new();
    for profile in [
        "development",
        "production",
        "load-testing",
        "read-heavy",
        "write-heavy",
    ] {
        let (code, out, err) = run_cli(&["check", "--config", root, "--profile", profile]);
        assert_eq!(code, 0, "{profile}: {err}");
        let version = out
            .split("(version ")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .to_string();
        assert!(
            seen.insert(version, profile).is_none(),
            "{profile} changes nothing"
        );
    }
    let (code, _, err) = run_cli(&["check", "--config", root, "--profile", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown profile \"nope\" (available: development, load-testing, production, read-heavy, write-heavy)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_rewritten_without_pause_is_still_reloaded() {
    let b = TestBackend::start("b").await;
    let cfg = |drain: u32| {
        config(&format!(
            "[upstreams.app]\n{}\n[timeouts]\ndrain = \"{drain}s\"\n",
            backends_toml(&[&b], &[])
        ))
    };
    let proxy = Arc::new(Proxy::start(&cfg(30)));
    let first = proxy.version().await;
    // Rewritten every 100 ms, more often than the 200 ms quiet time: the
    // reload cannot wait for quiet, and comes at the latest after 1 s.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (proxy, writing) = (proxy.clone(), writing.clone());
        let contents: Vec<String> = (0..2).map(|i| cfg(31 + i)).collect();
        tokio::spawn(async move {
            let mut i = 0;
            while writing.load(SeqCst) {
                proxy.write_config(&contents[i % 2]);
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    eventually(
        Duration::from_secs(20),
        "a reload while the file keeps changing",
        || async { (proxy.version().await != first).then_some(()) },
    )
    .await;
    writing.store(false, SeqCst);
    writer.await.unwrap();
}
