//! When to try a failed BMC call again: pure, so the schedule is tested without clocks.
//!
//! Transient failures (unreachable, no answer, the BMC's own 5xx, a garbled answer) are
//! retried with exponential back-off up to a bounded number of attempts; failures that
//! another try cannot fix (wrong credentials, an operation the BMC lacks, a certificate
//! that does not verify) fail the node at once, with the driver's message saying what
//! to fix.

use std::time::Duration;

use crate::bmc::BmcError;

/// How a failed BMC call is retried (site.yaml `lifecycle.bmc_retries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub base: Duration,
    /// The longest delay between two attempts.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        }
    }
}

/// What to do after attempt number `attempts` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop: the node fails with this reason.
    GiveUp(String),
}

/// Whether another attempt may succeed where this one failed.
pub(crate) fn is_transient(err: &BmcError) -> bool {
    match err {
        BmcError::Unreachable { .. } | BmcError::Timeout { .. } | BmcError::Protocol { .. } => true,
        // The BMC's own 5xx ("busy", "internal error") is worth another try; 4xx says
        // the request itself is wrong.
        BmcError::Refused { code, .. } => code
            .strip_prefix("HTTP ")
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (500..600).contains(&c) || c == 409 || c == 429),
        BmcError::Credential { .. }
        | BmcError::Auth { .. }
        | BmcError::Tls { .. }
        | BmcError::NotSupported { .. }
        | BmcError::AmbiguousSystem { .. } => false,
    }
}

/// Decides after a failure; `attempts` counts the attempts made so far (>= 1).
pub(crate) fn after_failure(policy: &RetryPolicy, attempts: u32, err: &BmcError) -> Verdict {
    if !is_transient(err) {
        return Verdict::GiveUp(format!("BMC call failed: {err}"));
    }
    if attempts >= policy.max_attempts.max(1) {
        return Verdict::GiveUp(format!("BMC call failed {attempts} times, the last: {err}"));
    }
    let exp = attempts.saturating_sub(1).min(20);
    let delay = policy.base.saturating_mul(1u32 << exp).min(policy.cap);
    Verdict::RetryAfter(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> BmcError {
        BmcError::Unreachable {
            bmc: "redfish://10.0.0.9".into(),
            detail: "connection refused".into(),
        }
    }

    fn refused(code: &str) -> BmcError {
        BmcError::Refused {
            bmc: "redfish://10.0.0.9".into(),
            what: "power on".into(),
            code: code.into(),
            message: "busy".into(),
        }
    }

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
        };
        let delays: Vec<_> = (1..8)
            .map(|n| match after_failure(&policy, n, &unreachable()) {
                Verdict::RetryAfter(d) => d.as_secs(),
                Verdict::GiveUp(r) => panic!("gave up at attempt {n}: {r}"),
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10, 10]);
        match after_failure(&policy, 8, &unreachable()) {
            Verdict::GiveUp(reason) => {
                assert!(reason.contains("8 times"), "{reason}");
                assert!(reason.contains("connection refused"), "{reason}");
            }
            other => panic!("expected to give up, got {other:?}"),
        }
    }

    #[test]
    fn server_errors_are_retried_and_client_errors_are_not() {
        let policy = RetryPolicy::default();
        assert!(matches!(
            after_failure(&policy, 1, &refused("HTTP 500")),
            Verdict::RetryAfter(_)
        ));
        assert!(matches!(
            after_failure(&policy, 1, &refused("HTTP 503")),
            Verdict::RetryAfter(_)
        ));
        assert!(matches!(
            after_failure(&policy, 1, &refused("HTTP 400")),
            Verdict::GiveUp(_)
        ));
        // IPMI completion codes are the BMC's considered answer.
        assert!(matches!(
            after_failure(&policy, 1, &refused("completion code 0xd4")),
            Verdict::GiveUp(_)
        ));
    }

    #[test]
    fn wrong_credentials_fail_at_once_with_the_drivers_advice() {
        let err = BmcError::Auth {
            bmc: "redfish://10.0.0.9".into(),
            detail: "HTTP 401".into(),
        };
        match after_failure(&RetryPolicy::default(), 1, &err) {
            Verdict::GiveUp(reason) => assert!(reason.contains("check the user name"), "{reason}"),
            other => panic!("expected to give up, got {other:?}"),
        }
    }

    #[test]
    fn a_policy_of_zero_attempts_still_makes_one() {
        let policy = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(matches!(
            after_failure(&policy, 1, &unreachable()),
            Verdict::GiveUp(_)
        ));
    }
}
