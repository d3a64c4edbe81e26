//! A real ACME CA on loopback: Debian's `pebble`, with
//! `pebble-challtestsrv` as its DNS server so that every name resolves to
//! 127.0.0.1 and its HTTP-01 requests reach the proxy's plain listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::free_port;
use super::tls::Ca;

pub struct Pebble {
    pebble: Child,
    dns: Child,
    /// The ACME directory URL.
    pub directory: String,
    /// The CA of pebble's own HTTPS certificate (for `acme.ca_bundle`).
    pub https_ca: PathBuf,
    https_ca_pem: String,
    management: SocketAddr,
    _dir: TempDir,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.dns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Child {
    Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} ({e}); install it with tests/install-deps.sh")
        })
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` of 127.0.0.1.
    pub fn start(http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("pebble HTTPS test CA");
        let https_ca = ca.write(dir.path(), "pebble-https-ca.pem");
        let (cert, key) = ca
            .server(&["127.0.0.1", "localhost"])
            .write(dir.path(), "pebble");
        let (listen, management, dns) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write pebble config");
        let dns_addr = format!("127.0.0.1:{dns}");
        let dns_child = spawn(
            "pebble-challtestsrv",
            &[
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &dns_addr,
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
            ],
            &[],
        );
        let pebble = spawn(
            "pebble",
            &[
                "-config",
                config_path.to_str().expect("utf-8 path"),
                "-dnsserver",
                &dns_addr,
            ],
            &[("PEBBLE_VA_NOSLEEP", "1"), ("PEBBLE_WFE_NONCEREJECT", "0")],
        );
        let pebble = Pebble {
            pebble,
            dns: dns_child,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            https_ca,
            https_ca_pem: ca.pem(),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            _dir: dir,
        };
        for port in [listen, management] {
            wait_listening(port);
        }
        pebble
    }

    /// The root pebble issues under (regenerated at every start).
    pub async fn issuing_root(&self) -> String {
        let config = super::tls::client_config(&self.https_ca_pem, &[b"http/1.1"]);
        let seen = super::tls::get(&config, self.management, "127.0.0.1", "/roots/0")
            .await
            .expect("pebble's root");
        assert_eq!(seen.status, 200, "{}", seen.body);
        seen.body
    }

    /// The config for clients that check what pebble issued.
    pub async fn client_config(&self) -> Arc<rustls::ClientConfig> {
        super::tls::client_config(&self.issuing_root().await, &[b"http/1.1"])
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pebble did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
