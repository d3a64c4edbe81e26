//! TLS at the edge and to backends, with real clients (curl, rustls) and
//! real servers (rustls backends, pebble as the ACME CA).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use crate::support::pebble::Pebble;
use crate::support::tls::{self, Ca, Conn, Leaf, TlsBackend, curl};
use crate::support::{Proxy, TestBackend, eventually, free_port, get, request};

const PATIENCE: Duration = Duration::from_secs(60);

/// A config with an HTTPS listener serving `certs` (cert, key paths), one
/// catch-all route to `backend`, and `extra` appended.
fn https_config(
    tls_addr: &str,
    certs: &[(&Path, &Path)],
    backend: SocketAddr,
    extra: &str,
) -> String {
    let certs: Vec<String> = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect();
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [tls]\naddress = \"{tls_addr}\"\ncertificates = [{}]\n\n\
         [[routes]]\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n{extra}\n",
        certs.join(", ")
    )
}

fn tls_addr(proxy: &Proxy) -> SocketAddr {
    proxy.tls.expect("the proxy logs its HTTPS address")
}

/// An HTTPS site serving a.test with `first`, its certificate files in
/// `dir` (`site.crt`, `site.key`), and a client trusting its CA.
struct Site {
    dir: tempfile::TempDir,
    ca: Ca,
    first: Leaf,
    backend: TestBackend,
    proxy: Proxy,
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
}

