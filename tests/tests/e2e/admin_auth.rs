//! The admin API beyond loopback: a bearer token on every admin route,
//! read from the config or a file, never shown back.

use http::Method;

use crate::support::backend::TestBackend;
use crate::support::backends_toml;
use crate::support::client::request;
use crate::support::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_wants_the_bearer_token() {
    let b = TestBackend::start("b").await;
    let secret = "s3cret-admin-token-for-tests";
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{secret}\n")).expect("token file");
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [admin]\naddress = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n\
         [[routes]]\nupstream = \"app\"\n[upstreams.app]\n{}\n",
        token_file.display(),
        backends_toml(&[&b], &[])
    ));
    for path in ["/metrics", "/healthz", "/admin/backends", "/admin/config"] {
        let url = proxy.admin_url(path);
        for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0")] {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| ("authorization", a)).into_iter().collect();
            let r = request(Method::GET, &url, &headers, "")
                .await
                .expect("answer");
            assert_eq!(r.status, 401, "{path} with {auth:?}");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"switchyard admin\"")
            );
        }
        let bearer = format!("Bearer {secret}");
        let r = request(Method::GET, &url, &[("authorization", &bearer)], "")
            .await
            .expect("answer");
        assert_eq!(r.status, 200, "{path}");
        assert!(!r.body.contains(secret), "{path} never shows the token");
    }
    // The data plane is not affected.
    assert_eq!(
        crate::support::get(&proxy.url("/"))
            .await
            .expect("proxied")
            .status,
        200
    );
}
