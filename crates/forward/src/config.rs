//! Delivery settings and the retry schedule.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Settings of the webhook delivery worker. Durations are in milliseconds so the struct can sit
/// in the server's TOML config as is (`[webhooks]`), and every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// How often idle endpoints look for new events and the endpoint table is re-read.
    pub poll_interval_ms: u64,
    /// First retry delay after a failed attempt.
    pub initial_backoff_ms: u64,
    /// Upper bound of the retry delay. There is no give-up: an outage must lose nothing.
    pub max_backoff_ms: u64,
    /// TCP + TLS connect timeout.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout (connect, send, response headers).
    pub request_timeout_ms: u64,
    /// How many log entries one read fetches.
    pub batch_size: usize,
    /// `User-Agent` of deliveries.
    pub user_agent: String,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            poll_interval_ms: 500,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            batch_size: 100,
            user_agent: format!("idbridge-webhooks/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

impl DeliveryConfig {
    /// Applies `IDBRIDGE_WEBHOOKS_<FIELD>` overrides from the process environment (e.g.
    /// `IDBRIDGE_WEBHOOKS_MAX_BACKOFF_MS`), then validates. Unparsable values are reported,
    /// not ignored.
    pub fn apply_env(&mut self) -> Result<(), String> {
        self.apply_vars(std::env::vars())
    }

    /// Same as [`Self::apply_env`] over given `(name, value)` pairs (the server's config
    /// loader passes its own view of the environment).
    pub fn apply_vars<I>(&mut self, vars: I) -> Result<(), String>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        for (name, value) in vars {
            self.apply_env_var(&name, &value)?;
        }
        self.validate()
    }

    /// Applies one variable if it is one of ours: `Ok(true)` when consumed, `Ok(false)` when
    /// the name is not a webhook setting, `Err` when the value does not parse.
    pub fn apply_env_var(&mut self, name: &str, value: &str) -> Result<bool, String> {
        let slot = match name {
            "IDBRIDGE_WEBHOOKS_POLL_INTERVAL_MS" => &mut self.poll_interval_ms,
            "IDBRIDGE_WEBHOOKS_INITIAL_BACKOFF_MS" => &mut self.initial_backoff_ms,
            "IDBRIDGE_WEBHOOKS_MAX_BACKOFF_MS" => &mut self.max_backoff_ms,
            "IDBRIDGE_WEBHOOKS_CONNECT_TIMEOUT_MS" => &mut self.connect_timeout_ms,
            "IDBRIDGE_WEBHOOKS_REQUEST_TIMEOUT_MS" => &mut self.request_timeout_ms,
            "IDBRIDGE_WEBHOOKS_BATCH_SIZE" => {
                self.batch_size = parse(name, value)?;
                return Ok(true);
            }
            _ => return Ok(false),
        };
        *slot = parse(name, value)?;
        Ok(true)
    }

    /// Rejects settings that would spin or never send.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval_ms == 0 {
            return Err("webhooks.poll_interval_ms must be at least 1".into());
        }
        if self.initial_backoff_ms == 0 || self.max_backoff_ms < self.initial_backoff_ms {
            return Err("webhooks: need 0 < initial_backoff_ms <= max_backoff_ms".into());
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err("webhooks: timeouts must be at least 1 ms".into());
        }
        if self.batch_size == 0 {
            return Err("webhooks.batch_size must be at least 1".into());
        }
        Ok(())
    }

    /// The retry schedule these settings describe.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(self.initial_backoff_ms),
            max: Duration::from_millis(self.max_backoff_ms),
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

fn parse<T: std::str::FromStr>(name: &str, raw: &str) -> Result<T, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{name}: not a number: {raw:?}"))
}

/// Exponential backoff with jitter: the n-th consecutive failure waits a random time in
/// `[d/2, d]` with `d = min(max, initial * 2^(n-1))`. Jitter keeps endpoints that failed
/// together (one receiver host down) from retrying in lockstep; the lower half bound keeps the
/// growth real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay ceiling of the first retry.
    pub initial: Duration,
    /// Delay ceiling of every retry.
    pub max: Duration,
}

impl Backoff {
    /// The un-jittered ceiling after `failures` consecutive failures (>= 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(32);
        let factor = 1u64 << exp;
        let millis = u64::try_from(self.initial.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(factor);
        Duration::from_millis(millis).min(self.max)
    }

    /// A jittered delay for `failures` consecutive failures.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(failures);
        let low = ceiling / 2;
        if ceiling <= low {
            return ceiling;
        }
        rng.gen_range(low..=ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(2_000),
        };
        let mut rng = rand::thread_rng();
        let mut previous_ceiling = Duration::ZERO;
        for failures in 1..=40 {
            let ceiling = b.ceiling(failures);
            assert!(ceiling >= previous_ceiling, "ceiling must not shrink");
            assert!(ceiling <= b.max);
            previous_ceiling = ceiling;
            for _ in 0..200 {
                let d = b.delay(failures, &mut rng);
                assert!(d <= ceiling, "{d:?} above {ceiling:?}");
                assert!(d >= ceiling / 2, "{d:?} below half of {ceiling:?}");
            }
        }
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(400));
        assert_eq!(b.ceiling(40), b.max);
    }

    #[test]
    fn jitter_actually_varies() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let mut rng = rand::thread_rng();
        let samples: std::collections::HashSet<_> = (0..50).map(|_| b.delay(4, &mut rng)).collect();
        assert!(samples.len() > 1, "50 jittered delays were all equal");
    }

    #[test]
    fn env_overrides_are_applied_and_checked() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut c = DeliveryConfig::default();
        c.apply_vars(vars(&[
            ("IDBRIDGE_WEBHOOKS_MAX_BACKOFF_MS", "2500"),
            ("IDBRIDGE_WEBHOOKS_INITIAL_BACKOFF_MS", " 50 "),
            ("IDBRIDGE_WEBHOOKS_BATCH_SIZE", "7"),
            ("PATH", "/bin"),
        ]))
        .expect("valid overrides");
        assert_eq!(c.max_backoff_ms, 2500);
        assert_eq!(c.initial_backoff_ms, 50);
        assert_eq!(c.batch_size, 7);
        assert_eq!(c.apply_env_var("IDBRIDGE_LISTEN", "x"), Ok(false));
        let mut bad = DeliveryConfig::default();
        assert!(bad
            .apply_vars(vars(&[("IDBRIDGE_WEBHOOKS_BATCH_SIZE", "many")]))
            .is_err());
        let mut inverted = DeliveryConfig::default();
        assert!(inverted
            .apply_vars(vars(&[("IDBRIDGE_WEBHOOKS_MAX_BACKOFF_MS", "10")]))
            .is_err());
    }
}
