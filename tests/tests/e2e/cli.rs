//! `switchyard check`: exact messages for bad configs, exit code 2.

use crate::support::proxy::run_cli;

fn check(config: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let p = path.display().to_string();
    let (code, out, err) = run_cli(&["check", "--config", &p]);
    (code, out, err, p)
}

const BASE: &str = "[listen]\naddress = \"127.0.0.1:8080\"\n[[routes]]\nupstream = \"app\"\n";

#[test]
fn each_config_error_is_named_with_file_and_key_path() {
    let cases: &[(&str, &str)] = &[
        (
            "[listen]\naddress = \"127.0.0.1:8080\"\n[[routes]]\nupstream = \"nope\"\n[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n",
            "routes[0].upstream: unknown upstream \"nope\" (defined: app)",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }, { address = \"127.0.0.1:3001\" }]\n",
            "upstreams.app.backends[1].address: duplicate backend \"127.0.0.1:3001\" (also backends[0])",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }, { address = \"127.0.0.1:3002\", weight = 0 }]\n",
            "upstreams.app.backends[1].weight: must be at least 1",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[upstreams.app.health]\ninterval = \"0s\"\n",
            "upstreams.app.health.interval: must be greater than 0",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[upstreams.app.health]\ninterval = \"soon\"\n",
            "upstreams.app.health.interval: invalid duration \"soon\": expected a number and a unit, such as \"2s\" or \"500ms\"",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"backend-without-port\" }]\n",
            "upstreams.app.backends[0].address: invalid backend address \"backend-without-port\": expected HOST:PORT, such as \"127.0.0.1:3001\"",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\", wieght = 2 }]\n",
            "upstreams.app.backends[0].wieght: unknown key (expected one of: address, weight)",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[compression]\ngzip_level = 12\n",
            "compression.gzip_level: must be between 1 and 9",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[compression]\ntypes = [\"json\"]\n",
            "compression.types[0]: invalid media type \"json\": expected type/subtype, type/* or type/*+suffix",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[[rate_limits]]\nname = \"a\"\nrate = 5\nkey = [\"cookie:x\"]\n",
            "rate_limits[0].key[0]: invalid key \"cookie:x\": expected client_ip, route or header:NAME",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[[rate_limits]]\nname = \"a\"\nrate = 5\nroute = \"*/api\"\n",
            "rate_limits[0].route: no route \"*/api\" (routes are named host + path_prefix: */)",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[[rate_limits]]\nname = \"a\"\nrate = 5\n[[rate_limits]]\nname = \"a\"\nrate = 0\n",
            "rate_limits[1].name: \"a\" is used by an earlier limit",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[admin]\naddress = \"0.0.0.0:9999\"\n",
            "admin.token: required when admin.address (0.0.0.0:9999) is not loopback: anyone who reaches it could reload, purge and read everything; set admin.token or admin.token_file",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[admin]\ntoken = \"a\"\ntoken_file = \"t\"\n",
            "admin.token_file: set admin.token or admin.token_file, not both",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[[plugins]]\nname = \"r\"\nkind = \"alert-rule\"\npath = \"r.wasm\"\nlimits = { init_timeout = \"10m\" }\n",
            "plugins[0].limits.init_timeout: must be at most 300s",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[admission]\nqueue_timeout = \"0s\"\n",
            "admission.queue_timeout: must be greater than 0",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[cache]\nkey_headers = [\"x user\"]\n",
            "cache.key_headers[0]: invalid header name \"x user\"",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[cache]\nredis_url = \"http://127.0.0.1:6379\"\n",
            "cache.redis_url: invalid Redis URL \"http://127.0.0.1:6379\": expected redis://HOST:PORT[/DB], rediss:// or unix://",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[upstreams.app.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n",
            "upstreams.app.health.timeout: must not exceed interval (1s): checks of one backend would overlap",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n[cache]\ncapacity = \"1MiB\"\nmax_object_size = \"2MiB\"\n",
            "cache.max_object_size: must not exceed cache.capacity (1MiB): no such object could be stored",
        ),
        (
            "[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\npanic_threshold = 150\n",
            "upstreams.app.panic_threshold: must be at most 100",
        ),
    ];
    for (body, expected) in cases {
        let config = if body.starts_with("[listen]") {
            body.to_string()
        } else {
            format!("{BASE}{body}")
        };
        let (code, _, err, path) = check(&config);
        assert_eq!(code, 2, "exit code for: {expected}\n{err}");
        let want = format!("error: {path}: {expected}");
        assert!(
            err.lines().any(|l| l == want),
            "want line\n  {want}\ngot\n{err}"
        );
    }
}

#[test]
fn an_unparsable_listen_address_is_reported() {
    let (code, _, err, path) = check(
        "[listen]\naddress = \"localhost:http\"\n[[routes]]\nupstream = \"app\"\n[upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\" }]\n",
    );
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "error: {path}: listen.address: invalid address \"localhost:http\": expected IP:PORT, such as \"127.0.0.1:8080\""
        )),
        "{err}"
    );
}

