//! The deadline helper for the few states that raise no event: re-check a condition at an
//! interval until it holds or a timeout passes (a sysfs link after a synchronous store, a device
//! node after its driver loaded, a child process's exit).

use std::convert::Infallible;
use std::time::{Duration, Instant};

/// Re-checks `condition` every `interval` until it gives a value or `timeout` passes; `None` at
/// the deadline. The condition is checked at least once, and once more at the deadline.
pub fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> Option<T>,
) -> Option<T> {
    let never_fails = || Ok::<_, Infallible>(condition());
    match try_wait_until(timeout, interval, never_fails) {
        Ok(found) => found,
        Err(never) => match never {},
    }
}

/// [`wait_until`] for a condition that can fail: the first error ends the wait and is returned.
pub fn try_wait_until<T, E>(
    timeout: Duration,
    interval: Duration,
    mut condition: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition()? {
            return Ok(Some(value));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(1);

    #[test]
    fn gives_the_value_once_the_condition_holds() {
        let mut checks = 0;
        let found = wait_until(Duration::from_secs(10), INTERVAL, || {
            checks += 1;
            (checks == 3).then_some(checks)
        });
        assert_eq!(found, Some(3), "the third check holds");
    }

    #[test]
    fn gives_none_at_the_deadline_after_checking_at_least_once() {
        let mut checks = 0;
        let start = Instant::now();
        let found: Option<()> = wait_until(Duration::ZERO, INTERVAL, || {
            checks += 1;
            None
        });
        assert_eq!(
            (found, checks),
            (None, 1),
            "a zero timeout still checks once"
        );
        let timeout = Duration::from_millis(30);
        assert_eq!(wait_until(timeout, INTERVAL, || None::<()>), None);
        assert!(
            start.elapsed() >= timeout,
            "gave up after {:?}, before the {timeout:?} deadline",
            start.elapsed()
        );
    }

    #[test]
    fn the_first_error_ends_the_wait() {
        let mut checks = 0;
        let result: Result<Option<()>, String> =
            try_wait_until(Duration::from_secs(10), INTERVAL, || {
                checks += 1;
                match checks {
                    1 => Ok(None),
                    n => Err(format!("check {n} failed")),
                }
            });
        assert_eq!(result, Err("check 2 failed".to_string()));
    }
}
