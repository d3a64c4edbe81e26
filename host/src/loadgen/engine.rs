//! The bench engine: turns generator operations into HTTP/1.1 requests on
//! pooled keep-alive connections, schedules them by the closed or the open
//! model through the run's phases, and applies timeouts, retries with
//! backoff and jitter, and a circuit breaker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;

use super::stats::Recorder;
use crate::config::PhaseKind;
use crate::http1::client::{self as upstream, ConnPool, UpstreamError};
use crate::plugins::GeneratorPlugin;
use crate::plugins::bindings::generate::{BatchContext, IdSource, OpKind, OpResult, Operation};

/// Where load goes: `http://host:port/base`.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub authority: Authority,
    host: HeaderValue,
    /// Prefix of every operation's path, without a trailing slash.
    base: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid target URL \"{url}\": {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "invalid target URL \"{url}\": https is not supported; use http://"
                ));
            }
            _ => {
                return Err(format!(
                    "invalid target URL \"{url}\": expected http://host:port/"
                ));
            }
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("invalid target URL \"{url}\": no host"))?;
        let authority = if authority.port().is_some() {
            authority
        } else {
            format!("{}:80", authority.host())
                .parse()
                .map_err(|e| format!("invalid target URL \"{url}\": {e}"))?
        };
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| format!("invalid target URL \"{url}\": {e}"))?;
        Ok(Target {
            url: url.to_string(),
            authority,
            host,
            base: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// Fails fast when nothing listens at the target.
    pub async fn probe(&self) -> Result<(), String> {
        let connect = tokio::net::TcpStream::connect(self.authority.as_str());
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("target {} is unreachable: {e}", self.url)),
            Err(_) => Err(format!(
                "target {} is unreachable: no connection within 3s",
                self.url
            )),
        }
    }
}

/// One phase resolved to a straight line of levels over time.
#[derive(Clone, Debug)]
pub struct Segment {
    pub kind: PhaseKind,
    pub duration: Duration,
    pub from: f64,
    pub to: f64,
}

/// The run's phases laid end to end. A level is a rate (open model) or a
/// number of workers (closed model).
#[derive(Clone, Debug)]
pub struct Schedule {
    pub segments: Vec<Segment>,
}

impl Schedule {
    pub fn total(&self) -> Duration {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// The highest level of any phase.
    pub fn peak(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| s.from.max(s.to))
            .fold(0.0, f64::max)
    }

    /// The level at `t` into the run; `None` once the run is over.
    pub fn level_at(&self, t: Duration) -> Option<f64> {
        let mut start = Duration::ZERO;
        for s in &self.segments {
            if t < start + s.duration {
                let x = (t - start).as_secs_f64() / s.duration.as_secs_f64();
                return Some(s.from + (s.to - s.from) * x);
            }
            start += s.duration;
        }
        None
    }

    /// Operations the open model should have started by `t`.
    pub fn count_by(&self, t: Duration) -> f64 {
        let mut start = Duration::ZERO;
        let mut count = 0.0;
        for s in &self.segments {
            let d = s.duration.as_secs_f64();
            let x = (t.saturating_sub(start)).as_secs_f64().min(d);
            count += s.from * x + (s.to - s.from) * x * x / (2.0 * d);
            if t < start + s.duration {
                break;
            }
            start += s.duration;
        }
        count
    }

    /// When the open model's operation `n` (from 0) is meant to start, or
    /// `None` when it falls after the end of the run.
    pub fn intended(&self, n: u64) -> Option<Duration> {
        let mut start = 0.0;
        let mut before = 0.0;
        let n = n as f64;
        for s in &self.segments {
            let d = s.duration.as_secs_f64();
            let area = (s.from + s.to) / 2.0 * d;
            if n < before + area {
                let m = n - before;
                let a = (s.to - s.from) / (2.0 * d);
                let b = s.from;
                let x = if a.abs() < 1e-12 {
                    m / b
                } else {
                    (-b + (b * b + 4.0 * a * m).max(0.0).sqrt()) / (2.0 * a)
                };
                return Some(Duration::from_secs_f64(start + x.clamp(0.0, d)));
            }
            before += area;
            start += d;
        }
        None
    }
}