#[test]
fn every_problem_is_listed_at_once() {
    let (code, _, err, _) = check(&format!(
        "{BASE}[upstreams.app]\nbackends = [{{ address = \"127.0.0.1:3001\", weight = 0 }}, {{ address = \"127.0.0.1:3001\" }}]\n\
         [upstreams.app.retry]\nattempts = 0\n"
    ));
    assert_eq!(code, 2);
    assert!(err.contains("3 problem(s) in config"), "{err}");
}

#[test]
fn type_errors_in_different_tables_are_all_listed_at_once() {
    let (code, _, err, path) = check(
        "[listen]\naddress = 8080\n[timeouts]\nconnect = 5\n[[routes]]\nupstream = 7\n\
         [upstreams.app]\nbackends = [{ address = \"127.0.0.1:3001\", weight = \"heavy\" }]\n\
         [cache]\nenabled = \"yes\"\n",
    );
    assert_eq!(code, 2, "{err}");
    for key in [
        "listen.address",
        "timeouts.connect",
        "routes[0].upstream",
        "upstreams.app.backends[0].weight",
        "cache.enabled",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("error: {path}: {key}: "))),
            "{key} missing from\n{err}"
        );
    }
    assert!(err.contains("5 problem(s) in config"), "{err}");
}

/// A config whose listener is `addr`.
fn listening_on(addr: &str) -> String {
    format!(
        "[listen]\naddress = \"{addr}\"\n[admin]\naddress = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"app\"\n\
         [upstreams.app]\nbackends = [{{ address = \"127.0.0.1:3001\" }}]\n"
    )
}

#[test]
fn a_port_in_use_is_a_config_error_for_check_and_run() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err, path) = check(&listening_on(&addr));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "error: {path}: listen.address: cannot bind {addr}: "
        )),
        "{err}"
    );
    assert!(
        err.contains("--against"),
        "a hint for a running instance: {err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, listening_on(&addr)).unwrap();
    let (code, _, err) = run_cli(&["run", "--config", &cfg.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "{}: listen.address: cannot bind {addr}: ",
            cfg.display()
        )),
        "{err}"
    );
    // An address that is not this machine's.
    let (code, _, err, _) = check(&listening_on("192.0.2.1:8080"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("listen.address: cannot bind 192.0.2.1:8080"),
        "{err}"
    );
}

#[test]
fn the_default_config_checks_out() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/switchyard.toml");
    let (code, out, err) = run_cli(&["check", "--config", root]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK (version "), "{out}");
    assert!(
        out.contains("upstream app: least_response_time, 3 backend(s)"),
        "{out}"
    );
}

#[test]
fn run_refuses_a_bad_config_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[listen]\naddress = \"127.0.0.1:0\"\n").unwrap();
    let (code, _, err) = run_cli(&["run", "--config", &path.display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("routes: at least one route is required"),
        "{err}"
    );
}
