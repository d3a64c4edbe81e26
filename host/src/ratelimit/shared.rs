//! A limit's state shared in Redis: one GCRA "theoretical arrival time"
//! per key, read and advanced by one atomic script on Redis's own clock
//! (so instances need no synchronised clocks), and expiring once the key
//! would be back at full burst.

use std::time::Duration;

use crate::redis_link::Link;

/// GCRA: KEYS[1] the key; ARGV[1] the emission interval and ARGV[2] the
/// burst tolerance, in microseconds. Returns 0 when the request passes,
/// else the microseconds until it would.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if allow_at > now then
  return allow_at - now
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return 0
";

pub struct Shared {
    link: Link,
    script: redis::Script,
    prefix: String,
    interval_us: u64,
    tolerance_us: u64,
}

impl Shared {
    pub fn new(
        url: &str,
        name: &str,
        interval: Duration,
        burst: u32,
        timeout: Duration,
        fallback: &'static str,
    ) -> Shared {
        let interval_us = interval.as_micros().max(1) as u64;
        Shared {
            link: Link::new(
                url,
                format!("rate limit \"{name}\""),
                fallback,
                timeout,
                metrics::counter!("switchyard_rate_limit_redis_errors_total", "limit" => name.to_string()),
            ),
            script: redis::Script::new(GCRA),
            prefix: format!("switchyard:rl:{name}:"),
            interval_us,
            tolerance_us: interval_us * u64::from(burst.saturating_sub(1)),
        }
    }

    /// `Some(None)`: passes; `Some(Some(wait))`: over the limit;
    /// `None`: Redis did not answer.
    pub async fn check(&self, key: &str) -> Option<Option<Duration>> {
        let mut invocation = self.script.key(format!("{}{key}", self.prefix));
        invocation.arg(self.interval_us).arg(self.tolerance_us);
        let wait: u64 = self.link.invoke(&invocation).await?;
        Some((wait > 0).then(|| Duration::from_micros(wait)))
    }
}
