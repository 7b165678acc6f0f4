//! Reconnect back-off: exponential with jitter, so a controller restart does
//! not bring thousands of agents back in the same second.
//!
//! "Equal jitter" (half the delay fixed, half random): unlike full jitter it
//! never retries immediately, and it still spreads a herd over half the
//! window. The random draw is an argument so the schedule is testable.

use std::time::Duration;

/// Back-off state for one peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Delay before the next attempt; `unit` is a random draw in [0, 1).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// After a successful session: start again from the base delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let lows: Vec<u128> = (0..10).map(|_| b.next_delay(0.0).as_millis()).collect();
        assert_eq!(
            lows,
            [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000]
        );
        b.reset();
        assert_eq!(b.next_delay(0.999_999).as_millis(), 499);
        for _ in 0..100 {
            assert!(b.next_delay(1.0) <= Duration::from_secs(30));
        }
    }

    #[test]
    fn jitter_spreads_a_herd() {
        // 1,000 agents at their 5th attempt land over half the window.
        let delays: Vec<Duration> = (0..1000)
            .map(|i| {
                let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
                for _ in 0..4 {
                    b.next_delay(0.5);
                }
                b.next_delay(f64::from(i) / 1000.0)
            })
            .collect();
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(
            *max - *min >= Duration::from_millis(3900),
            "{min:?}..{max:?}"
        );
    }
}
