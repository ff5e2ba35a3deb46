//! Per-object exponential backoff with jitter for transient errors: one failing object retries
//! ever more slowly without slowing the others, and a success resets it.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use rand::Rng;

pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(300))
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, failures: Mutex::new(HashMap::new()) }
    }

    /// Records a failure of `key` and returns how long to wait before retrying it:
    /// `base · 2^(n-1)` capped at `max`, with up to ±25 % jitter so retries do not line up.
    pub fn next_delay(&self, key: &str) -> Duration {
        let n = {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = f.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let exp = self.base.saturating_mul(1u32 << (n - 1).min(20));
        let capped = exp.min(self.max);
        let jitter = rand::rng().random_range(0.75..=1.25);
        capped.mul_f64(jitter).min(self.max)
    }

    /// Whether `key` failed since its last success.
    pub fn is_failing(&self, key: &str) -> bool {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).contains_key(key)
    }

    /// Forgets the failures of `key` (it reconciled successfully).
    pub fn reset(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_per_object_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d1 = b.next_delay("a");
        let d2 = b.next_delay("a");
        let d3 = b.next_delay("a");
        assert!(d1 >= Duration::from_millis(750) && d1 <= Duration::from_millis(1250), "{d1:?}");
        assert!(d2 >= Duration::from_millis(1500) && d2 <= Duration::from_millis(2500), "{d2:?}");
        assert!(d3 >= Duration::from_secs(3) && d3 <= Duration::from_secs(5), "{d3:?}");
        // Another object is not slowed by "a".
        assert!(b.next_delay("b") <= Duration::from_millis(1250));
        assert!(b.is_failing("a"));
        b.reset("a");
        assert!(!b.is_failing("a"));
        assert!(b.next_delay("a") <= Duration::from_millis(1250));
    }

    #[test]
    fn is_capped() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..40 {
            assert!(b.next_delay("x") <= Duration::from_secs(10));
        }
    }
}