/// How failures are handled.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Bounds each attempt (connect, request, whole response).
    pub timeout: Duration,
    /// Extra attempts for a retryable failure.
    pub retries: u32,
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Retry operations the generator did not mark idempotent too.
    pub retry_non_idempotent: bool,
    /// Consecutive failed attempts that open the breaker; 0 is off.
    pub breaker_failures: u32,
    /// How long the breaker stays open before letting one probe through.
    pub breaker_open_for: Duration,
}

impl Policy {
    /// Exponential backoff with full jitter before retry `n` (from 1).
    fn backoff(&self, n: u32) -> Duration {
        let cap = self
            .backoff
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(self.backoff_max);
        cap.mul_f64(rand::random::<f64>())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// Opens after a run of failed attempts, half-opens after a timeout to let
/// one probe through; the probe's outcome closes or reopens it.
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<(BreakerState, u32)>,
    pub opened: AtomicU64,
    pub rejected: AtomicU64,
}

impl Breaker {
    fn new(threshold: u32, open_for: Duration) -> Self {
        Breaker {
            threshold,
            open_for,
            state: Mutex::new((BreakerState::Closed, 0)),
            opened: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Whether an attempt may go out now.
    fn allow(&self) -> bool {
        if self.threshold == 0 {
            return true;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let allowed = match s.0 {
            BreakerState::Closed => true,
            BreakerState::Open { until } if Instant::now() >= until => {
                s.0 = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        };
        if !allowed {
            self.rejected.fetch_add(1, Relaxed);
        }
        allowed
    }

    fn record(&self, failed: bool) {
        if self.threshold == 0 {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            *s = (BreakerState::Closed, 0);
            return;
        }
        s.1 += 1;
        if s.0 == BreakerState::HalfOpen || (s.0 == BreakerState::Closed && s.1 >= self.threshold) {
            s.0 = BreakerState::Open {
                until: Instant::now() + self.open_for,
            };
            self.opened.fetch_add(1, Relaxed);
        }
    }
}

/// Operations from the generator, and results on their way back to it.
struct Feeder {
    plugin: GeneratorPlugin,
    queue: VecDeque<Operation>,
    results: Vec<OpResult>,
    issued: u64,
    batch: u32,
}

impl Feeder {
    fn next(&mut self, in_flight: u32) -> Result<Operation, String> {
        if let Some(op) = self.queue.pop_front() {
            return Ok(op);
        }
        self.flush()?;
        let ctx = BatchContext {
            now_ms: crate::clock::now_ms(),
            issued: self.issued,
            in_flight,
        };
        let ops = self
            .plugin
            .next_batch(ctx, self.batch)
            .map_err(|f| f.to_string())?;
        self.issued += ops.len() as u64;
        self.queue.extend(ops);
        self.queue
            .pop_front()
            .ok_or_else(|| "the generator produced no operations".to_string())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.results.is_empty() {
            return Ok(());
        }
        let results = std::mem::take(&mut self.results);
        self.plugin.observe(&results).map_err(|f| f.to_string())
    }
}

/// An operation ready to send: its request encoded once, head and body.
struct Prepared {
    kind: OpKind,
    name: String,
    path: String,
    method: Method,
    request: Vec<u8>,
    retryable: bool,
    capture: Option<IdSource>,
}

fn kind_name(op: &Operation) -> String {
    match op.kind {
        OpKind::Custom if !op.name.is_empty() => op.name.clone(),
        kind => kind.as_str().into(),
    }
}

/// Why an attempt got no usable response.
enum Failure {
    Connect(String),
    Io(String),
    Timeout,
    Invalid(String),
}

impl Failure {
    fn cause(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Io(_) => "io",
            Failure::Timeout => "timeout",
            Failure::Invalid(_) => "invalid-response",
        }
    }

    fn message(&self, timeout: Duration) -> String {
        match self {
            Failure::Connect(m) | Failure::Io(m) | Failure::Invalid(m) => m.clone(),
            Failure::Timeout => format!(
                "no complete response within {}",
                humantime::format_duration(timeout)
            ),
        }
    }
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Connect(_) | UpstreamError::Tls(_) => Failure::Connect(e.to_string()),
            UpstreamError::Parse(_) => Failure::Invalid(e.to_string()),
            _ => Failure::Io(e.to_string()),
        }
    }
}

/// Statuses worth another attempt: the target was overloaded or a gateway
/// in front of it failed.
fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Largest response body kept to find a created entity's id.
const MAX_CAPTURE: usize = 1 << 20;

/// What one run shares between its tasks.
pub struct Engine {
    target: Target,
    pool: Arc<ConnPool>,
    feeder: Mutex<Feeder>,
    pub recorder: Recorder,
    pub breaker: Breaker,
    policy: Policy,
    /// Operations taken so far, against `cap`.
    taken: AtomicU64,
    cap: u64,
    in_flight: AtomicU32,
    stop: AtomicBool,
    /// Open model: operations that started more than `LATE` behind schedule.
    pub late: AtomicU64,
    pub max_lag_us: AtomicU64,
    pub missed: AtomicU64,
}

/// How far behind schedule an open-model start may be before it counts as late.
pub const LATE: Duration = Duration::from_millis(10);

impl Engine {
    pub fn new(
        target: Target,
        plugin: GeneratorPlugin,
        policy: Policy,
        batch: u32,
        cap: Option<u64>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            target,
            pool: Arc::new(ConnPool::default()),
            feeder: Mutex::new(Feeder {
                plugin,
                queue: VecDeque::new(),
                results: Vec::new(),
                issued: 0,
                batch: batch.max(1),
            }),
            recorder: Recorder::default(),
            breaker: Breaker::new(policy.breaker_failures, policy.breaker_open_for),
            policy,
            taken: AtomicU64::new(0),
            cap: cap.unwrap_or(u64::MAX),
            in_flight: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            late: AtomicU64::new(0),
            max_lag_us: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        })
    }