impl Site {
    async fn start() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("edge CA");
        let first = ca.server(&["a.test"]);
        let (cert, key) = first.write(dir.path(), "site");
        let backend = TestBackend::start("app").await;
        let config = https_config("127.0.0.1:0", &[(&cert, &key)], backend.addr, "");
        let proxy = Proxy::start(&config);
        let addr = tls_addr(&proxy);
        let client = tls::client_config(&ca.pem(), &[b"http/1.1"]);
        Site {
            dir,
            ca,
            first,
            backend,
            proxy,
            addr,
            client,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_verifies_the_certificate_sni_picks_and_the_backend_sees_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("edge CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (a_cert, a_key) = ca.server(&["a.test"]).write(dir.path(), "a");
    let (b_cert, b_key) = ca.server(&["*.b.test"]).write(dir.path(), "b");
    let backend = TestBackend::start("app").await;
    let proxy = Proxy::start(&https_config(
        "127.0.0.1:0",
        &[(&a_cert, &a_key), (&b_cert, &b_key)],
        backend.addr,
        "",
    ));
    let port = tls_addr(&proxy).port();
    let fetch = |name: &str| {
        curl(&[
            "--cacert",
            ca_file.to_str().expect("path"),
            "--resolve",
            &format!("{name}:{port}:127.0.0.1"),
            &format!("https://{name}:{port}/hello"),
        ])
    };
    // curl checks the name: each succeeds only if SNI picked its certificate.
    for name in ["a.test", "www.b.test"] {
        let (code, body, err) = fetch(name);
        assert_eq!(code, 0, "curl {name}: {err}");
        assert_eq!(body, "app", "{name}");
    }
    let headers = backend.last_headers();
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert!(
        headers["forwarded"]
            .to_str()
            .unwrap()
            .contains("proto=https"),
        "{headers:?}"
    );
    assert_eq!(
        headers["x-forwarded-host"],
        format!("www.b.test:{port}").as_str()
    );
    // An unknown name gets the default (first) certificate, which curl
    // rightly refuses for that name.
    let (code, _, err) = fetch("c.test");
    assert_eq!(code, 60, "the default certificate is a.test's: {err}");
    assert!(
        proxy
            .metric("switchyard_tls_handshakes_total", &[("resumed", "no")])
            .await
            >= 2.0
    );

    // Sessions resume (tickets): the second connection skips the full
    // handshake.
    let client = tls::resuming(&tls::client_config(&ca.pem(), &[b"http/1.1"]));
    for _ in 0..2 {
        let seen = tls::get(&client, tls_addr(&proxy), "a.test", "/")
            .await
            .expect("https");
        assert_eq!(seen.status, 200);
    }
    let resumed = proxy
        .metric("switchyard_tls_handshakes_total", &[("resumed", "yes")])
        .await;
    assert!(resumed >= 1.0, "resumed handshakes: {resumed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_served_when_alpn_chooses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("edge CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.server(&["a.test"]).write(dir.path(), "a");
    let backend = TestBackend::start("app").await;
    let proxy = Proxy::start(&https_config(
        "127.0.0.1:0",
        &[(&cert, &key)],
        backend.addr,
        "",
    ));
    let port = tls_addr(&proxy).port();
    let url = format!("https://a.test:{port}/h2");
    let resolve = format!("a.test:{port}:127.0.0.1");
    let ca_path = ca_file.to_str().expect("path");
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (code, out, err) = curl(&[
            flag,
            "--cacert",
            ca_path,
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            &url,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("app\n{version}"), "curl {flag}");
    }
    let headers = backend.last_headers();
    assert_eq!(headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_under_load_fails_no_request() {
    let site = Site::start().await;
    let (ca, addr, client) = (&site.ca, site.addr, site.client.clone());
    // A keep-alive connection open across the swap.
    let mut kept = Conn::open(&client, addr, "a.test").await.expect("connect");
    assert_eq!(kept.get("/").await.expect("request").status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let second = ca.server(&["a.test"]);
    let new_seen = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        let (new_seen, new_der) = (new_seen.clone(), second.der.clone());
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(SeqCst) {
                // A new connection per request: every one is a handshake.
                match tls::get(&client, addr, "a.test", "/").await {
                    Ok(seen) if seen.status == 200 => {
                        ok.fetch_add(1, SeqCst);
                        if seen.leaf == new_der {
                            new_seen.fetch_add(1, SeqCst);
                        }
                    }
                    other => {
                        failed.fetch_add(1, SeqCst);
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            errors
        }));
    }
    eventually(PATIENCE, "requests flowing", || async {
        (ok.load(SeqCst) >= 20).then_some(())
    })
    .await;
    second.replace(site.dir.path(), "site");
    eventually(
        PATIENCE,
        "new handshakes getting the new certificate",
        || async { (new_seen.load(SeqCst) >= 20).then_some(()) },
    )
    .await;
    stop.store(true, SeqCst);
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.expect("worker"));
    }
    assert_eq!(failed.load(SeqCst), 0, "failed requests: {errors:?}");
    let seen = kept
        .get("/")
        .await
        .expect("the kept connection still serves");
    assert_eq!(seen.status, 200);
    assert_eq!(
        seen.leaf, site.first.der,
        "it was established with the old certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_is_refused_and_the_old_one_keeps_serving() {
    let site = Site::start().await;
    let (ca, addr, client) = (&site.ca, site.addr, &site.client);

    // A certificate whose key does not fit it.
    let mismatched = Leaf {
        key_pem: ca.server(&["a.test"]).key_pem,
        ..ca.server(&["a.test"])
    };
    mismatched.replace(site.dir.path(), "site");
    let view = eventually(PATIENCE, "the reload to fail", || async {
        let v = site.proxy.admin_json("/admin/config").await;
        (v["last_reload"]["result"] == "failure").then_some(v)
    })
    .await;
    let errors = view["last_reload"]["errors"].to_string();
    assert!(
        errors.contains("tls.certificates[0]")
            && errors.contains("the key does not fit the certificate"),
        "{errors}"
    );
    let seen = tls::get(client, addr, "a.test", "/")
        .await
        .expect("still serving");
    assert_eq!(
        (seen.status, &seen.leaf),
        (200, &site.first.der),
        "the old certificate serves"
    );

    // A good one is taken up again.
    let third = ca.server(&["a.test"]);
    third.replace(site.dir.path(), "site");
    eventually(PATIENCE, "the fixed certificate to serve", || async {
        let seen = tls::get(client, addr, "a.test", "/").await.ok()?;
        (seen.leaf == third.der).then_some(())
    })
    .await;

    // `check` reports a bad file with its key path and exit code 2.
    let bad = site.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        https_config(
            "127.0.0.1:0",
            &[(
                &site.dir.path().join("missing.crt"),
                &site.dir.path().join("site.key"),
            )],
            site.backend.addr,
            "",
        ),
    )
    .expect("write");
    let (code, _, err) =
        crate::support::proxy::run_cli(&["check", "--config", bad.to_str().expect("path")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("tls.certificates[0].cert: cannot read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_per_route_and_failed_handshakes_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("edge CA");
    let (cert, key) = ca.server(&["a.test"]).write(dir.path(), "a");
    let backend = TestBackend::start("app").await;
    let https_port = free_port();
    let config = https_config(
        &format!("127.0.0.1:{https_port}"),
        &[(&cert, &key)],
        backend.addr,
        "",
    )
    .replace(
        "[[routes]]\nupstream = \"app\"\n",
        "[[routes]]\nupstream = \"app\"\npath_prefix = \"/secure\"\nredirect_https = true\n\n\
         [[routes]]\nupstream = \"app\"\n",
    );
    let proxy = Proxy::start(&config);
    let r = request(
        http::Method::POST,
        &proxy.url("/secure/x?y=1"),
        &[("host", "a.test")],
        "body",
    )
    .await
    .expect("request");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{https_port}/secure/x?y=1").as_str())
    );
    assert_eq!(
        get(&proxy.url("/other")).await.expect("request").status,
        200
    );
    let client = tls::client_config(&ca.pem(), &[b"http/1.1"]);
    let seen = tls::get(&client, tls_addr(&proxy), "a.test", "/secure/x")
        .await
        .expect("https");
    assert_eq!(
        (seen.status, seen.body.as_str()),
        (200, "app"),
        "not redirected over HTTPS"
    );
    assert_eq!(
        backend.requests(),
        2,
        "the redirect never reached the backend"
    );

    // Plain HTTP to the HTTPS port, and a client that does not trust the
    // certificate.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(tls_addr(&proxy))
        .await
        .expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, raw.read_to_end(&mut sink)).await;
    let stranger = tls::client_config(&Ca::new("other CA").pem(), &[b"http/1.1"]);
    assert!(
        tls::get(&stranger, tls_addr(&proxy), "a.test", "/")
            .await
            .is_err()
    );
    for reason in ["not_tls", "client_rejected_certificate"] {
        eventually(PATIENCE, reason, || async {
            let n = proxy
                .metric(
                    "switchyard_tls_handshake_failures_total",
                    &[("reason", reason)],
                )
                .await;
            (n >= 1.0).then_some(())
        })
        .await;
    }
}

/// A proxy in front of one HTTPS backend, with `tls` as upstream `app`'s
/// TLS setting.
fn backend_tls_config(backend: SocketAddr, tls: &str, extra: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[routes]]\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\ntls = {tls}\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_with_a_private_ca_is_verified_pooled_and_health_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("backend CA");
    let ca_file = ca.write(dir.path(), "backend-ca.pem");
    let backend = TlsBackend::start(&ca.server(&["backend.test"]), None).await;
    let trusted = format!(
        "{{ ca = \"{}\", sni = \"backend.test\" }}",
        ca_file.display()
    );
    let proxy = Proxy::start(&backend_tls_config(backend.addr, &trusted, ""));
    for _ in 0..5 {
        let r = get(&proxy.url("/")).await.expect("request");
        assert_eq!((r.status, r.body.as_str()), (200, "tls-backend"));
    }
    assert_eq!(backend.requests.load(SeqCst), 5);
    assert_eq!(
        backend.handshakes.load(SeqCst),
        1,
        "one pooled TLS connection served all"
    );

    // With the system roots (which do not hold the private CA), or the
    // wrong name, the backend is not trusted.
    for tls in [
        "true".to_string(),
        format!("{{ ca = \"{}\", sni = \"other.test\" }}", ca_file.display()),
    ] {
        proxy
            .apply(&backend_tls_config(backend.addr, &tls, ""))
            .await;
        let r = get(&proxy.url("/")).await.expect("request");
        assert_eq!(r.status, 502, "tls = {tls}: {}", r.body);
    }
    assert_eq!(
        backend.requests.load(SeqCst),
        5,
        "nothing was sent unverified"
    );

    // Active health checks speak TLS the same way.
    let health = "[upstreams.app.health]\npath = \"/healthz\"\ninterval = \"100ms\"\n";
    proxy
        .apply(&backend_tls_config(backend.addr, &trusted, health))
        .await;
    eventually(PATIENCE, "health checks over TLS", || async {
        (backend.health_checks.load(SeqCst) >= 3).then_some(())
    })
    .await;
    let view = proxy.backend_view(backend.addr).await;
    assert_eq!(view["healthy"], true, "{view}");
    assert_eq!(get(&proxy.url("/")).await.expect("request").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_backend_refuses_the_proxy_without_its_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new("backend CA");
    let ca_file = ca.write(dir.path(), "backend-ca.pem");
    let clients = Ca::new("client CA");
    let (cert, key) = clients.client("switchyard").write(dir.path(), "client");
    let backend = TlsBackend::start(&ca.server(&["127.0.0.1"]), Some(&clients)).await;
    let without = format!("{{ ca = \"{}\" }}", ca_file.display());
    let proxy = Proxy::start(&backend_tls_config(backend.addr, &without, ""));
    let r = get(&proxy.url("/")).await.expect("request");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(backend.requests.load(SeqCst), 0);

    let with = format!(
        "{{ ca = \"{}\", cert = \"{}\", key = \"{}\" }}",
        ca_file.display(),
        cert.display(),
        key.display()
    );
    proxy
        .apply(&backend_tls_config(backend.addr, &with, ""))
        .await;
    let r = get(&proxy.url("/")).await.expect("request");
    assert_eq!(
        (r.status, r.header("x-client-cert")),
        (200, Some("present")),
        "{}",
        r.body
    );

    // Skipping verification is explicit, and said at start and every reload.
    let warning = "insecure_skip_verify = true";
    let unverified = format!(
        "{{ insecure_skip_verify = true, cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    );
    proxy
        .apply(&backend_tls_config(backend.addr, &unverified, ""))
        .await;
    assert_eq!(get(&proxy.url("/")).await.expect("request").status, 200);
    // The log is read from the proxy's stderr as it comes: wait for the line.
    let warned = |n: usize| {
        let proxy = &proxy;
        eventually(PATIENCE, "the warning in the log", move || {
            let count = proxy.logs().matches(warning).count();
            std::future::ready((count >= n).then_some(count))
        })
    };
    assert_eq!(warned(1).await, 1, "{}", proxy.logs());
    let touched = "[upstreams.app.retry]\nattempts = 1\n";
    proxy
        .apply(&backend_tls_config(backend.addr, &unverified, touched))
        .await;
    assert_eq!(warned(2).await, 2, "{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_issues_and_renews_a_certificate_with_pebble() {
    let http_port = free_port();
    let pebble = Pebble::start(http_port);
    let backend = TestBackend::start("app").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let acme = |renew_before: &str| {
        format!(
            "[listen]\naddress = \"127.0.0.1:{http_port}\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [tls]\naddress = \"127.0.0.1:0\"\n\
             [acme]\ndirectory = \"{}\"\ncontact = [\"mailto:ops@site.test\"]\n\
             names = [\"site.test\"]\nstorage = \"{}\"\nca_bundle = \"{}\"\n\
             check_interval = \"1s\"\nrenew_before = \"{renew_before}\"\n\n\
             [[routes]]\nupstream = \"app\"\n\n\
             [upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
            pebble.directory,
            dir.path().join("acme").display(),
            pebble.https_ca.display(),
            backend.addr,
        )
    };
    let proxy = Proxy::start(&acme("720h"));
    let addr = tls_addr(&proxy);
    // The client trusts pebble's issuing root only, and checks the name.
    let client = pebble.client_config().await;
    let first = eventually(
        Duration::from_secs(120),
        "a certificate from pebble",
        || async {
            let seen = tls::get(&client, addr, "site.test", "/").await.ok()?;
            (seen.status == 200).then_some(seen.leaf)
        },
    )
    .await;
    assert!(dir.path().join("acme/site.test.crt.pem").exists());
    let mut kept = Conn::open(&client, addr, "site.test")
        .await
        .expect("connect");

    // Renewal: every certificate now is "about to expire".
    proxy.apply(&acme("876000h")).await;
    eventually(
        Duration::from_secs(120),
        "a renewed certificate",
        || async {
            let seen = tls::get(&client, addr, "site.test", "/").await.ok()?;
            (seen.status == 200 && seen.leaf != first).then_some(())
        },
    )
    .await;
    assert_eq!(kept.get("/").await.expect("kept connection").status, 200);
    assert!(
        proxy
            .metric("switchyard_acme_orders_total", &[("result", "success")])
            .await
            >= 2.0
    );
}

#[test]
fn check_names_every_tls_mistake_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [acme]\ndirectory = \"http://ca.test/dir\"\nnames = [\"*\"]\n\n\
         [[routes]]\nupstream = \"app\"\nredirect_https = true\n\n\
         [upstreams.app]\nbackends = [{ address = \"127.0.0.1:9\" }]\n\
         tls = { sni = \"bad name\", cert = \"client.pem\" }\n",
    )
    .expect("write");
    let (code, _, err) =
        crate::support::proxy::run_cli(&["check", "--config", config.to_str().expect("path")]);
    assert_eq!(code, 2, "{err}");
    for expected in [
        "acme: needs a [tls] section",
        "acme.names[0]: \"*\" is not a DNS name",
        "acme.directory: \"http://ca.test/dir\" is not an https:// URL",
        "routes[0].redirect_https: needs a [tls] section",
        "upstreams.app.tls.sni: \"bad name\" is not a DNS name or IP address",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}
