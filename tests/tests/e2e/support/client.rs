//! A plain HTTP/1.1 client for tests.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as text (lossy).
    pub body: String,
    /// The body's bytes as received (still content-coded, if it was).
    pub bytes: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which test backend answered.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
}

/// A client with a connection pool, for tests that send many requests.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

impl Default for Http {
    fn default() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl Http {
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<Resp> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string())))?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.0.request(req)).await??;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            bytes: body,
        })
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Resp> {
        self.request(Method::GET, url, &[], "").await
    }
}

/// One request on a fresh connection.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<Resp> {
    Http::default().request(method, url, headers, body).await
}

pub async fn get(url: &str) -> anyhow::Result<Resp> {
    request(Method::GET, url, &[], "").await
}
