//! How the readers react to Kinesis errors, and how long they back off: pure functions.

use std::time::Duration;

/// What a failed Kinesis call means for a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Over the shard's or the account's limits: back off and retry.
    Throttled,
    /// The shard iterator is older than five minutes: get a new one and go on.
    ExpiredIterator,
    /// The stream, shard or consumer does not exist (yet, or any more): report and retry.
    NotFound,
    /// A subscription to the shard is already open (enhanced fan-out): back off and retry.
    InUse,
    /// The credentials or the policy do not allow the call: report and retry (a fixed policy
    /// takes effect without a restart).
    Denied,
    /// Anything else (network, 5xx, timeouts): back off and retry.
    Transient,
}

/// Classifies an AWS error code (`ProvideErrorMetadata::code`).
pub fn classify(code: Option<&str>) -> ErrorClass {
    match code {
        Some(
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "KMSThrottlingException"
            | "RequestLimitExceeded",
        ) => ErrorClass::Throttled,
        Some("ExpiredIteratorException") => ErrorClass::ExpiredIterator,
        Some("ResourceNotFoundException") => ErrorClass::NotFound,
        Some("ResourceInUseException") => ErrorClass::InUse,
        Some(
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "KMSAccessDeniedException",
        ) => ErrorClass::Denied,
        _ => ErrorClass::Transient,
    }
}

/// Exponential backoff with "equal jitter": the delay of retry `attempt` (0-based) is half of
/// `min(cap, base * 2^attempt)` plus a random part of the other half (`jitter` in `[0, 1)`), so
/// replicas throttled together spread out while every retry still waits a little.
pub fn backoff_delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.min(30)));
    let ceiling = exp.min(cap);
    let half = ceiling / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Backoff state of one reader: grows on consecutive failures, resets on success.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay (and count one more failure).
    pub fn next_delay(&mut self) -> Duration {
        let d = backoff_delay(self.attempt, self.base, self.cap, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            classify(Some("ProvisionedThroughputExceededException")),
            ErrorClass::Throttled
        );
        assert_eq!(
            classify(Some("LimitExceededException")),
            ErrorClass::Throttled
        );
        assert_eq!(
            classify(Some("ExpiredIteratorException")),
            ErrorClass::ExpiredIterator
        );
        assert_eq!(
            classify(Some("ResourceNotFoundException")),
            ErrorClass::NotFound
        );
        assert_eq!(classify(Some("ResourceInUseException")), ErrorClass::InUse);
        assert_eq!(classify(Some("InternalFailure")), ErrorClass::Transient);
        assert_eq!(classify(None), ErrorClass::Transient);
    }

    #[test]
    fn backoff_grows_to_the_cap_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        assert_eq!(backoff_delay(0, base, cap, 0.0), Duration::from_millis(50));
        assert_eq!(backoff_delay(0, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(3, base, cap, 0.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(3, base, cap, 0.5), Duration::from_millis(600));
        assert_eq!(backoff_delay(20, base, cap, 0.0), Duration::from_secs(5));
        assert_eq!(backoff_delay(u32::MAX, base, cap, 1.0), cap);
        // Out-of-range jitter is clamped.
        assert_eq!(backoff_delay(0, base, cap, 7.0), Duration::from_millis(100));
    }

    #[test]
    fn backoff_state_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
