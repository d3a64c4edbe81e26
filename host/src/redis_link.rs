//! One Redis endpoint as a part of the proxy uses it (the cache's shared
//! tier, shared rate limits): the connection is made on demand and tried
//! again at most once a second while Redis is down; every call is bounded
//! by a timeout; a failure is counted and logged once per outage, and the
//! return is logged too. A caller gets `None` for any failure and decides
//! what that means for its request, so Redis trouble never hangs one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

/// Wait between connection attempts while Redis is down.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

pub struct Link {
    url: String,
    /// Who uses it, for logs: `cache tier`, `rate limit "api"`.
    user: String,
    /// What happens meanwhile, for the outage log line.
    fallback: &'static str,
    timeout: Duration,
    client: Option<redis::Client>,
    conn: Mutex<Option<ConnectionManager>>,
    last_attempt: std::sync::Mutex<Option<Instant>>,
    down: AtomicBool,
    errors: AtomicU64,
    error_counter: metrics::Counter,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("url", &self.url)
            .field("user", &self.user)
            .finish()
    }
}

impl Link {
    pub fn new(
        url: &str,
        user: String,
        fallback: &'static str,
        timeout: Duration,
        error_counter: metrics::Counter,
    ) -> Link {
        let client = match redis::Client::open(url) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{user}: Redis URL {url}: {e}; {fallback}");
                None
            }
        };
        Link {
            url: url.to_string(),
            user,
            fallback,
            timeout,
            client,
            conn: Mutex::new(None),
            last_attempt: std::sync::Mutex::new(None),
            down: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            error_counter,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Failed calls so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Some(c.clone());
        }
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < RECONNECT_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let client = self.client.as_ref()?;
        match tokio::time::timeout(
            self.timeout * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        {
            Ok(Ok(c)) => {
                *conn = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no connection within {:?}", self.timeout * 2));
                None
            }
        }
    }

    fn failed(&self, why: &str) {
        self.errors.fetch_add(1, Relaxed);
        self.error_counter.increment(1);
        if !self.down.swap(true, Relaxed) {
            tracing::warn!(
                "{} {} unavailable ({why}); {} until it answers",
                self.user,
                self.url,
                self.fallback
            );
        }
    }

    fn succeeded(&self) {
        if self.down.swap(false, Relaxed) {
            tracing::info!("{} {} is back", self.user, self.url);
        }
    }

    async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Option<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => {
                self.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {:?}", self.timeout));
                None
            }
        }
    }

    /// Runs one command within the timeout; `None` on any failure.
    pub async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Option<T> {
        let mut conn = self.connection().await?;
        self.bounded(cmd.query_async::<T>(&mut conn)).await
    }

    /// Runs a Lua script (by its SHA, loading it on first use) within the
    /// timeout; `None` on any failure.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        let mut conn = self.connection().await?;
        self.bounded(script.invoke_async::<T>(&mut conn)).await
    }
}
