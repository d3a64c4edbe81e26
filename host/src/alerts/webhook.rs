//! Sends alerts to an Alertmanager-compatible endpoint (`POST
//! /api/v2/alerts`): firing alerts with `startsAt`, resolved ones with
//! `endsAt` as well.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::{AlertState, AlertView};

/// One alert in Alertmanager's v2 API format.
#[derive(Serialize, Debug, Clone)]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl PostableAlert {
    pub fn from_view(v: &AlertView, generator_url: &str) -> Self {
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), v.summary.clone());
        annotations.insert("value".to_string(), v.value.to_string());
        annotations.insert("threshold".to_string(), v.threshold.to_string());
        PostableAlert {
            labels: v.labels.clone(),
            annotations,
            starts_at: humantime::format_rfc3339_millis(v.started).to_string(),
            ends_at: match v.state {
                AlertState::Resolved => v
                    .ended
                    .map(|e| humantime::format_rfc3339_millis(e).to_string()),
                _ => None,
            },
            generator_url: generator_url.to_string(),
        }
    }
}

#[derive(Clone)]
pub struct Webhook {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Webhook {
    fn default() -> Self {
        Webhook {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Webhook {
    pub async fn post(
        &self,
        url: &str,
        alerts: &[PostableAlert],
        timeout: Duration,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(alerts).map_err(|e| e.to_string())?;
        let req = Request::post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad webhook request: {e}"))?;
        let send = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        };
        tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }
}