    /// Claims the next operation against the cap.
    fn claim(&self) -> bool {
        !self.stop.load(Relaxed) && self.taken.fetch_add(1, Relaxed) < self.cap
    }

    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }

    fn feeder(&self) -> std::sync::MutexGuard<'_, Feeder> {
        self.feeder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the last results to the generator.
    pub fn finish(&self) -> Result<(), String> {
        self.feeder().flush()
    }

    /// Checks an operation and encodes it as an HTTP/1.1 request.
    fn prepare(&self, op: Operation) -> Result<Prepared, String> {
        let name = kind_name(&op);
        let method = Method::from_bytes(op.method.as_bytes())
            .map_err(|_| format!("invalid method \"{}\"", op.method))?;
        // A request target is visible ASCII (RFC 9112 §3.2).
        if op.path.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(format!("invalid path \"{}\"", op.path.escape_debug()));
        }
        let body = op.body.as_deref().unwrap_or_default();
        let mut request = Vec::with_capacity(128 + op.path.len() + body.len());
        request.extend_from_slice(method.as_str().as_bytes());
        request.push(b' ');
        request.extend_from_slice(self.target.base.as_bytes());
        if !op.path.starts_with('/') {
            request.push(b'/');
        }
        request.extend_from_slice(op.path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        request.extend_from_slice(self.target.host.as_bytes());
        request.extend_from_slice(b"\r\n");
        for h in &op.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("invalid header name \"{}\"", h.name))?;
            HeaderValue::from_str(&h.value)
                .map_err(|_| format!("invalid value for header {}", h.name))?;
            if name == http::header::HOST || name == http::header::CONTENT_LENGTH {
                continue;
            }
            request.extend_from_slice(name.as_str().as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(h.value.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        if op.body.is_some() {
            request.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        Ok(Prepared {
            retryable: op.idempotent || self.policy.retry_non_idempotent,
            kind: op.kind,
            name,
            path: op.path,
            method,
            request,
            capture: op.capture_id,
        })
    }

    /// One exchange: the status and the captured id, if any.
    async fn attempt(&self, op: &Prepared) -> Result<(u16, Option<String>), Failure> {
        let header = match &op.capture {
            Some(IdSource::Header(name)) => Some(name.as_str()),
            _ => None,
        };
        let (conn, head) = upstream::send_encoded(
            &self.pool,
            &self.target.authority,
            self.policy.timeout,
            &op.request,
            &op.method,
            header,
        )
        .await?;
        let status = head.status;
        let success = (200..300).contains(&status);
        let mut id = head.captured.filter(|_| success).and_then(|v| {
            v.trim_end_matches('/')
                .rsplit('/')
                .next()
                .map(str::to_string)
        });
        let field = match &op.capture {
            Some(IdSource::JsonField(f)) if success => Some(f.as_str()),
            _ => None,
        };
        let mut body =
            upstream::upstream_body(conn, head.framing, head.keep_alive, self.pool.clone(), ());
        let mut kept = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| Failure::Io(format!("reading the response body: {e}")))?;
            if let (Some(_), Ok(data)) = (field, frame.into_data())
                && kept.len() + data.len() <= MAX_CAPTURE
            {
                kept.extend_from_slice(&data);
            }
        }
        if let Some(field) = field {
            id = serde_json::from_slice::<serde_json::Value>(&kept)
                .ok()
                .and_then(|v| match v.get(field)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
        }
        Ok((status, id))
    }

    /// Runs one operation to its final outcome and records it; `started` is
    /// when it began (closed model) or was meant to begin (open model).
    /// `now` is the time at hand when the caller already read the clock.
    async fn run_op(&self, op: Operation, started: Instant, now: Option<Instant>) {
        let op = match self.prepare(op) {
            Ok(op) => op,
            Err(e) => {
                let cause = ("invalid-operation".to_string(), e);
                self.recorder
                    .operation("invalid", started.elapsed(), Some(cause));
                return;
            }
        };
        self.in_flight.fetch_add(1, Relaxed);
        let mut retries = 0;
        let mut attempt_at = now.unwrap_or_else(Instant::now);
        let mut end = attempt_at;
        let (status, id, error) = loop {
            if !self.breaker.allow() {
                let why = "the circuit breaker is open after repeated failures";
                break (0, None, Some(("circuit-open".to_string(), why.to_string())));
            }
            let outcome = tokio::time::timeout(self.policy.timeout, self.attempt(&op))
                .await
                .unwrap_or(Err(Failure::Timeout));
            let (failed, retryable) = match &outcome {
                Ok((status, _)) => (*status >= 500, retryable_status(*status)),
                Err(_) => (true, true),
            };
            self.breaker.record(failed);
            end = Instant::now();
            self.recorder
                .attempt(end - attempt_at, !failed, retries > 0);
            if retryable && op.retryable && retries < self.policy.retries {
                retries += 1;
                tokio::time::sleep(self.policy.backoff(retries)).await;
                attempt_at = Instant::now();
                end = attempt_at;
                continue;
            }
            break match outcome {
                Ok((status, id)) if (200..400).contains(&status) => (status, id, None),
                Ok((status, _)) => (
                    status,
                    None,
                    Some((format!("http-{status}"), format!("status {status}"))),
                ),
                Err(f) => (
                    0,
                    None,
                    Some((f.cause().to_string(), f.message(self.policy.timeout))),
                ),
            };
        };
        self.in_flight.fetch_sub(1, Relaxed);
        let latency = end.saturating_duration_since(started);
        let result = OpResult {
            kind: op.kind,
            path: op.path,
            status,
            latency_us: latency.as_micros() as u64,
            created_id: id,
            error: error.as_ref().map(|(_, m)| m.clone()),
        };
        self.recorder.operation(&op.name, latency, error);
        self.feeder().results.push(result);
    }

    fn next_op(&self) -> Result<Operation, String> {
        let in_flight = self.in_flight.load(Relaxed);
        self.feeder().next(in_flight)
    }

    /// A generator that failed: the operation it owed fails (closed).
    fn generator_failed(&self, started: Instant, why: String) {
        self.recorder.operation(
            "generator",
            started.elapsed(),
            Some(("generator".into(), why)),
        );
    }

    /// Closed model: worker `index` runs while the schedule's level is above it.
    pub async fn closed_worker(self: Arc<Self>, index: u32, schedule: Arc<Schedule>, t0: Instant) {
        loop {
            let started = Instant::now();
            let Some(level) = schedule.level_at(started - t0) else {
                return;
            };
            if f64::from(index) >= level.ceil().max(1.0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            if !self.claim() {
                return;
            }
            match self.next_op() {
                Ok(op) => self.run_op(op, started, Some(started)).await,
                Err(why) => {
                    self.generator_failed(started, why);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Open model: starts operation `n` at its intended time, at most
    /// `max_in_flight` at once. An operation that cannot start on time still
    /// starts (late, counted) and its latency runs from the intended time;
    /// those the run ends before are counted as missed, failed operations.
    pub async fn open_dispatch(
        self: Arc<Self>,
        schedule: Arc<Schedule>,
        max_in_flight: u32,
        t0: Instant,
    ) {
        let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight as usize));
        let end = t0 + schedule.total();
        let mut tasks = tokio::task::JoinSet::new();
        let mut n = 0u64;
        while let Some(offset) = schedule.intended(n) {
            let intended = t0 + offset;
            tokio::time::sleep_until(intended.into()).await;
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p,
                () = tokio::time::sleep_until(end.into()) => break,
            };
            let Ok(permit) = permit else { break };
            if !self.claim() {
                break;
            }
            let lag = intended.elapsed();
            if lag > LATE {
                self.late.fetch_add(1, Relaxed);
            }
            self.max_lag_us.fetch_max(lag.as_micros() as u64, Relaxed);
            let engine = self.clone();
            let op = self.next_op();
            tasks.spawn(async move {
                let _permit = permit;
                match op {
                    Ok(op) => engine.run_op(op, intended, None).await,
                    Err(why) => engine.generator_failed(intended, why),
                }
            });
            n += 1;
            while tasks.try_join_next().is_some() {}
        }
        // Operations the schedule owed by the end that never started.
        let owed = schedule.count_by(schedule.total()).floor() as u64;
        let started = n;
        if !self.stop.load(Relaxed) && self.taken.load(Relaxed) < self.cap {
            while n < owed {
                let offset = schedule.intended(n).unwrap_or(schedule.total());
                let waited = end.saturating_duration_since(t0 + offset);
                self.recorder.operation(
                    "not-started",
                    waited,
                    Some((
                        "not-started".into(),
                        "the run ended before a slot in flight was free".into(),
                    )),
                );
                n += 1;
            }
        }
        self.missed.store(n - started, Relaxed);
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(kind: PhaseKind, secs: u64, from: f64, to: f64) -> Segment {
        Segment {
            kind,
            duration: Duration::from_secs(secs),
            from,
            to,
        }
    }

    #[test]
    fn open_schedule_follows_ramps_steady_phases_and_spikes() {
        // Ramp 0 → 100/s over 10 s (500 operations), hold 100/s for 10 s
        // (1000), spike to 1000/s for 1 s (1000).
        let s = Schedule {
            segments: vec![
                seg(PhaseKind::Ramp, 10, 0.0, 100.0),
                seg(PhaseKind::Steady, 10, 100.0, 100.0),
                seg(PhaseKind::Spike, 1, 1000.0, 1000.0),
            ],
        };
        assert_eq!(s.total(), Duration::from_secs(21));
        assert!((s.count_by(s.total()) - 2500.0).abs() < 1e-6);
        // Halfway up the ramp, a quarter of its operations have started.
        assert!((s.count_by(Duration::from_secs(5)) - 125.0).abs() < 1e-6);
        let at = |n| s.intended(n).map(|d| d.as_secs_f64());
        assert!((at(125).unwrap() - 5.0).abs() < 1e-6);
        assert!((at(500).unwrap() - 10.0).abs() < 1e-6);
        assert!((at(1000).unwrap() - 15.0).abs() < 1e-6);
        assert!((at(2000).unwrap() - 20.5).abs() < 1e-6);
        assert_eq!(at(2500), None);
        // Intended times never go backwards.
        let times: Vec<f64> = (0..2500).filter_map(at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(s.level_at(Duration::from_secs(5)), Some(50.0));
        assert_eq!(s.level_at(Duration::from_secs(21)), None);
    }

    #[test]
    fn breaker_opens_after_the_threshold_and_probes_after_the_timeout() {
        let b = Breaker::new(3, Duration::from_millis(20));
        for _ in 0..3 {
            assert!(b.allow());
            b.record(true);
        }
        assert!(!b.allow(), "open after 3 failures");
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.allow(), "one probe after the timeout");
        assert!(!b.allow(), "only one probe while half-open");
        b.record(false);
        assert!(b.allow(), "a good probe closes it");
        assert_eq!(b.opened.load(Relaxed), 1);
        assert_eq!(b.rejected.load(Relaxed), 2);
    }
}
