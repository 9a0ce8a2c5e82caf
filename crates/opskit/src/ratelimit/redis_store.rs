//! The GCRA step in Redis: one Lua script, run atomically, one round trip per
//! decision (`EVALSHA`, loaded again on `NOSCRIPT`), Redis's clock for every
//! replica.

use super::gcra::{Decision, Quota};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// KEYS[1]: the key. ARGV: interval µs, tolerance (burst · interval) µs,
/// burst. Returns {allowed, reset µs, remaining}.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local remaining = math.floor((now + tolerance - new_tat) / interval)
if remaining > burst then remaining = burst end
return {1, new_tat - now, remaining}
";

pub(crate) struct RedisStore {
    client: redis::Client,
    script: redis::Script,
    timeout: Duration,
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
}

impl RedisStore {
    pub(crate) fn new(url: &str, timeout: Duration) -> Option<Self> {
        match redis::Client::open(url) {
            Ok(client) => Some(Self {
                client,
                script: redis::Script::new(SCRIPT),
                timeout,
                connection: tokio::sync::OnceCell::new(),
            }),
            Err(e) => {
                tracing::error!(error = %crate::redact_urls(&e.to_string()), "OPSKIT_RATE_LIMIT_REDIS_URL is unusable; rate limits stay in memory");
                None
            }
        }
    }

    /// One decision, or why Redis could not give it within the timeout.
    pub(crate) async fn decide(&self, key: &str, quota: &Quota) -> Result<Decision, String> {
        let work = async {
            let conn = self
                .connection
                .get_or_try_init(|| {
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(self.timeout))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1);
                    self.client.get_connection_manager_with_config(config)
                })
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let mut conn = conn.clone();
            let (allowed, reset, remaining): (i64, i64, i64) = self
                .script
                .key(key)
                .arg(quota.interval_us())
                .arg(quota.tolerance_us())
                .arg(quota.burst)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Decision {
                allowed: allowed == 1,
                remaining: u32::try_from(remaining.max(0)).unwrap_or(0),
                reset_us: u64::try_from(reset.max(0)).unwrap_or(0),
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}

/// Logs a store failure at warn, at most once every 10 s (each one is counted).
pub(crate) fn warn_failure(reason: &str, allowed: bool) {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(Instant::now());
        tracing::warn!(
            reason = %crate::redact_urls(reason),
            policy = if allowed { "fail-open: admitted" } else { "fail-closed: refused" },
            "the rate limiter's Redis cannot decide (counted in opskit_rate_limit_decisions_total; next warning in 10 s at the earliest)"
        );
    }
}
