//! Restart back-off like the kubelet's: the first restart is immediate, then 10s, 20s, 40s, ...
//! capped at 5 minutes; a container that ran for longer than twice the cap without failing
//! starts over from zero.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before the next start, given how many restarts happened since the last reset.
    pub fn delay(&self, restarts_since_reset: u32) -> Duration {
        if restarts_since_reset == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (restarts_since_reset - 1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Whether a run this long resets the back-off.
    pub fn resets(&self, ran_for: Duration) -> bool {
        ran_for > self.max.saturating_mul(2)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..8).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
        assert!(!b.resets(Duration::from_secs(600)));
        assert!(b.resets(Duration::from_secs(601)));
    }
}
