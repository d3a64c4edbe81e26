//! TLS for tests: a private CA that issues server and client certificates
//! (rcgen), an HTTPS client that reports which certificate it was served
//! (rustls + hyper), and an HTTPS backend that can require a client
//! certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A private certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// The leaf certificate, DER: what a client compares with what it was
    /// served.
    pub der: Vec<u8>,
}

impl Leaf {
    /// Writes `{stem}.crt` and `{stem}.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// Replaces `{stem}.crt` and `{stem}.key` in `dir` atomically (written
    /// aside, renamed into place), as a deploy tool or certbot would.
    pub fn replace(&self, dir: &Path, stem: &str) {
        for (ext, text) in [("key", &self.key_pem), ("crt", &self.cert_pem)] {
            let tmp = dir.join(format!("{stem}.{ext}.incoming"));
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, dir.join(format!("{stem}.{ext}"))).expect("rename");
        }
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/file`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).expect("write CA");
        path
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        self.issue(&[cn], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// A client config trusting the PEM roots given, offering `alpn`. It does
/// not resume sessions: every connection is a full handshake, which shows
/// the certificate served now (a resumed session reports the one it began
/// with).
pub fn client_config(roots_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.expect("root PEM")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The same config, resuming sessions as browsers do.
pub fn resuming(config: &Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    let mut config = (**config).clone();
    config.resumption = rustls::client::Resumption::default();
    Arc::new(config)
}

/// What an HTTPS exchange saw.
#[derive(Debug)]
pub struct Seen {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
    /// The leaf certificate the server presented, DER.
    pub leaf: Vec<u8>,
}

/// One keep-alive HTTPS/1.1 connection.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    leaf: Vec<u8>,
    host: String,
}

impl Conn {
    /// Connects to `addr`, sending `sni` and checking the certificate
    /// against it.
    pub async fn open(
        config: &Arc<rustls::ClientConfig>,
        addr: SocketAddr,
        sni: &str,
    ) -> anyhow::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(sni.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            leaf,
            host: sni.to_string(),
        })
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Seen> {
        let req = Request::get(path)
            .header("host", &self.host)
            .body(Empty::new())?;
        let resp =
            tokio::time::timeout(Duration::from_secs(20), self.sender.send_request(req)).await??;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Seen {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            leaf: self.leaf.clone(),
        })
    }
}

/// One GET on a new connection (a full handshake each time).
pub async fn get(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    sni: &str,
    path: &str,
) -> anyhow::Result<Seen> {
    let mut conn =
        tokio::time::timeout(Duration::from_secs(20), Conn::open(config, addr, sni)).await??;
    conn.get(path).await
}

/// An HTTPS backend. Answers `tls-backend` with `x-client-cert: <CN>` when
/// the client presented a certificate, `none` otherwise.
pub struct TlsBackend {
    pub addr: SocketAddr,
    /// Handshakes completed.
    pub handshakes: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    pub health_checks: Arc<AtomicU64>,
    pub last_headers: Arc<Mutex<Option<HeaderMap>>>,
    task: JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    /// Serves with `leaf`; with `client_ca`, a client certificate issued by
    /// it is required.
    pub async fn start(leaf: &Leaf, client_ca: Option<&Ca>) -> TlsBackend {
        let chain = vec![CertificateDer::from(leaf.der.clone())];
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
        let builder = rustls::ServerConfig::builder();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from(ca.issuer.der().to_vec()))
                    .expect("client CA");
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let handshakes = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let health_checks = Arc::new(AtomicU64::new(0));
        let last_headers: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
        let (h, r, hc, lh) = (
            handshakes.clone(),
            requests.clone(),
            health_checks.clone(),
            last_headers.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (h, r, hc, lh) = (h.clone(), r.clone(), hc.clone(), lh.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    h.fetch_add(1, SeqCst);
                    let cn = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|_| "present".to_string())
                        .unwrap_or_else(|| "none".to_string());
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (r, hc, lh, cn) = (r.clone(), hc.clone(), lh.clone(), cn.clone());
                        async move {
                            if req.uri().path() == "/healthz" {
                                hc.fetch_add(1, SeqCst);
                            } else {
                                r.fetch_add(1, SeqCst);
                                *lh.lock().unwrap() = Some(req.headers().clone());
                            }
                            let mut resp =
                                Response::new(Full::new(Bytes::from_static(b"tls-backend")));
                            *resp.status_mut() = StatusCode::OK;
                            resp.headers_mut()
                                .insert("x-client-cert", cn.parse().expect("header"));
                            Ok::<_, std::io::Error>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsBackend {
            addr,
            handshakes,
            requests,
            health_checks,
            last_headers,
            task,
        }
    }
}

/// Runs `curl` with `args`; (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is needed by the TLS tests: run tests/install-deps.sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
