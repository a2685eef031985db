//! When to restart a failed service, and when the state is hopeless (reboot instead).

use std::time::Duration;

/// First restart delay; doubled after each quick failure.
pub const RESTART_BACKOFF_MIN_MS: u64 = 1_000;
pub const RESTART_BACKOFF_MAX_MS: u64 = 30_000;
/// A service that ran at least this long before failing starts the backoff over.
pub const RESTART_HEALTHY_RUN_MS: u64 = 60_000;
/// Quick failures in a row after which PID 1 gives up and reboots.
pub const RESTART_FAILURES_MAX: u32 = 6;

const _: () = assert!(RESTART_BACKOFF_MIN_MS <= RESTART_BACKOFF_MAX_MS);
const _: () = assert!(RESTART_BACKOFF_MAX_MS < RESTART_HEALTHY_RUN_MS);

/// What to do after the service exited unexpectedly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RestartAfter(Duration),
    Reboot,
}

/// Counts quick failures of the service.
#[derive(Debug, Clone, Default)]
pub struct RestartPolicy {
    failures: u32,
}

impl RestartPolicy {
    /// The service exited after running for `ran`.
    pub fn on_exit(&mut self, ran: Duration) -> Decision {
        if ran >= Duration::from_millis(RESTART_HEALTHY_RUN_MS) {
            self.failures = 0;
        }
        self.failures += 1;
        if self.failures > RESTART_FAILURES_MAX {
            return Decision::Reboot;
        }
        let backoff_ms = RESTART_BACKOFF_MIN_MS.saturating_mul(1 << (self.failures - 1).min(16));
        Decision::RestartAfter(Duration::from_millis(
            backoff_ms.min(RESTART_BACKOFF_MAX_MS),
        ))
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_failures_back_off_then_reboot() {
        let mut policy = RestartPolicy::default();
        let quick = Duration::from_millis(10);
        let delays: Vec<Decision> = (0..RESTART_FAILURES_MAX)
            .map(|_| policy.on_exit(quick))
            .collect();
        assert_eq!(
            delays[0],
            Decision::RestartAfter(Duration::from_millis(1_000))
        );
        assert_eq!(
            delays[1],
            Decision::RestartAfter(Duration::from_millis(2_000))
        );
        assert_eq!(
            delays[5],
            Decision::RestartAfter(Duration::from_millis(RESTART_BACKOFF_MAX_MS))
        );
        assert_eq!(policy.on_exit(quick), Decision::Reboot);
    }

    #[test]
    fn a_long_healthy_run_resets_the_count() {
        let mut policy = RestartPolicy::default();
        for _ in 0..RESTART_FAILURES_MAX {
            policy.on_exit(Duration::from_millis(5));
        }
        let decision = policy.on_exit(Duration::from_millis(RESTART_HEALTHY_RUN_MS));
        assert_eq!(
            decision,
            Decision::RestartAfter(Duration::from_millis(RESTART_BACKOFF_MIN_MS))
        );
        assert_eq!(policy.failures(), 1);
    }
}
