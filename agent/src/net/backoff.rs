//! Exponential back-off for retries: 1 s, 2 s, 4 s, ... up to a cap, and
//! back to the start after a success. Pure and deterministic (no jitter:
//! one agent per machine, and the provisioner copes with a burst).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            next: first,
            failures: 0,
        }
    }

    /// The pause before the next attempt after one more failure.
    pub fn fail(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Failures in a row since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30));
        let delays: Vec<u64> = (0..7).map(|_| b.fail().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!((b.fail(), b.failures()), (s(1), 1));
    }
}
